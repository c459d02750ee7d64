//! Prometheus metrics, through the `metrics` facade and its Prometheus
//! exporter: every family once, with `# HELP` and `# TYPE`, as `promtool check
//! metrics` wants. Names are the ones this node always exported.
//!
//! Counters and histograms are recorded where things happen; the gauges that
//! describe a state (members up, replication lag, the AI queue, open holds) are
//! set from that state when `GET /metrics` renders.

use crate::ClusterView;
use crate::hashing::Map;
use metrics::{
    Counter, Histogram, Unit, counter, describe_counter, describe_gauge, describe_histogram, gauge,
    histogram,
};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use std::sync::RwLock;
use std::time::Duration;

/// Histogram bucket bounds, in seconds. 0.2 is the seeds' SLA (p95 under
/// 200 ms), which the alert rules in `deploy/prometheus/` read off `le="0.2"`.
const BUCKETS: [f64; 13] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.25, 0.5, 1.0, 2.5,
];

/// The node's metrics: a handle on the process's Prometheus recorder.
pub(crate) struct Metrics {
    /// `None` where a recorder was already installed in this process (a
    /// second node in a test binary); then `/metrics` says so.
    handle: Option<PrometheusHandle>,
    /// Each route's latency histogram per status, registered once: a
    /// registration builds and hashes an owned key, which every request paid
    /// before. Bounded by the router's route templates (plus `unmatched`)
    /// times the statuses the API answers.
    requests: RwLock<Map<String, Map<u16, Histogram>>>,
    /// The families every spend or flush records, registered once for the
    /// same reason.
    spends: Counter,
    credits: Counter,
    flushes: Histogram,
}

/// Gauges of the AI path, read when metrics are rendered.
pub(crate) struct AiGauges {
    /// Jobs waiting for a worker.
    pub queue_depth: usize,
    /// Holds open in this region, and the tokens they hold.
    pub open_holds: usize,
    pub held_tokens: u64,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::install()
    }
}

impl Metrics {
    /// Installs the process's Prometheus recorder and describes every family.
    pub(crate) fn install() -> Self {
        let handle = PrometheusBuilder::new()
            .set_buckets(&BUCKETS)
            .and_then(PrometheusBuilder::install_recorder);
        let handle = match handle {
            Ok(handle) => Some(handle),
            Err(e) => {
                tracing::warn!(error = %e, "no Prometheus recorder; /metrics will be empty");
                None
            }
        };
        describe();
        Self {
            handle,
            requests: RwLock::default(),
            spends: counter!("maas_spends_total"),
            credits: counter!("maas_credits_total"),
            flushes: histogram!("maas_storage_flush_duration_seconds"),
        }
    }

    /// Records one request's route, status and latency.
    pub(crate) fn observe_request(&self, route: &str, status: u16, latency: Duration) {
        let known = self
            .requests
            .read()
            .ok()
            .and_then(|known| known.get(route)?.get(&status).cloned());
        let histogram = known.unwrap_or_else(|| {
            let histogram = histogram!(
                "maas_http_request_duration_seconds",
                "route" => route.to_owned(),
                "status" => status.to_string()
            );
            if let Ok(mut known) = self.requests.write() {
                known
                    .entry(route.to_owned())
                    .or_default()
                    .insert(status, histogram.clone());
            }
            histogram
        });
        histogram.record(latency.as_secs_f64());
    }

    /// Records one group-commit flush.
    pub(crate) fn observe_flush(&self, latency: Duration) {
        self.flushes.record(latency.as_secs_f64());
    }

    /// Counts an acknowledged spend.
    pub(crate) fn spend(&self) {
        self.spends.increment(1);
    }

    /// Counts an acknowledged credit.
    pub(crate) fn credit(&self) {
        self.credits.increment(1);
    }

    /// Counts a refusal, by reason.
    pub(crate) fn refusal(&self, reason: &'static str) {
        counter!("maas_refusals_total", "reason" => reason).increment(1);
    }

    /// Counts a message to a peer dropped (queue full, peer unreachable).
    pub(crate) fn peer_message_dropped(&self) {
        counter!("maas_peer_messages_dropped_total").increment(1);
    }

    /// Counts the bytes of one message handed to a peer's connection, by
    /// kind ([`crate::Message::kind`], or `gossip` for membership).
    pub(crate) fn peer_bytes_sent(&self, kind: &'static str, bytes: usize) {
        counter!("maas_peer_bytes_sent_total", "kind" => kind).increment(bytes as u64);
    }

    /// Counts an AI job that ended (`done`, `failed`) or was turned away (`busy`).
    pub(crate) fn ai_job(&self, outcome: &'static str) {
        counter!("maas_ai_jobs_total", "outcome" => outcome).increment(1);
    }

    /// Counts an AI meme the embedded generator made because the configured
    /// server failed, by why.
    pub(crate) fn ai_fallback(&self, reason: &'static str) {
        counter!("maas_ai_fallbacks_total", "reason" => reason).increment(1);
    }

