//! Open-loop HTTP load: `GET /memes` on one node against an axum "hello" ceiling.
//!
//! `cargo bench --bench http_load` climbs a ladder of constant arrival rates (as
//! wrk2 does) against each target and reports the highest rate whose p99 stays at
//! or under 5 ms with no errors, with its percentiles. Latency is measured from each
//! request's *intended* send time, so a stalled server cannot hide its stall by
//! slowing the generator down (coordinated omission).
//!
//! Both targets are separate processes on 127.0.0.1: the `maas` binary, and this
//! bench re-executed as a bare axum hello server. Load generator and server share
//! the machine's cores, so read the ratio, not the absolute figures.
//!
//! `MAAS_BENCH_SMOKE=1` runs two seconds at a low rate (CI runs that);
//! `MAAS_BENCH_RATES=4000,6000` runs just those rates; `MAAS_BENCH_SCALE=1000000` runs
//! the scale scenario instead (that many distinct users spend once each, at
//! `MAAS_BENCH_SCALE_RATE` per second, then RAM and disk per user).

use hdrhistogram::Histogram;
use maas_sim::rng::{Rng, Zipf};
use std::io::Write;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

const SECRET: &str = "bench-secret-not-for-production";
const OPERATOR: &str = "bench-operator-credential";
const P99_BUDGET_US: u64 = 5_000;
const CONNECTIONS: usize = 64;
const USERS: usize = 1_000;

fn main() {
    if let Ok(addr) = std::env::var("MAAS_BENCH_HELLO_SERVER") {
        return hello_server(&addr);
    }
    if let (Ok(addr), Ok(redis)) = (
        std::env::var("MAAS_BENCH_SEED_SERVER"),
        std::env::var("MAAS_BENCH_REDIS"),
    ) {
        return seed_server(&addr, &redis);
    }
    let smoke = std::env::var("MAAS_BENCH_SMOKE").is_ok();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    if let Some(users) = std::env::var("MAAS_BENCH_SCALE")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        tokio::task::LocalSet::new().block_on(&rt, scale(users));
        return;
    }
    // Lanes share one thread: the generator leaves the other core to the server.
    tokio::task::LocalSet::new().block_on(&rt, run(smoke));
}

/// One measured step of the ladder.
#[derive(Clone, Debug)]
struct Step {
    rate: u64,
    sent: u64,
    errors: u64,
    p50: u64,
    p95: u64,
    p99: u64,
    p999: u64,
    max: u64,
    mean: f64,
}

impl Step {
    fn ok(&self) -> bool {
        self.errors == 0 && self.p99 <= P99_BUDGET_US
    }
}

