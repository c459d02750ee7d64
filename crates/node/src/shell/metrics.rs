//! Prometheus metrics, rendered as text by `GET /metrics`.

use crate::ClusterView;
use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Histogram bucket bounds, in seconds.
const BUCKETS: [f64; 12] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];

#[derive(Clone, Debug, Default)]
struct Histogram {
    counts: [u64; BUCKETS.len()],
    count: u64,
    sum: f64,
}

impl Histogram {
    fn observe(&mut self, d: Duration) {
        let secs = d.as_secs_f64();
        for (i, &bound) in BUCKETS.iter().enumerate() {
            if secs <= bound {
                self.counts[i] += 1;
            }
        }
        self.count += 1;
        self.sum += secs;
    }

    fn render(&self, out: &mut String, name: &str, labels: &str) {
        let sep = if labels.is_empty() { "" } else { "," };
        for (i, bound) in BUCKETS.iter().enumerate() {
            let _ = writeln!(
                out,
                "{name}_bucket{{{labels}{sep}le=\"{bound}\"}} {}",
                self.counts[i]
            );
        }
        let _ = writeln!(
            out,
            "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {}",
            self.count
        );
        let braced = if labels.is_empty() {
            String::new()
        } else {
            format!("{{{labels}}}")
        };
        let _ = writeln!(out, "{name}_sum{braced} {}", self.sum);
        let _ = writeln!(out, "{name}_count{braced} {}", self.count);
    }
}

/// The node's counters and histograms.
#[derive(Debug, Default)]
pub(crate) struct Metrics {
    requests: Mutex<BTreeMap<(String, u16), Histogram>>,
    refusals: Mutex<BTreeMap<&'static str, u64>>,
    flush: Mutex<Histogram>,
    spends: AtomicU64,
    credits: AtomicU64,
    peer_drops: AtomicU64,
    ai_jobs: Mutex<BTreeMap<&'static str, u64>>,
    ai_fallbacks: Mutex<BTreeMap<&'static str, u64>>,
    render: Mutex<Histogram>,
}

/// Gauges of the AI path, read when metrics are rendered.
pub(crate) struct AiGauges {
    /// Jobs waiting for a worker.
    pub queue_depth: usize,
    /// Holds open in this region, and the tokens they hold.
    pub open_holds: usize,
    pub held_tokens: u64,
}

impl Metrics {
    /// Records one request's route, status and latency.
    pub(crate) fn observe_request(&self, route: &str, status: u16, latency: Duration) {
        if let Ok(mut map) = self.requests.lock() {
            map.entry((route.to_owned(), status))
                .or_default()
                .observe(latency);
        }
    }

    /// Records one group-commit flush.
    pub(crate) fn observe_flush(&self, latency: Duration) {
        if let Ok(mut h) = self.flush.lock() {
            h.observe(latency);
        }
    }