    /// Counts a low-balance notification delivered or failed (a failed one
    /// is retried).
    pub(crate) fn notification(&self, outcome: &'static str) {
        counter!("maas_notifications_total", "outcome" => outcome).increment(1);
    }

    /// Records how long one image took to render.
    pub(crate) fn observe_render(&self, took: Duration) {
        histogram!("maas_image_render_seconds").record(took.as_secs_f64());
    }

    /// Records the cap on HTTP connections served at once (set once, at start).
    pub(crate) fn connection_cap(&self, cap: usize) {
        gauge!("maas_http_connections_max").set(cap as f64);
    }

    /// The Prometheus text exposition, after setting the state gauges from
    /// `cluster`, `ai` and the HTTP connections `open` now.
    pub(crate) fn render(&self, cluster: &ClusterView, ai: &AiGauges, open: usize) -> String {
        set_cluster(cluster);
        gauge!("maas_http_connections_open").set(open as f64);
        gauge!("maas_ai_queue_depth").set(ai.queue_depth as f64);
        gauge!("maas_holds_open").set(ai.open_holds as f64);
        gauge!("maas_held_tokens").set(ai.held_tokens as f64);
        match &self.handle {
            Some(handle) => handle.render(),
            None => String::new(),
        }
    }
}

fn set_cluster(view: &ClusterView) {
    for (region, m) in &view.members {
        gauge!("maas_cluster_member_up", "region" => region.0.to_string())
            .set(f64::from(u8::from(m.up)));
    }
    for (region, lag) in &view.lag {
        let peer = region.0.to_string();
        gauge!("maas_replication_lag_entries", "peer" => peer.clone()).set(lag.entries as f64);
        gauge!("maas_replication_lag_seconds", "peer" => peer).set(lag.ms as f64 / 1000.0);
    }
    counter!("maas_rights_transfers_total").absolute(view.escrow.transfers);
    counter!("maas_rights_tokens_moved_total").absolute(view.escrow.tokens_moved);
    counter!("maas_rights_requests_total").absolute(view.escrow.rights_requests);
    counter!("maas_rights_waits_total").absolute(view.escrow.rights_waits);
    gauge!("maas_rights_waiting").set(view.waiting_for_rights as f64);
}

fn describe() {
    describe_histogram!(
        "maas_http_request_duration_seconds",
        Unit::Seconds,
        "HTTP requests by route and status, from head to answer"
    );
    describe_histogram!(
        "maas_storage_flush_duration_seconds",
        Unit::Seconds,
        "Group commits: one write-ahead log record and fdatasync each"
    );
    describe_counter!("maas_spends_total", "Spends acknowledged (durable)");
    describe_counter!("maas_credits_total", "Credits acknowledged (durable)");
    describe_counter!("maas_refusals_total", "Requests refused, by reason");
    describe_counter!(
        "maas_peer_messages_dropped_total",
        "Messages to peers dropped (queue full, peer unreachable)"
    );
    describe_counter!(
        "maas_peer_bytes_sent_total",
        Unit::Bytes,
        "Bytes of messages sent to peers, by kind (before QUIC's framing and encryption)"
    );
    describe_counter!(
        "maas_ai_jobs_total",
        "AI meme jobs by outcome: done, failed, busy"
    );
    describe_counter!(
        "maas_ai_fallbacks_total",
        "AI memes the embedded generator made because the AI server failed, by reason"
    );
    describe_histogram!(
        "maas_image_render_seconds",
        Unit::Seconds,
        "Time to draw and encode one meme image"
    );
    describe_gauge!("maas_ai_queue_depth", "AI jobs waiting for a worker");
    describe_gauge!(
        "maas_http_connections_open",
        "HTTP connections being served now"
    );
    describe_gauge!(
        "maas_http_connections_max",
        "HTTP connections served at once at most (--max-connections, lowered to fit the open-file limit); past it, 503"
    );
    describe_counter!(
        "maas_notifications_total",
        "Low-balance notifications delivered, or attempts that failed (and are retried)"
    );
    describe_gauge!("maas_holds_open", "Holds open in this region");
    describe_gauge!(
        "maas_held_tokens",
        "Tokens held by open holds in this region"
    );
    describe_gauge!(
        "maas_cluster_member_up",
        "1 if the member region is up, by region"
    );
    describe_gauge!(
        "maas_replication_lag_entries",
        "Our durable writes a peer has not confirmed, by peer"
    );
    describe_gauge!(
        "maas_replication_lag_seconds",
        Unit::Seconds,
        "Age of the oldest write a peer has not confirmed, by peer"
    );
    describe_counter!(
        "maas_rights_transfers_total",
        "Rights transfers sent to other regions"
    );
    describe_counter!(
        "maas_rights_tokens_moved_total",
        "Tokens' rights moved to other regions"
    );
    describe_counter!(
        "maas_rights_requests_total",
        "Rights requests sent to other regions"
    );
    describe_counter!(
        "maas_rights_waits_total",
        "Spends held to wait for rights from another region (again if those that came were not enough)"
    );
    describe_gauge!(
        "maas_rights_waiting",
        "Spends waiting for rights from another region now"
    );
}