async fn run(smoke: bool) {
    let custom: Option<Vec<u64>> = std::env::var("MAAS_BENCH_RATES")
        .ok()
        .map(|v| v.split(',').filter_map(|r| r.trim().parse().ok()).collect());
    let (ladder, warmup, measure): (Vec<u64>, Duration, Duration) = if let Some(rates) = custom {
        (rates, Duration::from_secs(1), Duration::from_secs(4))
    } else if smoke {
        (
            vec![200],
            Duration::from_millis(500),
            Duration::from_secs(2),
        )
    } else {
        (
            vec![
                1_000, 2_000, 3_000, 4_000, 5_000, 6_000, 7_000, 8_000, 10_000, 12_000, 15_000,
                20_000, 25_000, 30_000, 40_000,
            ],
            Duration::from_secs(1),
            Duration::from_secs(4),
        )
    };

    let hello = Server::hello().await;
    let hello_steps = ladder_run(&hello.addr, &ladder, warmup, measure, |_| {
        "GET /hello HTTP/1.1\r\nhost: x\r\n\r\n".to_owned()
    })
    .await;
    let hello_usage = hello.usage();
    drop(hello);

    let dir = tempfile::tempdir().expect("tempdir");
    let node = Server::maas(dir.path()).await;
    let tokens: Vec<String> = (0..USERS).map(|i| jwt(&format!("user-{i}"))).collect();
    // The user of every request, Zipf-distributed, the same sequence every run.
    let zipf = Zipf::new(USERS, 1.0);
    let mut rng = Rng::new(7);
    let most = ladder.iter().max().copied().unwrap_or(0) as f64 * (warmup + measure).as_secs_f64();
    let users: Vec<usize> = (0..=most as usize).map(|_| zipf.sample(&mut rng)).collect();
    let (tokens, users) = (Arc::new(tokens), Arc::new(users));
    let memes_request = move |i: usize| {
        let user = users[i % users.len()];
        format!(
            "GET /memes?query=cats HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {}\r\n\r\n",
            tokens[user]
        )
    };
    let node_steps = ladder_run(&node.addr, &ladder, warmup, measure, memes_request.clone()).await;
    let node_usage = node.usage();
    drop(node);

    // The seed design: the same API and JWT check, the balance in Redis with one
    // atomic check-and-decrement script per request, fsynced like our spends.
    let seed = match Server::seed_with_redis().await {
        Some(seed) => {
            let steps = ladder_run(&seed.addr, &ladder, warmup, measure, memes_request).await;
            Some((steps, seed.usage()))
        }
        None => {
            println!("seed design skipped: no redis-server (apt-get install redis-server)");
            None
        }
    };

    let best = |steps: &[Step]| {
        steps
            .iter()
            .filter(|s| s.ok())
            .max_by_key(|s| s.rate)
            .cloned()
    };
    let mut out = String::new();
    out.push_str("| target | highest rate at p99 ≤ 5 ms, 0 errors | p50 | p95 | p99 | p99.9 | max | mean | peak RSS | CPU s / 1k req |\n");
    out.push_str("|---|---|---|---|---|---|---|---|---|---|\n");
    let mut rows = vec![
        ("axum hello (ceiling)", &hello_steps, hello_usage),
        ("maas GET /memes", &node_steps, node_usage),
    ];
    if let Some((steps, usage)) = &seed {
        rows.push(("seed design: axum + Redis script", steps, *usage));
    }
    for (name, steps, usage) in rows {
        let sent: u64 = steps.iter().map(|s| s.sent).sum();
        let cpu_per_k = usage.cpu_secs / (sent.max(1) as f64 / 1000.0);
        match best(steps) {
            Some(s) => out.push_str(&format!(
                "| {name} | {} req/s | {} µs | {} µs | {} µs | {} µs | {} µs | {:.0} µs | {} MiB | {:.3} |\n",
                s.rate, s.p50, s.p95, s.p99, s.p999, s.max, s.mean, usage.peak_rss_kib / 1024, cpu_per_k
            )),
            None => out.push_str(&format!("| {name} | none | | | | | | | {} MiB | {cpu_per_k:.3} |\n", usage.peak_rss_kib / 1024)),
        }
    }
    if let (Some(h), Some(n)) = (best(&hello_steps), best(&node_steps)) {
        out.push_str(&format!(
            "\nmaas / hello ceiling: {:.2}\n",
            n.rate as f64 / h.rate as f64
        ));
    }
    if let (Some((steps, _)), Some(n)) = (&seed, best(&node_steps)) {
        match best(steps) {
            Some(r) => out.push_str(&format!(
                "maas / seed design: {:.2}\n",
                n.rate as f64 / r.rate as f64
            )),
            None => out.push_str("seed design: no rate held p99 ≤ 5 ms\n"),
        }
    }
    out.push_str("\nEvery step (rate: sent, errors, p99 µs):\n");
    for (name, steps) in [("hello", &hello_steps), ("maas", &node_steps)] {
        let line: Vec<String> = steps
            .iter()
            .map(|s| format!("{}: {}, {}, {}", s.rate, s.sent, s.errors, s.p99))
            .collect();
        out.push_str(&format!("- {name}: {}\n", line.join(" | ")));
    }
    println!("{out}");
    let json = serde_json::json!({
        "hello": steps_json(&hello_steps),
        "maas_memes": steps_json(&node_steps),
        "seed_redis": seed.as_ref().map(|(steps, _)| steps_json(steps)),
    });
    let path = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("http_load.json");
    if std::fs::write(&path, serde_json::to_vec_pretty(&json).expect("json")).is_ok() {
        println!("JSON: {}", path.display());
    }
    let total_errors: u64 = hello_steps
        .iter()
        .chain(&node_steps)
        .map(|s| s.errors)
        .sum();
    println!("errors: {total_errors}");
    if smoke {
        smoke_checks(&out, &hello_steps, &node_steps).await;
    }
}