    /// Counts an acknowledged spend.
    pub(crate) fn spend(&self) {
        self.spends.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts an acknowledged credit.
    pub(crate) fn credit(&self) {
        self.credits.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a refusal, by reason.
    pub(crate) fn refusal(&self, reason: &'static str) {
        if let Ok(mut map) = self.refusals.lock() {
            *map.entry(reason).or_default() += 1;
        }
    }

    /// Counts a message to a peer dropped (queue full, peer unreachable).
    pub(crate) fn peer_message_dropped(&self) {
        self.peer_drops.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts an AI job that ended (`done`, `failed`) or was turned away (`busy`).
    pub(crate) fn ai_job(&self, outcome: &'static str) {
        if let Ok(mut map) = self.ai_jobs.lock() {
            *map.entry(outcome).or_default() += 1;
        }
    }

    /// Counts an AI meme the embedded generator made because the configured
    /// server failed, by why.
    pub(crate) fn ai_fallback(&self, reason: &'static str) {
        if let Ok(mut map) = self.ai_fallbacks.lock() {
            *map.entry(reason).or_default() += 1;
        }
    }

    /// Records how long one image took to render.
    pub(crate) fn observe_render(&self, took: Duration) {
        if let Ok(mut h) = self.render.lock() {
            h.observe(took);
        }
    }

    /// Appends the AI path's metrics.
    pub(crate) fn render_ai(&self, gauges: &AiGauges, out: &mut String) {
        out.push_str("# TYPE maas_ai_jobs_total counter\n");
        if let Ok(map) = self.ai_jobs.lock() {
            for (outcome, n) in map.iter() {
                let _ = writeln!(out, "maas_ai_jobs_total{{outcome=\"{outcome}\"}} {n}");
            }
        }
        out.push_str("# TYPE maas_ai_fallbacks_total counter\n");
        if let Ok(map) = self.ai_fallbacks.lock() {
            for (reason, n) in map.iter() {
                let _ = writeln!(out, "maas_ai_fallbacks_total{{reason=\"{reason}\"}} {n}");
            }
        }
        let _ = writeln!(
            out,
            "# TYPE maas_ai_queue_depth gauge\nmaas_ai_queue_depth {}\n\
             # TYPE maas_holds_open gauge\nmaas_holds_open {}\n\
             # TYPE maas_held_tokens gauge\nmaas_held_tokens {}",
            gauges.queue_depth, gauges.open_holds, gauges.held_tokens
        );
        out.push_str("# TYPE maas_image_render_seconds histogram\n");
        if let Ok(h) = self.render.lock() {
            h.render(out, "maas_image_render_seconds", "");
        }
    }

    /// The Prometheus text exposition.
    pub(crate) fn render(&self) -> String {
        let mut out = String::new();
        out.push_str("# TYPE maas_http_request_duration_seconds histogram\n");
        if let Ok(map) = self.requests.lock() {
            for ((route, status), h) in map.iter() {
                let labels = format!("route=\"{route}\",status=\"{status}\"");
                h.render(&mut out, "maas_http_request_duration_seconds", &labels);
            }
        }
        counter(&mut out, "maas_spends_total", &self.spends);
        counter(&mut out, "maas_credits_total", &self.credits);
        out.push_str("# TYPE maas_refusals_total counter\n");
        if let Ok(map) = self.refusals.lock() {
            for (reason, n) in map.iter() {
                let _ = writeln!(out, "maas_refusals_total{{reason=\"{reason}\"}} {n}");
            }
        }
        counter(
            &mut out,
            "maas_peer_messages_dropped_total",
            &self.peer_drops,
        );
        out.push_str("# TYPE maas_storage_flush_duration_seconds histogram\n");
        if let Ok(h) = self.flush.lock() {
            h.render(&mut out, "maas_storage_flush_duration_seconds", "");
        }
        out
    }
}

fn counter(out: &mut String, name: &str, value: &AtomicU64) {
    let _ = writeln!(
        out,
        "# TYPE {name} counter\n{name} {}",
        value.load(Ordering::Relaxed)
    );
}

/// Appends the cluster's gauges (members up, replication lag per peer) and
/// escrow counters, from a [`ClusterView`], in Prometheus text.
pub(crate) fn render_cluster(view: &ClusterView, out: &mut String) {
    out.push_str("# TYPE maas_cluster_member_up gauge\n");
    for (region, m) in &view.members {
        let _ = writeln!(
            out,
            "maas_cluster_member_up{{region=\"{}\"}} {}",
            region.0,
            u8::from(m.up)
        );
    }
    out.push_str("# TYPE maas_replication_lag_entries gauge\n");
    out.push_str("# TYPE maas_replication_lag_seconds gauge\n");
    for (region, lag) in &view.lag {
        let peer = region.0;
        let _ = writeln!(
            out,
            "maas_replication_lag_entries{{peer=\"{peer}\"}} {}\nmaas_replication_lag_seconds{{peer=\"{peer}\"}} {}",
            lag.entries,
            lag.ms as f64 / 1000.0
        );
    }
    let escrow = [
        ("maas_rights_transfers_total", view.escrow.transfers),
        ("maas_rights_tokens_moved_total", view.escrow.tokens_moved),
        ("maas_rights_requests_total", view.escrow.rights_requests),
    ];
    for (name, value) in escrow {
        let _ = writeln!(out, "# TYPE {name} counter\n{name} {value}");
    }
}
