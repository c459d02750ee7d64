//! Memes: what drawing costs, and whether AI jobs move the ledger path.
//!
//! `cargo bench --bench memes` measures, in one run:
//! 1. the embedded renderer in this process, one thread: AI memes (the
//!    procedural generator's specs) and the catalog's curated memes per
//!    CPU-second, i.e. per core;
//! 2. one `maas` node under an open-loop spend load of standard users
//!    (`MAAS_BENCH_RATE`, 2,000 req/s), alternating phases *without* and *with*
//!    a concurrent open-loop load of AI memes from subscribers
//!    (`MAAS_BENCH_AI_RATE`, 40 req/s): the spends' p50/p99/max, throughput and
//!    the node's CPU per phase, so the ratio with/without is read within one run.
//!
//! `MAAS_BENCH_SMOKE=1` runs it tiny (CI runs that; it asserts no speed).

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};
use support::load::{Outcome, Request, Schedule, open_loop};
use support::servers::{OPERATOR, Server, jwt, process_usage};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const STANDARD_USERS: usize = 1_000;
const SUBSCRIBERS: usize = 50;

fn main() {
    if support::serve_role_if_asked() {
        return;
    }
    let smoke = std::env::var("MAAS_BENCH_SMOKE").is_ok();
    render_throughput(smoke);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    tokio::task::LocalSet::new().block_on(&rt, ledger_beside_ai(smoke));
}

/// CPU seconds this process has used so far.
fn own_cpu_secs() -> f64 {
    process_usage(std::process::id()).cpu_secs
}

fn render_throughput(smoke: bool) {
    let n = if smoke { 12 } else { 600 };
    let filter = maas_node::CaptionFilter::builtin();
    let queries = [
        "cats",
        "rust borrow checker",
        "monday",
        "pizza at 3 am",
        "exams",
    ];
    let locales = ["en-US", "en-AU", "de-DE", "fr-FR", "ja-JP"];
    let ai: Vec<_> = (0..n)
        .map(|i| maas_node::ai_spec(queries[i % 5], locales[i % 5], i as u64, &filter))
        .collect();
    let curated: Vec<_> = (0..n)
        .filter_map(|i| maas_node::curated_spec((i % 300) as u32 + 1))
        .collect();
    println!("## The embedded renderer (one thread, this process)\n");
    println!("| memes | rendered | CPU s | memes / CPU-second (per core) | mean PNG |");
    println!("|---|---|---|---|---|");
    for (name, specs) in [("AI (embedded generator)", &ai), ("curated", &curated)] {
        let (cpu0, wall0) = (own_cpu_secs(), Instant::now());
        let mut bytes = 0usize;
        for spec in specs.iter() {
            bytes += maas_node::render_png(spec).expect("renders").len();
        }
        // /proc counts in 10 ms ticks: fall back to wall time for tiny runs.
        let cpu = (own_cpu_secs() - cpu0).max(wall0.elapsed().as_secs_f64() * 0.5);
        println!(
            "| {name} | {} | {cpu:.2} | {:.0} | {} KiB |",
            specs.len(),
            specs.len() as f64 / cpu,
            bytes / specs.len().max(1) / 1024
        );
    }
    println!();
}

/// One whole request on a fresh connection; the status.
async fn send_raw(addr: &str, request: String) -> u16 {
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    stream.write_all(request.as_bytes()).await.expect("write");
    let mut raw = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut raw)).await;
    String::from_utf8_lossy(&raw)
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

fn memes_request(token: &str, query: &str, tag: usize) -> Request {
    Request {
        bytes: format!(
            "GET /memes?query={query} HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {token}\r\n\r\n"
        ),
        tag,
    }
}

struct Phase {
    with_ai: bool,
    spends: Outcome,
    ai: Option<Outcome>,
    node_cpu: f64,
    /// Spends sent in the phase, warm-up included (the CPU covers them all).
    spends_sent: usize,
}