/// The scale scenario: `users` distinct users each spend once, at a constant rate;
/// then the node's RSS and sled's size on disk, per user, against the same node
/// idle before the load.
async fn scale(users: usize) {
    let rate: u64 = std::env::var("MAAS_BENCH_SCALE_RATE")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5_000);
    let dir = tempfile::tempdir().expect("tempdir");
    let node = Server::maas(dir.path()).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let idle_rss = status_kib(node.children[0].id(), "VmRSS:");
    let idle_disk = dir_bytes(dir.path());
    let tokens: Arc<Vec<String>> = Arc::new(
        (0..users)
            .map(|i| jwt(&format!("scale-user-{i}")))
            .collect(),
    );
    let measure = Duration::from_secs_f64(users as f64 / rate as f64);
    let step = open_loop(&node.addr, rate, Duration::ZERO, measure, move |i| {
        format!(
            "GET /memes HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {}\r\n\r\n",
            tokens[i % tokens.len()]
        )
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss = status_kib(node.children[0].id(), "VmRSS:");
    let disk = dir_bytes(dir.path());
    let per_user = |total: u64, idle: u64| total.saturating_sub(idle) as f64 / users as f64;
    println!(
        "| users | spends sent | errors | p99 | RSS idle → loaded | RAM per user | sled on disk | disk per user |\n|---|---|---|---|---|---|---|---|\n| {users} | {} | {} | {} µs | {} → {} MiB | {:.0} B | {} MiB | {:.0} B |",
        step.sent,
        step.errors,
        step.p99,
        idle_rss / 1024,
        rss / 1024,
        per_user(rss * 1024, idle_rss * 1024),
        disk / (1024 * 1024),
        per_user(disk, idle_disk),
    );
}

/// A KiB figure (`VmRSS`, `VmHWM`, ...) from a process's /proc status.
fn status_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Bytes of all files under `dir`.
fn dir_bytes(dir: &std::path::Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .filter_map(Result::ok)
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_bytes(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

/// The CI smoke test of the harness itself: a table with both targets came out,
/// nothing failed at a low rate, and failures are counted (every request with a
/// forged token must count as an error).
async fn smoke_checks(table: &str, hello: &[Step], node: &[Step]) {
    let mut problems = Vec::new();
    for (name, steps) in [("hello", hello), ("maas", node)] {
        match steps.first() {
            Some(s) if s.sent > 0 && s.errors == 0 => {}
            other => problems.push(format!("{name}: expected a clean step, got {other:?}")),
        }
    }
    for row in ["| axum hello (ceiling) |", "| maas GET /memes |"] {
        if !table.contains(row) {
            problems.push(format!("table lacks row {row}"));
        }
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let node = Server::maas(dir.path()).await;
    let forged =
        maas_node::auth::sign_hs256(b"not-the-secret", "user-0", u64::MAX / 2).expect("sign");
    let bad = open_loop(
        &node.addr,
        100,
        Duration::from_millis(100),
        Duration::from_secs(1),
        move |_| {
            format!("GET /memes HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {forged}\r\n\r\n")
        },
    )
    .await;
    if bad.sent == 0 || bad.errors != bad.sent {
        problems.push(format!(
            "forged tokens: {} sent, {} counted as errors",
            bad.sent, bad.errors
        ));
    }
    if problems.is_empty() {
        println!(
            "smoke: ok ({} requests with forged tokens, all counted as errors)",
            bad.errors
        );
    } else {
        for p in &problems {
            eprintln!("smoke: {p}");
        }
        std::process::exit(1);
    }
}

fn steps_json(steps: &[Step]) -> serde_json::Value {
    steps
        .iter()
        .map(|s| {
            serde_json::json!({"rate": s.rate, "sent": s.sent, "errors": s.errors, "p50_us": s.p50,
                "p95_us": s.p95, "p99_us": s.p99, "p999_us": s.p999, "max_us": s.max, "mean_us": s.mean})
        })
        .collect()
}

/// Runs each rate of the ladder until one misses the budget.
async fn ladder_run(
    addr: &str,
    ladder: &[u64],
    warmup: Duration,
    measure: Duration,
    make: impl Fn(usize) -> String + Clone + 'static,
) -> Vec<Step> {
    let mut steps = Vec::new();
    for &rate in ladder {
        let step = open_loop(addr, rate, warmup, measure, make.clone()).await;
        eprintln!(
            "{addr} {rate}/s: p99 {} µs, {} errors",
            step.p99, step.errors
        );
        let ok = step.ok();
        steps.push(step);
        if !ok {
            break;
        }
    }
    steps
}

/// One constant-rate run: `CONNECTIONS` lanes, lane k sends requests k, k+C, ...
/// each at its intended time t0 + i/rate, and measures from that time.
async fn open_loop(
    addr: &str,
    rate: u64,
    warmup: Duration,
    measure: Duration,
    make: impl Fn(usize) -> String + Clone + 'static,
) -> Step {
    let total = (rate as f64 * (warmup + measure).as_secs_f64()) as usize;
    let interval = Duration::from_secs_f64(1.0 / rate as f64);
    let start = tokio::time::Instant::now() + Duration::from_millis(50);
    let deadline = start + warmup + measure + Duration::from_secs(10);
    let make = Arc::new(make);
    let mut lanes = Vec::new();
    for lane in 0..CONNECTIONS {
        let (addr, make) = (addr.to_owned(), make.clone());
        lanes.push(tokio::task::spawn_local(async move {
            let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("histogram");
            let (mut sent, mut errors) = (0u64, 0u64);
            let mut conn: Option<Conn> = None;
            let mut i = lane;
            let mut previous_done = start;
            while i < total {
                let intended = start + interval * i as u32;
                tokio::time::sleep_until(intended).await;
                // If the lane was still busy at the intended time, the wait is the
                // server's fault and counts (no coordinated omission). Otherwise
                // only the timer was late (tokio's resolution is 1 ms): measure from
                // the real send, or the generator would bill its own jitter.
                let from = if previous_done > intended {
                    intended
                } else {
                    tokio::time::Instant::now()
                };
                if tokio::time::Instant::now() > deadline {
                    errors += ((total - i) / CONNECTIONS) as u64;
                    break;
                }
                let request = make(i);
                let ok = match conn.as_mut() {
                    Some(c) => c.send(request.as_bytes()).await,
                    None => match Conn::open(&addr).await {
                        Ok(c) => conn.insert(c).send(request.as_bytes()).await,
                        Err(e) => Err(e),
                    },
                };
                previous_done = tokio::time::Instant::now();
                let measured = intended >= start + warmup;
                match ok {
                    Ok(200) if measured => {
                        sent += 1;
                        let us = (previous_done - from).as_micros() as u64;
                        let _ = hist.record(us.max(1));
                    }
                    Ok(200) => {}
                    _ => {
                        conn = None;
                        if measured {
                            sent += 1;
                            errors += 1;
                        }
                    }
                }
                i += CONNECTIONS;
            }
            (hist, sent, errors)
        }));
    }
    let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("histogram");
    let (mut sent, mut errors) = (0, 0);
    for lane in lanes {
        let (h, s, e) = lane.await.expect("lane");
        hist.add(&h).expect("merge histograms");
        sent += s;
        errors += e;
    }
    Step {
        rate,
        sent,
        errors,
        p50: hist.value_at_quantile(0.5),
        p95: hist.value_at_quantile(0.95),
        p99: hist.value_at_quantile(0.99),
        p999: hist.value_at_quantile(0.999),
        max: hist.max(),
        mean: hist.mean(),
    }
}

/// A keep-alive HTTP/1.1 connection.
struct Conn {
    stream: BufReader<TcpStream>,
    line: String,
}

impl Conn {
    async fn open(addr: &str) -> std::io::Result<Conn> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        Ok(Conn {
            stream: BufReader::new(stream),
            line: String::new(),
        })
    }

    /// Sends one request and reads the whole response; returns the status.
    async fn send(&mut self, request: &[u8]) -> std::io::Result<u16> {
        self.stream.get_mut().write_all(request).await?;
        self.line.clear();
        self.stream.read_line(&mut self.line).await?;
        let status = self
            .line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| std::io::Error::other("bad status line"))?;
        let mut length = 0usize;
        loop {
            self.line.clear();
            if self.stream.read_line(&mut self.line).await? == 0 {
                return Err(std::io::Error::other("closed"));
            }
            let l = self.line.trim_end();
            if l.is_empty() {
                break;
            }
            if let Some((k, v)) = l.split_once(':')
                && k.eq_ignore_ascii_case("content-length")
            {
                length = v.trim().parse().map_err(std::io::Error::other)?;
            }
        }
        let mut body = vec![0; length];
        self.stream.read_exact(&mut body).await?;
        Ok(status)
    }
}

/// A server process under test.
struct Server {
    /// The processes that make up the target (a server, and Redis for the seed).
    children: Vec<std::process::Child>,
    addr: String,
    /// Scratch directory removed with the server (Redis's append-only file).
    _scratch: Option<tempfile::TempDir>,
}

/// What a server process used.
#[derive(Clone, Copy, Debug)]
struct Usage {
    peak_rss_kib: u64,
    cpu_secs: f64,
}

impl Server {
    async fn hello() -> Server {
        let port = free_port();
        let addr = format!("127.0.0.1:{port}");
        let child = std::process::Command::new(std::env::current_exe().expect("exe"))
            .env("MAAS_BENCH_HELLO_SERVER", &addr)
            .stdout(Stdio::null())
            .spawn()
            .expect("spawn hello server");
        wait_for(&addr).await;
        Server {
            children: vec![child],
            addr,
            _scratch: None,
        }
    }

    async fn maas(dir: &std::path::Path) -> Server {
        let port = free_port();
        let addr = format!("127.0.0.1:{port}");
        let child = std::process::Command::new(env!("CARGO_BIN_EXE_maas"))
            .args([
                "--listen",
                &addr,
                "--jwt-secret",
                SECRET,
                "--operator-token",
                OPERATOR,
            ])
            .args([
                "--welcome-grant",
                "1000000000",
                "--rate-limit",
                "0",
                "--log-level",
                "warn",
            ])
            .arg("--data-dir")
            .arg(dir)
            .stdout(Stdio::null())
            .spawn()
            .expect("spawn maas");
        wait_for(&addr).await;
        Server {
            children: vec![child],
            addr,
            _scratch: None,
        }
    }

    /// Peak RSS and CPU seconds so far of all its processes, from /proc.
    fn usage(&self) -> Usage {
        let mut total = Usage {
            peak_rss_kib: 0,
            cpu_secs: 0.0,
        };
        for child in &self.children {
            let one = process_usage(child.id());
            total.peak_rss_kib += one.peak_rss_kib;
            total.cpu_secs += one.cpu_secs;
        }
        total
    }

    /// Redis (durable: `appendfsync always`, like our acknowledged spends) and the
    /// seed design's server in front of it; `None` if Redis is not installed.
    async fn seed_with_redis() -> Option<Server> {
        let scratch = tempfile::tempdir().ok()?;
        let redis_port = free_port();
        let redis = std::process::Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", &redis_port.to_string()])
            .args([
                "--save",
                "",
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
            ])
            .arg("--dir")
            .arg(scratch.path())
            .stdout(Stdio::null())
            .spawn()
            .ok()?;
        let redis_addr = format!("127.0.0.1:{redis_port}");
        wait_for(&redis_addr).await;
        let addr = format!("127.0.0.1:{}", free_port());
        let seed = std::process::Command::new(std::env::current_exe().expect("exe"))
            .env("MAAS_BENCH_SEED_SERVER", &addr)
            .env("MAAS_BENCH_REDIS", &redis_addr)
            .stdout(Stdio::null())
            .spawn()
            .expect("spawn seed server");
        wait_for(&addr).await;
        Some(Server {
            children: vec![seed, redis],
            addr,
            _scratch: Some(scratch),
        })
    }
}

fn process_usage(pid: u32) -> Usage {
    let peak_rss_kib = status_kib(pid, "VmHWM:");
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name, which is in parentheses: utime is the 14th
    // field overall, stime the 15th; both in clock ticks (100 per second here).
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    Usage {
        peak_rss_kib,
        cpu_secs: (ticks(11) + ticks(12)) as f64 / 100.0,
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

async fn wait_for(addr: &str) {
    for _ in 0..300 {
        if TcpStream::connect(addr).await.is_ok() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("server at {addr} did not start");
}

fn jwt(user: &str) -> String {
    let hour = Duration::from_secs(3600);
    maas_node::auth::sign_hs256_valid_for(SECRET.as_bytes(), user, hour).expect("sign")
}

/// The ceiling: a bare axum route, no auth, no storage.
fn hello_server(addr: &str) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let app = axum::Router::new().route("/hello", axum::routing::get(|| async { "hello" }));
        let listener = tokio::net::TcpListener::bind(addr).await.expect("bind");
        let _ = std::io::stdout().flush();
        axum::serve(listener, app).await.expect("serve");
    });
}

/// The seed design (seed 000's answer): the same route and JWT check as maas, with
/// each user's balance in Redis and one atomic check-and-decrement Lua script per
/// request. New users start with the same grant as the bench's maas node.
fn seed_server(addr: &str, redis: &str) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let pool = RedisPool::new(redis.to_owned());
        let sha = pool
            .command(&[b"SCRIPT", b"LOAD", SPEND_SCRIPT.as_bytes()])
            .await
            .expect("load the script");
        let RespValue::Bulk(sha) = sha else {
            panic!("SCRIPT LOAD answered {sha:?}")
        };
        let key = maas_node::auth::JwtKey::Secret(SECRET.as_bytes().to_vec());
        let auth = maas_node::auth::Authenticator::new(&key, OPERATOR).expect("auth");
        let state = Arc::new(SeedState {
            pool,
            sha,
            auth,
            catalog: maas_node::catalog::Catalog::builtin(0),
        });
        let app = axum::Router::new()
            .route("/memes", axum::routing::get(seed_memes))
            .with_state(state);
        let listener = tokio::net::TcpListener::bind(addr).await.expect("bind");
        axum::serve(listener, app).await.expect("serve");
    });
}

