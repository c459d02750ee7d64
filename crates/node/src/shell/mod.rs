//! The node around the region core: everything that touches a socket, a disk
//! or a clock. Built only with the `shell` feature.

pub(crate) mod ai;
pub(crate) mod app;
pub(crate) mod auth;
pub(crate) mod certs;
pub(crate) mod config;
pub(crate) mod curated;
pub(crate) mod dev;
pub(crate) mod engine;
pub(crate) mod front;
pub(crate) mod generator;
pub(crate) mod history;
pub(crate) mod http;
pub(crate) mod images;
pub(crate) mod jobs;
pub(crate) mod keys;
pub(crate) mod limits;
pub(crate) mod linger;
pub(crate) mod listener;
pub(crate) mod log_lines;
pub(crate) mod metrics;
pub(crate) mod notify;
pub(crate) mod openai;
pub(crate) mod openapi;
pub(crate) mod pending;
pub(crate) mod premium;
pub(crate) mod problem;
pub(crate) mod query;
pub(crate) mod rfc3339;
pub(crate) mod server;
pub(crate) mod statements;
pub(crate) mod store;
pub(crate) mod transport;
pub(crate) mod verified;
pub(crate) mod wal;
pub(crate) mod webhook;
