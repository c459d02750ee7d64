//! Parts the load benchmarks share. Each bench uses some of them, hence the
//! `dead_code` allowance.
//!
//! # Layout
//!
//! - [`load`]: the open-loop generator (schedules, lanes, outcomes, histograms).
//! - [`servers`]: starting the processes under load and reading their usage,
//!   their counters, and their own view of a spend's latency.
//! - [`disk`]: the durable-write floor: `fdatasync` alone, before or
//!   after a run, and a probe timed from when each sync was due beside one.
//! - [`seed`]: the seed design (axum + Redis script), our baseline.
//! - [`delay`]: a TCP proxy that adds cross-region latency, and the probe
//!   for kernel delay (`tc netem`) that says why the proxies are used.

#![allow(dead_code, unreachable_pub)]

pub mod delay;
pub mod disk;
pub mod load;
pub mod seed;
pub mod servers;

/// If this process was started to play a server (the hello ceiling or the seed
/// design), plays it until killed and returns `true`.
pub fn serve_role_if_asked() -> bool {
    if let Ok(addr) = std::env::var(servers::HELLO_ROLE) {
        servers::hello_server(&addr);
        return true;
    }
    if let (Ok(addr), Ok(redis)) = (
        std::env::var(seed::SEED_ROLE),
        std::env::var(seed::REDIS_ENV),
    ) {
        let grant = std::env::var(seed::GRANT_ENV)
            .ok()
            .and_then(|g| g.parse().ok())
            .unwrap_or(1_000_000_000);
        seed::seed_server(&addr, &redis, grant);
        return true;
    }
    false
}

/// A number from the environment, or `default`.
pub fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}
