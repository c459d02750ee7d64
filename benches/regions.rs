//! Three regions on loopback, 100 ms RTT between every pair, load spread over all
//! three.
//!
//! - `cargo bench --bench regions` (scenario 3) runs the same open-loop load, side
//!   by side, against:
//!   - ours: three `maas` nodes with escrow, peers over QUIC through UDP delay
//!     proxies;
//!   - primary-region: the seed design's server in every region and one Redis in
//!     region 1, reached from regions 2 and 3 through a TCP delay proxy, as a
//!     single-primary database behaves;
//!   - naive async counters: the same three `maas` nodes checking spends against
//!     the balance they happen to see (the simulator's naive policy, a hidden
//!     flag that only test and bench builds have).
//!
//!   Users have a small grant, so the hottest run out during the run. After the
//!   load the cluster is left to quiesce and overspend is counted exactly: every
//!   200 is a delivered meme, so a user is overspent by whatever was delivered
//!   beyond the grant. For our nodes, every region's final balance of every user
//!   must also equal grant − delivered.
//! - `MAAS_BENCH_SLA=1 cargo bench --bench regions` (scenario 4) is the seeds' SLA
//!   run against ours: 10,000 requests/s with spikes to 15,000 for 60 s, checked
//!   against the seeds' SLA and our own p99 ≤ 5 ms; then the same schedules
//!   against three bare axum hello servers, the CPU floor of the HTTP stack.
//! - `MAAS_BENCH_RIGHTS=1 cargo bench --bench regions` (scenario 8) times a
//!   write that must wait for rights another region holds, beside one that need
//!   not, at 0 and at 100 ms RTT (see `regions/rights.rs`).
//! - `MAAS_BENCH_SMOKE=1` runs scenario 3 for two seconds at a low rate, and
//!   five trials of scenario 8 (CI).
//!
//! Every server (ours, the seed design's, hello) runs a third of the cores as
//! tokio workers, at least one: three regions share this machine, and a
//! deployment sizes each node to the cores it has (benches/README.md,
//! session 22).
//!
//! Tuning: `MAAS_BENCH_RATE` (total requests/s, scenario 3), `MAAS_BENCH_SECONDS`,
//! `MAAS_BENCH_SLA_RATE`, `MAAS_BENCH_SLA_SECONDS`, `MAAS_BENCH_WORKERS` (tokio
//! workers per server).

#[path = "../tests/support/proxy.rs"]
mod proxy;
#[path = "regions/rights.rs"]
mod rights;
mod support;

use maas_sim::rng::{Rng, Zipf};
use proxy::{Links, Proxy, node_ip};
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::load::{Outcome, Request, SLOW_US, Schedule, Stalls, fetch, open_loop};
use support::servers::{
    NodeLatency, OPERATOR, Server, Usage, counted_since, counters, jwt, node_binary, share_cores,
    thread_cpu, thread_micros_per_request, workers_per_server,
};
use support::{delay, env_or};
use tokio::runtime::Handle;

/// Added to every packet in each direction: 100 ms round trips.
const ONE_WAY: Duration = Duration::from_millis(50);
/// Distinct users; each request picks one by Zipf (s = 1).
const USERS: usize = 1_000;
/// Scenario 3's grant per user: small enough that the twenty-odd hottest users
/// run out during the run.
const SMALL_GRANT: u64 = 200;
/// The SLA run's grant: nobody runs out.
const LARGE_GRANT: u64 = 1_000_000_000;
/// How long a cluster may take to quiesce after the load.
const QUIESCE: Duration = Duration::from_secs(15);