async fn ledger_beside_ai(smoke: bool) {
    let rate: u64 = support::env_or("MAAS_BENCH_RATE", if smoke { 100 } else { 2_000 });
    let ai_rate: u64 = support::env_or("MAAS_BENCH_AI_RATE", if smoke { 5 } else { 40 });
    let (warmup, measure, cycles) = if smoke {
        (Duration::from_millis(300), Duration::from_secs(1), 1)
    } else {
        (Duration::from_secs(1), Duration::from_secs(4), 2)
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let node = Server::maas(dir.path(), &[]).await;
    let standard: Arc<Vec<String>> = Arc::new(
        (0..STANDARD_USERS)
            .map(|i| jwt(&format!("std-{i}")))
            .collect(),
    );
    let subscribers: Arc<Vec<String>> =
        Arc::new((0..SUBSCRIBERS).map(|i| jwt(&format!("ai-{i}"))).collect());
    for i in 0..SUBSCRIBERS {
        let body = r#"{"memes_ai_until":"2099-01-01T00:00:00Z","version":1}"#;
        let request = format!(
            "PUT /v1/users/ai-{i}/subscription HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\
             authorization: Bearer {OPERATOR}\r\ncontent-type: application/json\r\n\
             content-length: {}\r\n\r\n{body}",
            body.len()
        );
        assert_eq!(send_raw(&node.addr, request).await, 200, "subscribe ai-{i}");
    }
    let mut phases = Vec::new();
    for _ in 0..cycles {
        for with_ai in [false, true] {
            let schedule = Schedule::constant(rate, warmup, measure);
            let spends_sent = schedule.len();
            let tokens = standard.clone();
            let cpu0 = node.usage().cpu_secs;
            let spends = tokio::task::spawn_local({
                let addr = node.addr.clone();
                async move {
                    open_loop(&addr, &schedule, move |i| {
                        memes_request(&tokens[i % STANDARD_USERS], "cats", 0)
                    })
                    .await
                }
            });
            let ai = if with_ai {
                let schedule = Schedule::constant(ai_rate, warmup, measure);
                let tokens = subscribers.clone();
                let addr = node.addr.clone();
                Some(tokio::task::spawn_local(async move {
                    open_loop(&addr, &schedule, move |i| {
                        memes_request(&tokens[i % SUBSCRIBERS], "rust+borrow+checker", 1)
                    })
                    .await
                }))
            } else {
                None
            };
            let spends = spends.await.expect("spend lanes");
            let ai = match ai {
                Some(task) => Some(task.await.expect("ai lanes")),
                None => None,
            };
            phases.push(Phase {
                with_ai,
                spends,
                ai,
                node_cpu: node.usage().cpu_secs - cpu0,
                spends_sent,
            });
        }
    }
    println!(
        "## The spend path with and without AI jobs (one node, spends at {rate} req/s, AI memes at {ai_rate} req/s)\n"
    );
    println!(
        "| phase | spends sent | spends 200 | spend p50 | spend p99 | spend max | AI memes 200 | AI 503 busy | AI p50 | AI p99 | node CPU s | node CPU ms / spend (AI work included) |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|");
    for p in &phases {
        let (ai_ok, ai_busy, ai_p50, ai_p99) = match &p.ai {
            Some(o) => (
                o.count(200).to_string(),
                o.count(503).to_string(),
                format!("{} µs", o.at(0.5)),
                format!("{} µs", o.at(0.99)),
            ),
            None => ("—".into(), "—".into(), "—".into(), "—".into()),
        };
        println!(
            "| {} | {} | {} | {} µs | {} µs | {} µs | {ai_ok} | {ai_busy} | {ai_p50} | {ai_p99} | {:.2} | {:.3} |",
            if p.with_ai { "with AI jobs" } else { "without" },
            p.spends.sent,
            p.spends.count(200),
            p.spends.at(0.5),
            p.spends.at(0.99),
            p.spends.hist.max(),
            p.node_cpu,
            p.node_cpu * 1000.0 / p.spends_sent.max(1) as f64,
        );
    }
    let p99 = |with: bool| {
        let ps: Vec<u64> = phases
            .iter()
            .filter(|p| p.with_ai == with)
            .map(|p| p.spends.at(0.99))
            .collect();
        ps.iter().sum::<u64>() as f64 / ps.len().max(1) as f64
    };
    println!(
        "\nspend p99 with AI jobs / without (mean of the phases): {:.2}",
        p99(true) / p99(false).max(1.0)
    );
    let errors: u64 = phases
        .iter()
        .map(|p| p.spends.sent - p.spends.count(200))
        .sum();
    println!("spend errors over all phases: {errors}");
    if smoke {
        assert!(
            phases.iter().all(|p| p.spends.count(200) > 0),
            "spends were answered"
        );
        assert!(
            phases
                .iter()
                .filter_map(|p| p.ai.as_ref())
                .all(|o| o.count(200) > 0),
            "AI memes were delivered"
        );
    }
}