/// Check-and-decrement in one atomic step: -1 if the balance does not cover it.
const SPEND_SCRIPT: &str = "local b = redis.call('GET', KEYS[1]) \
    if not b then b = tonumber(ARGV[2]) else b = tonumber(b) end \
    if b < tonumber(ARGV[1]) then return -1 end \
    b = b - tonumber(ARGV[1]) redis.call('SET', KEYS[1], b) return b";

struct SeedState {
    pool: RedisPool,
    sha: Vec<u8>,
    auth: maas_node::auth::Authenticator,
    catalog: maas_node::catalog::Catalog,
}

async fn seed_memes(
    axum::extract::State(state): axum::extract::State<Arc<SeedState>>,
    headers: axum::http::HeaderMap,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let header = headers.get("authorization").map(|v| v.as_bytes());
    let Ok(maas_node::auth::Principal::User(user)) = state.auth.identify(header) else {
        return axum::http::StatusCode::UNAUTHORIZED.into_response();
    };
    let key = format!("balance:{user}");
    let reply = state
        .pool
        .command(&[
            b"EVALSHA",
            &state.sha,
            b"1",
            key.as_bytes(),
            b"1",
            b"1000000000",
        ])
        .await;
    match reply {
        Ok(RespValue::Integer(balance)) if balance >= 0 => {
            let meme = state.catalog.choose("cats", None);
            axum::Json(serde_json::json!({
                "id": meme.id, "title": meme.title, "image": meme.image,
                "source": meme.source, "balance": balance,
            }))
            .into_response()
        }
        Ok(RespValue::Integer(_)) => axum::http::StatusCode::PAYMENT_REQUIRED.into_response(),
        _ => axum::http::StatusCode::SERVICE_UNAVAILABLE.into_response(),
    }
}