fn main() {
    if support::serve_role_if_asked() {
        return;
    }
    let cores = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
    let workers = env_or("MAAS_BENCH_WORKERS", cores / 3);
    share_cores(workers);
    eprintln!(
        "note: every server runs {} tokio worker(s), its share of {cores} cores (MAAS_BENCH_WORKERS sets it)",
        workers_per_server().unwrap_or(workers)
    );
    // Proxies get a thread of their own, so relaying never delays the generator.
    let proxies = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("proxy runtime");
    let generator = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("generator runtime");
    let handle = proxies.handle().clone();
    match delay::netem_unavailable() {
        Some(why) => eprintln!(
            "warning: the 100 ms RTT comes from userspace UDP proxies in this process, which share the cores with the nodes they measure (no kernel delay here: {why})"
        ),
        None => eprintln!(
            "note: tc netem works on this machine, but this bench still delays through its userspace UDP proxies"
        ),
    }
    let ok = tokio::task::LocalSet::new().block_on(&generator, async move {
        if std::env::var("MAAS_BENCH_SLA").is_ok() {
            sla_run(&handle).await
        } else if std::env::var("MAAS_BENCH_RIGHTS").is_ok() {
            rights::rights_run(&handle, env_or("MAAS_BENCH_RIGHTS_TRIALS", 100)).await
        } else {
            let smoke = std::env::var("MAAS_BENCH_SMOKE").is_ok();
            // The smoke runs a few trials of scenario 8 too, so that it cannot rot.
            compare(&handle, smoke).await && (!smoke || rights::rights_run(&handle, 5).await)
        }
    });
    if !ok {
        std::process::exit(1);
    }
}

/// One deployment of three regions: region i's HTTP API is `servers[i - 1]`.
struct Deployment {
    name: &'static str,
    servers: Vec<Server>,
    /// Which of `servers` are our nodes (for RSS and CPU).
    ours: bool,
    /// Our nodes' links, through the proxies (bytes on the wire).
    links: Option<Links>,
    /// Kept alive with the deployment: proxies, data directories, Redis.
    _keep: Vec<Box<dyn std::any::Any>>,
}

impl Deployment {
    fn usage(&self) -> Usage {
        usage_of(&self.servers)
    }
}

/// CPU seconds so far of `servers`' threads, summed by thread name.
fn threads_of(servers: &[Server]) -> std::collections::BTreeMap<String, f64> {
    let mut by_name = std::collections::BTreeMap::new();
    for (name, secs) in servers.iter().flat_map(|s| thread_cpu(s.pid())) {
        *by_name.entry(name).or_insert(0.0) += secs;
    }
    by_name
}

/// What `servers` used, summed.
fn usage_of(servers: &[Server]) -> Usage {
    servers
        .iter()
        .map(Server::usage)
        .fold(Usage::default(), Usage::plus)
}

/// Three `maas` nodes in cluster `127.0.t.x`, each behind a UDP proxy adding
/// [`ONE_WAY`] to every packet; returns once every node sees both others up.
async fn maas_cluster(
    name: &'static str,
    t: u8,
    grant: u64,
    extra: &[&str],
    proxies: &Handle,
) -> Deployment {
    let certs = tempfile::tempdir().expect("tempdir");
    let issued = std::process::Command::new(node_binary())
        .arg("certs")
        .arg("--dir")
        .arg(certs.path())
        .args([
            "--name", "region-1", "--name", "region-2", "--name", "region-3",
        ])
        .output()
        .expect("run maas certs");
    assert!(issued.status.success(), "maas certs failed");
    let links = Links::default();
    links.set_delay(ONE_WAY);
    let mut fronts = Vec::new();
    for i in 1..=3u8 {
        let bound = proxies.spawn(Proxy::bind(t, i, links.clone()));
        fronts.push(bound.await.expect("proxy"));
    }
    let mut servers = Vec::new();
    let mut keep: Vec<Box<dyn std::any::Any>> = Vec::new();
    for i in 1..=3u8 {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = |ext: &str| certs.path().join(format!("region-{i}.{ext}"));
        let join: Vec<String> = (1..=3u8)
            .filter(|&j| j != i)
            .map(|j| fronts[usize::from(j - 1)].addr.to_string())
            .collect();
        let mut args: Vec<String> = vec![
            "--region".into(),
            i.to_string(),
            "--genesis-regions".into(),
            "1,2,3".into(),
            "--welcome-grant".into(),
            grant.to_string(),
            "--peer-listen".into(),
            format!("{}:0", node_ip(t, i)),
            "--advertise".into(),
            fronts[usize::from(i - 1)].addr.to_string(),
            "--join".into(),
            join.join(","),
            "--tls-ca".into(),
            certs.path().join("ca.pem").display().to_string(),
            "--tls-cert".into(),
            file("pem").display().to_string(),
            "--tls-key".into(),
            file("key").display().to_string(),
        ];
        args.extend(extra.iter().map(|a| a.to_string()));
        let server = Server::maas(dir.path(), &args).await;
        fronts[usize::from(i - 1)].set_target(server.peer.expect("peer address"));
        servers.push(server);
        keep.push(Box::new(dir));
    }
    keep.push(Box::new(certs));
    keep.push(Box::new(fronts));
    let deployment = Deployment {
        name,
        servers,
        ours: true,
        links: Some(links),
        _keep: keep,
    };
    let started = Instant::now();
    while !all_up(&deployment).await {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "{name}: regions did not all see each other within 30 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    deployment
}

/// Whether every node sees both others up.
async fn all_up(deployment: &Deployment) -> bool {
    for server in &deployment.servers {
        let Ok((200, body)) = fetch(&server.addr, "/v1/cluster", OPERATOR).await else {
            return false;
        };
        let json: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
        let up = json["members"]
            .as_array()
            .map_or(0, |m| m.iter().filter(|m| m["state"] == "up").count());
        if up != 2 {
            return false;
        }
    }
    true
}

/// The seed design in all three regions, its one Redis in region 1; regions 2
/// and 3 reach Redis through a TCP proxy adding [`ONE_WAY`] each way.
async fn primary_region(grant: u64, proxies: &Handle) -> Option<Deployment> {
    let redis = Server::redis().await?;
    let redis_addr: std::net::SocketAddr = redis.addr.parse().expect("redis addr");
    let remote = proxies
        .spawn(delay::tcp_delay_proxy(redis_addr, ONE_WAY))
        .await
        .expect("delay proxy");
    let mut servers = vec![Server::seed(&redis.addr, grant).await.with(redis)];
    for _ in 2..=3 {
        servers.push(Server::seed(&remote.to_string(), grant).await);
    }
    Some(Deployment {
        name: "primary-region (Redis in region 1)",
        servers,
        ours: false,
        links: None,
        _keep: Vec::new(),
    })
}

/// Whether this `maas` build has the naive baseline (test and bench builds do).
fn naive_available() -> bool {
    std::process::Command::new(node_binary())
        .args(["--naive-counters-that-overspend", "--help"])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Load on each region: `schedules[r]` against region r + 1, users by Zipf.
async fn drive(servers: &[Server], schedules: &[Schedule]) -> Vec<Outcome> {
    let tokens: Arc<Vec<String>> =
        Arc::new((0..USERS).map(|u| jwt(&format!("user-{u}"))).collect());
    let zipf = Zipf::new(USERS, 1.0);
    let mut runs = Vec::new();
    for (r, (server, schedule)) in servers.iter().zip(schedules).enumerate() {
        // Each region its own, reproducible, sequence of users.
        let mut rng = Rng::new(100 + r as u64);
        let users: Vec<usize> = (0..schedule.len()).map(|_| zipf.sample(&mut rng)).collect();
        let tokens = tokens.clone();
        let make = move |i: usize| {
            let user = users[i];
            Request {
                bytes: format!(
                    "GET /memes?lat=-33.87&lon=151.21&query=cats HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {}\r\n\r\n",
                    tokens[user]
                ),
                tag: user,
            }
        };
        runs.push(open_loop(&server.addr, schedule, make));
    }
    let mut outcomes = Vec::new();
    // The three regions' loads run at once, interleaved on this thread.
    let mut runs = runs.into_iter();
    let (a, b, c) = (
        runs.next().expect("region 1"),
        runs.next().expect("region 2"),
        runs.next().expect("region 3"),
    );
    let (a, b, c) = tokio::join!(a, b, c);
    outcomes.extend([a, b, c]);
    outcomes
}

/// Tokens delivered beyond the grant: (users overspent, tokens overspent).
fn overspend(outcomes: &[Outcome], grant: u64) -> (u64, u64) {
    let mut delivered = vec![0u64; USERS];
    for o in outcomes {
        for (&user, &n) in &o.ok_by_tag {
            delivered[user] += n;
        }
    }
    delivered
        .iter()
        .filter(|&&d| d > grant)
        .fold((0, 0), |(users, tokens), &d| {
            (users + 1, tokens + d - grant)
        })
}

/// Waits for our nodes to quiesce: every region reports, for every user, the
/// same balance, and with `exact`, the balance grant − delivered. Returns the
/// users still wrong when time ran out (none is the good answer).
async fn quiesce(
    deployment: &Deployment,
    outcomes: &[Outcome],
    grant: u64,
    exact: bool,
) -> Vec<String> {
    let mut delivered = vec![0u64; USERS];
    for o in outcomes {
        for (&user, &n) in &o.ok_by_tag {
            delivered[user] += n;
        }
    }
    let started = Instant::now();
    loop {
        let mut wrong = Vec::new();
        for (user, &d) in delivered.iter().enumerate() {
            let path = format!("/v1/users/user-{user}");
            let mut seen = Vec::new();
            for server in &deployment.servers {
                let balance = match fetch(&server.addr, &path, OPERATOR).await {
                    Ok((200, body)) => serde_json::from_str::<serde_json::Value>(&body)
                        .ok()
                        .and_then(|j| j["balance"].as_u64()),
                    // Never seen by this region: the welcome grant, untouched
                    // as far as it knows (agreement across regions decides).
                    Ok((404, _)) => Some(grant),
                    _ => None,
                };
                seen.push(balance);
            }
            let agree = seen.windows(2).all(|w| w[0] == w[1]) && seen[0].is_some();
            let right = !exact || seen[0] == Some(grant.saturating_sub(d));
            if !(agree && right) {
                wrong.push(format!("user-{user}: {seen:?}, delivered {d}"));
            }
        }
        if wrong.is_empty() || started.elapsed() > QUIESCE {
            return wrong;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

fn ms(us: u64) -> String {
    format!("{:.1} ms", us as f64 / 1000.0)
}

/// Scenario 3: the three designs side by side.
async fn compare(proxies: &Handle, smoke: bool) -> bool {
    let total_rate: u64 = env_or("MAAS_BENCH_RATE", if smoke { 90 } else { 1_500 });
    let seconds: u64 = env_or("MAAS_BENCH_SECONDS", if smoke { 2 } else { 20 });
    let warmup = Duration::from_millis(if smoke { 500 } else { 3_000 });
    let schedule = Schedule::constant(total_rate / 3, warmup, Duration::from_secs(seconds));
    let schedules = [schedule.clone(), schedule.clone(), schedule];

    let mut table = String::from(
        "| design | region | sent | 200 | 402 (of which: rights in other region) | 5xx + failed | p50 | p99 | max | p50 of 200s | p99 of 200s |\n|---|---|---|---|---|---|---|---|---|---|---|\n",
    );
    let mut summary = String::from(
        "| design | throughput (200 + 402 per s) | p50 all | p99 all | worst region p99 | users overspent | tokens overspent | balances after quiescence | nodes' peak RSS | CPU s / 1k req |\n|---|---|---|---|---|---|---|---|---|---|\n",
    );
    let mut json = Vec::new();
    let mut problems = Vec::new();

    let mut designs: Vec<(u8, &str)> = vec![(201, "escrow")];
    designs.push((0, "primary"));
    if naive_available() {
        designs.push((203, "naive"));
    } else {
        println!("naive counters skipped: this maas build lacks the baseline flag");
    }
    for (t, design) in designs {
        let deployment = match design {
            "escrow" => maas_cluster("ours: escrow (maas)", t, SMALL_GRANT, &[], proxies).await,
            "naive" => {
                maas_cluster(
                    "naive async counters (maas, naive policy)",
                    t,
                    SMALL_GRANT,
                    &["--naive-counters-that-overspend"],
                    proxies,
                )
                .await
            }
            _ => match primary_region(SMALL_GRANT, proxies).await {
                Some(d) => d,
                None => {
                    println!(
                        "primary-region skipped: no redis-server (apt-get install redis-server)"
                    );
                    continue;
                }
            },
        };
        let before = deployment.usage();
        let outcomes = drive(&deployment.servers, &schedules).await;
        let usage = deployment.usage();
        let mut all = Outcome::empty();
        let mut worst_p99 = 0;
        for (r, o) in outcomes.iter().enumerate() {
            all.add(o);
            worst_p99 = worst_p99.max(o.at(0.99));
            let _ = writeln!(
                table,
                "| {} | {} | {} | {} | {} ({}) | {} | {} | {} | {} | {} | {} |",
                deployment.name,
                r + 1,
                o.sent,
                o.count(200),
                o.count(402),
                o.elsewhere,
                o.server_errors() + o.failed,
                ms(o.at(0.5)),
                ms(o.at(0.99)),
                ms(o.hist.max()),
                ms(o.ok_hist.value_at_quantile(0.5)),
                ms(o.ok_hist.value_at_quantile(0.99)),
            );
        }
        let (users_over, tokens_over) = overspend(&outcomes, SMALL_GRANT);
        let balances = if deployment.ours {
            let wrong = quiesce(&deployment, &outcomes, SMALL_GRANT, design == "escrow").await;
            if design == "escrow" && !wrong.is_empty() {
                problems.push(format!(
                    "escrow balances not exact: {:?}",
                    &wrong[..wrong.len().min(5)]
                ));
            }
            if wrong.is_empty() {
                if design == "escrow" {
                    "equal everywhere, = grant − delivered".to_owned()
                } else {
                    "equal everywhere".to_owned()
                }
            } else {
                format!("{} users differ", wrong.len())
            }
        } else {
            "one database".to_owned()
        };
        let answered = all.count(200) + all.count(402);
        let elapsed = Duration::from_secs(seconds).as_secs_f64();
        let used = usage.since(before);
        let _ = writeln!(
            summary,
            "| {} | {:.0} | {} | {} | {} | {} | {} | {} | {} MiB | {:.3} |",
            deployment.name,
            answered as f64 / elapsed,
            ms(all.at(0.5)),
            ms(all.at(0.99)),
            ms(worst_p99),
            users_over,
            tokens_over,
            balances,
            used.peak_rss_kib / 1024,
            used.cpu_per_k(all.served),
        );
        json.push(serde_json::json!({
            "design": deployment.name,
            "workers_per_server": workers_per_server(),
            "regions": outcomes.iter().map(outcome_json).collect::<Vec<_>>(),
            "users_overspent": users_over,
            "tokens_overspent": tokens_over,
            "balances": balances,
            "peak_rss_kib": used.peak_rss_kib,
            "cpu_secs": used.cpu_secs,
        }));
        if design == "escrow" {
            if tokens_over != 0 {
                problems.push(format!("escrow overspent {tokens_over} tokens"));
            }
            if all.sent == 0 || all.failed + all.server_errors() != 0 {
                problems.push(format!(
                    "escrow: {} sent, {} failed, {} 5xx",
                    all.sent,
                    all.failed,
                    all.server_errors()
                ));
            }
        }
    }
    println!(
        "Three regions, {} ms RTT between each pair; {} requests/s spread evenly; {} users (Zipf), {} tokens each; {} s measured after {} ms warm-up.\n",
        ONE_WAY.as_millis() * 2,
        total_rate,
        USERS,
        SMALL_GRANT,
        seconds,
        warmup.as_millis()
    );
    println!("{table}\n{summary}");
    write_json("regions.json", &serde_json::Value::Array(json));
    if smoke {
        for row in ["| ours: escrow (maas) | 1 |", "| ours: escrow (maas) | 3 |"] {
            if !table.contains(row) {
                problems.push(format!("table lacks row {row}"));
            }
        }
    }
    report(problems)
}

/// Scenario 4: the seeds' SLA run against ours.
async fn sla_run(proxies: &Handle) -> bool {
    let base: u64 = env_or("MAAS_BENCH_SLA_RATE", 10_000);
    let seconds: u64 = env_or("MAAS_BENCH_SLA_SECONDS", 60);
    let spike = base * 3 / 2;
    let warmup = Duration::from_secs(5);
    // Per region a third: warm-up at the base rate, then every 15 s, 10 s at the
    // base rate and a 5 s spike.
    let mut segments = vec![(warmup, base / 3)];
    for _ in 0..seconds.div_ceil(15) {
        segments.push((Duration::from_secs(10), base / 3));
        segments.push((Duration::from_secs(5), spike / 3));
    }
    let schedule = Schedule::segments(&segments, warmup);
    let deployment = maas_cluster("ours: escrow (maas)", 204, LARGE_GRANT, &[], proxies).await;
    let before = deployment.usage();
    let threads_before = threads_of(&deployment.servers);
    let wire = || deployment.links.as_ref().map_or(0, Links::relayed_bytes);
    let wire_before = wire();
    let counters_before = counters(&deployment.servers).await;
    let schedules = [schedule.clone(), schedule.clone(), schedule.clone()];
    let outcomes = drive(&deployment.servers, &schedules).await;
    let usage = deployment.usage();
    let threads_after = threads_of(&deployment.servers);
    let wire_bytes = wire() - wire_before;
    let counted = counted_since(counters_before, counters(&deployment.servers).await);
    let inside = NodeLatency::of(&counted);
    let kinds: std::collections::BTreeMap<&str, u64> = counted
        .iter()
        .filter_map(|(series, &bytes)| {
            let kind = series.strip_prefix("maas_peer_bytes_sent_total{kind=\"")?;
            Some((kind.strip_suffix("\"}")?, bytes))
        })
        .collect();
    let count = |series: &str| counted.get(series).copied().unwrap_or(0);

    let mut table = String::from(
        "| region | sent | 200 | non-200 | 5xx + failed | p50 | p95 | p99 | p99.9 | max | mean |\n|---|---|---|---|---|---|---|---|---|---|---|\n",
    );
    let mut all = Outcome::empty();
    let mut rows: Vec<(String, &Outcome)> = outcomes
        .iter()
        .enumerate()
        .map(|(r, o)| ((r + 1).to_string(), o))
        .collect();
    for o in &outcomes {
        all.add(o);
    }
    rows.push(("all".to_owned(), &all));
    for (name, o) in rows {
        let _ = writeln!(
            table,
            "| {name} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {:.2} ms |",
            o.sent,
            o.count(200),
            o.not_ok(),
            o.server_errors() + o.failed,
            ms(o.at(0.5)),
            ms(o.at(0.95)),
            ms(o.at(0.99)),
            ms(o.at(0.999)),
            ms(o.hist.max()),
            o.hist.mean() / 1000.0,
        );
    }
    let by_status: Vec<String> = all
        .statuses
        .iter()
        .filter(|(status, _)| **status != 200)
        .map(|(status, n)| format!("{status} × {n}"))
        .collect();
    if !by_status.is_empty() {
        let _ = writeln!(
            table,
            "\nnon-200 answers: {} ({} of the 402s: rights in another region)",
            by_status.join(", "),
            all.elsewhere
        );
    }
    let errors_pct = 100.0 * (all.server_errors() + all.failed) as f64 / all.sent.max(1) as f64;
    let mean_ms = all.hist.mean() / 1000.0;
    let verdict = |ok: bool| if ok { "met" } else { "missed" };
    let checks = [
        (
            "p95 < 200 ms (seed SLA)",
            all.at(0.95) < 200_000,
            ms(all.at(0.95)),
        ),
        (
            "average ≤ 10 ms (seed SLA)",
            mean_ms <= 10.0,
            format!("{mean_ms:.2} ms"),
        ),
        (
            "max ≤ 50 ms (seed SLA)",
            all.hist.max() <= 50_000,
            ms(all.hist.max()),
        ),
        (
            "< 0.1% 5xx (seed SLA)",
            errors_pct < 0.1,
            format!("{errors_pct:.3}%"),
        ),
        (
            "p99 ≤ 5 ms (ours)",
            all.at(0.99) <= SLOW_US,
            ms(all.at(0.99)),
        ),
        (
            "0 errors (ours)",
            all.not_ok() == 0,
            all.not_ok().to_string(),
        ),
    ];
    let mut verdicts = String::from("| target | measured | |\n|---|---|---|\n");
    for (name, ok, value) in &checks {
        let _ = writeln!(verdicts, "| {name} | {value} | {} |", verdict(*ok));
    }
    let used = usage.since(before);
    let ours_cpu = used.cpu_per_k(all.served);
    println!(
        "SLA run: three regions at {} ms RTT, {base} requests/s with 5 s spikes to {spike} every 15 s, {} s measured after 5 s warm-up; {} users (Zipf).\n",
        ONE_WAY.as_millis() * 2,
        seconds.div_ceil(15) * 15,
        USERS
    );
    // The bytes cover the warm-up too: count its spends (the base rate).
    let spends = all.count(200) + warmup.as_secs() * base;
    println!(
        "{table}\n{verdicts}\nnodes' peak RSS {} MiB (three nodes), CPU {:.3} s per 1k requests, {:.0} bytes on the wire per spend (UDP payload between the nodes: QUIC and TLS headers, replication, idempotency records, membership; {wire_bytes} bytes for about {spends} spends), {:.0} bytes written toward the disk per spend (the three nodes' logs and sled)",
        used.peak_rss_kib / 1024,
        ours_cpu,
        wire_bytes as f64 / spends.max(1) as f64,
        used.written_bytes as f64 / spends.max(1) as f64
    );
    println!(
        "the nodes' CPU by thread, µs per request (three nodes summed): {}",
        thread_micros_per_request(&threads_before, &threads_after, all.served)
    );
    let by_kind: Vec<String> = kinds
        .iter()
        .map(|(kind, bytes)| format!("{kind} {:.1}", *bytes as f64 / spends.max(1) as f64))
        .collect();
    // The generator's p99 counts from the intended send: the proxies, the
    // kernel's queues and the generator's own turns on the CPU are in it.
    // The nodes' histograms time their fronts and handlers alone, and
    // undercount stalls (see `NodeLatency`).
    println!(
        "inside the nodes (their request histograms, warm-up included): {} spends answered 200, {:.2} % within 5 ms, p99 at most {}; the generator's timer woke late by p99 {}, p99.9 {}",
        inside.answered,
        inside.share_within(SLOW_US) * 100.0,
        inside.p99_bound(),
        ms(all.timer_late.value_at_quantile(0.99)),
        ms(all.timer_late.value_at_quantile(0.999)),
    );
    // A stall is a node's (or its disk's): counted per region, over the
    // lanes of that region's generator.
    let stalls: Vec<Stalls> = outcomes.iter().map(Outcome::stalls).collect();
    let total = stalls.iter().fold(Stalls::default(), |sum, s| sum.add(s));
    let windows: Vec<String> = stalls.iter().map(|s| s.windows.to_string()).collect();
    println!(
        "answers over 5 ms: {}, {:.0} % of them in 100 ms windows where at least half of their region's lanes were slow at once (such windows by region: {})",
        total.slow,
        100.0 * total.share_in_windows(),
        windows.join(", "),
    );
    println!(
        "messages' bytes per spend by kind, before QUIC (the nodes' maas_peer_bytes_sent_total): {}",
        by_kind.join(", ")
    );
    // What the escrow did: a spend that waited for rights took a round trip
    // (100 ms here) and two flushes, which is what the max shows.
    println!(
        "escrow, three nodes: {} spends waited for rights, {} rights requests, {} transfers",
        count("maas_rights_waits_total"),
        count("maas_rights_requests_total"),
        count("maas_rights_transfers_total"),
    );
    drop(deployment);
    // The floor, in the same run and under the same schedules: three bare
    // axum servers answering "hello" (no auth, no ledger, no storage, no
    // peers). What they cost is what any HTTP service on this stack and VM
    // pays before doing anything.
    let hellos = [
        Server::hello().await,
        Server::hello().await,
        Server::hello().await,
    ];
    let hello_before = usage_of(&hellos);
    let mut floor = Outcome::empty();
    for o in drive(&hellos, &schedules).await {
        floor.add(&o);
    }
    let floor_cpu = usage_of(&hellos)
        .since(hello_before)
        .cpu_per_k(floor.served);
    println!(
        "the floor in the same run, three axum hello servers under the same schedules: CPU {floor_cpu:.3} s per 1k requests, p99 {}, {} not 200; ours / hello: {:.2}× CPU per request",
        ms(floor.at(0.99)),
        floor.not_ok(),
        ours_cpu / floor_cpu.max(1e-9),
    );
    write_json(
        "regions_sla.json",
        &serde_json::json!({
            "base_rate": base, "spike_rate": spike,
            "workers_per_server": workers_per_server(),
            "regions": outcomes.iter().map(outcome_json).collect::<Vec<_>>(),
            "all": outcome_json(&all),
            "peak_rss_kib": used.peak_rss_kib, "cpu_secs": used.cpu_secs,
            "wire_bytes": wire_bytes, "spends_with_warmup": spends,
            "message_bytes_by_kind": kinds,
            "rights_waits": count("maas_rights_waits_total"),
            "rights_requests": count("maas_rights_requests_total"),
            "rights_transfers": count("maas_rights_transfers_total"),
            "nodes_within_5ms": inside.share_within(SLOW_US),
            "generator_timer_late_p99_us": all.timer_late.value_at_quantile(0.99),
            "hello_floor": { "all": outcome_json(&floor), "cpu_secs_per_1k": floor_cpu },
        }),
    );
    // A missed target is a finding to report, not a failure of the harness.
    true
}

fn outcome_json(o: &Outcome) -> serde_json::Value {
    serde_json::json!({
        "sent": o.sent, "ok": o.count(200), "refused_402": o.count(402),
        "refused_other_region": o.elsewhere, "server_errors": o.server_errors(),
        "failed": o.failed, "p50_us": o.at(0.5), "p95_us": o.at(0.95), "p99_us": o.at(0.99),
        "p999_us": o.at(0.999), "max_us": o.hist.max(), "mean_us": o.hist.mean(),
    })
}

fn write_json(name: &str, value: &serde_json::Value) {
    let path = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join(name);
    if std::fs::write(&path, serde_json::to_vec_pretty(value).expect("json")).is_ok() {
        println!("JSON: {}", path.display());
    }
}

/// Prints what went wrong, if anything; `true` if nothing did.
fn report(problems: Vec<String>) -> bool {
    for p in &problems {
        eprintln!("regions bench: {p}");
    }
    problems.is_empty()
}