/// A RESP reply.
#[derive(Debug)]
enum RespValue {
    Integer(i64),
    Bulk(Vec<u8>),
    Other,
}

/// A minimal pool of Redis connections speaking RESP 2.
struct RedisPool {
    addr: String,
    idle: tokio::sync::Mutex<Vec<BufReader<TcpStream>>>,
}

impl RedisPool {
    fn new(addr: String) -> Self {
        Self {
            addr,
            idle: tokio::sync::Mutex::new(Vec::new()),
        }
    }

    async fn command(&self, args: &[&[u8]]) -> std::io::Result<RespValue> {
        let taken = self.idle.lock().await.pop();
        let mut conn = match taken {
            Some(c) => c,
            None => {
                let stream = TcpStream::connect(&self.addr).await?;
                stream.set_nodelay(true)?;
                BufReader::new(stream)
            }
        };
        let mut request = format!("*{}\r\n", args.len()).into_bytes();
        for arg in args {
            request.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
            request.extend_from_slice(arg);
            request.extend_from_slice(b"\r\n");
        }
        conn.get_mut().write_all(&request).await?;
        let mut line = String::new();
        conn.read_line(&mut line).await?;
        let value = match line.as_bytes().first() {
            Some(b':') => {
                RespValue::Integer(line[1..].trim().parse().map_err(std::io::Error::other)?)
            }
            Some(b'$') => {
                let len: usize = line[1..].trim().parse().map_err(std::io::Error::other)?;
                let mut body = vec![0; len + 2];
                conn.read_exact(&mut body).await?;
                body.truncate(len);
                RespValue::Bulk(body)
            }
            _ => RespValue::Other,
        };
        self.idle.lock().await.push(conn);
        Ok(value)
    }
}
