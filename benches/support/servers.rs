//! The processes under load: `maas` nodes, the axum hello ceiling, the seed
//! design and Redis; and what each used, from /proc.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

/// The HS256 secret every bench server verifies client tokens with.
pub const SECRET: &str = "bench-secret-not-for-production-use";
/// The operator credential of every bench node.
pub const OPERATOR: &str = "bench-operator-credential";

/// Environment variable that makes a bench executable serve "hello" at an address.
pub const HELLO_ROLE: &str = "MAAS_BENCH_HELLO_SERVER";

/// Tokio workers per server process, when [`share_cores`] set it.
static WORKERS: OnceLock<usize> = OnceLock::new();

/// Every server started after this call runs `workers` tokio workers
/// (`TOKIO_WORKER_THREADS`, which our nodes and the axum servers' runtimes
/// read), not one per core: for a bench that runs several regions' servers
/// on one machine, as a deployment would size each to its share of the
/// cores. The first call wins.
pub fn share_cores(workers: usize) {
    let _ = WORKERS.set(workers.max(1));
}

/// What [`share_cores`] set, if anything.
pub fn workers_per_server() -> Option<usize> {
    WORKERS.get().copied()
}

/// Applies [`share_cores`] to a server's command.
fn sized(command: &mut Command) -> &mut Command {
    if let Some(n) = WORKERS.get() {
        command.env("TOKIO_WORKER_THREADS", n.to_string());
    }
    command
}

/// The `maas` executable the benches start: this build's, or the one
/// `MAAS_BENCH_NODE` names (another commit's build, for an A/B in one run of
/// the generator).
pub fn node_binary() -> std::ffi::OsString {
    std::env::var_os("MAAS_BENCH_NODE").unwrap_or_else(|| env!("CARGO_BIN_EXE_maas").into())
}

/// A server under test: one or more processes, killed on drop.
pub struct Server {
    /// The processes that make up the target (a server, and Redis for the seed).
    pub children: Vec<Child>,
    /// Where its HTTP API listens.
    pub addr: String,
    /// Where its QUIC endpoint really listens, for a clustered `maas`.
    pub peer: Option<SocketAddr>,
    /// Scratch directory removed with the server (Redis's append-only file).
    pub scratch: Option<tempfile::TempDir>,
}

/// What a server's processes used.
#[derive(Clone, Copy, Debug, Default)]
pub struct Usage {
    /// Peak resident set, KiB, summed over processes.
    pub peak_rss_kib: u64,
    /// User + system CPU seconds.
    pub cpu_secs: f64,
    /// Bytes the processes sent toward the disk: `write_bytes` in
    /// `/proc/<pid>/io`, which counts a whole folio of the page cache each
    /// time a write turns a clean one dirty. So a log append after an
    /// `fdatasync` counts a page (4 KiB) however few bytes it adds, which is
    /// what the disk is sent; but an overwrite of a file first written in
    /// large pieces counts a large folio, more than the disk is sent
    /// (benches/README.md, session 27).
    pub written_bytes: u64,
}

impl Usage {
    /// Sums two usages.
    pub fn plus(self, other: Usage) -> Usage {
        Usage {
            peak_rss_kib: self.peak_rss_kib + other.peak_rss_kib,
            cpu_secs: self.cpu_secs + other.cpu_secs,
            written_bytes: self.written_bytes + other.written_bytes,
        }
    }

    /// What was used since `before`: CPU and bytes written since then, and
    /// the peak so far.
    pub fn since(self, before: Usage) -> Usage {
        Usage {
            peak_rss_kib: self.peak_rss_kib,
            cpu_secs: self.cpu_secs - before.cpu_secs,
            written_bytes: self.written_bytes.saturating_sub(before.written_bytes),
        }
    }

    /// CPU seconds per 1,000 requests, for `requests` requests served (count
    /// the warm-up's too: the CPU covers it).
    pub fn cpu_per_k(&self, requests: u64) -> f64 {
        self.cpu_secs / (requests.max(1) as f64 / 1000.0)
    }
}

impl Server {
    /// The bench executable itself, re-run as a bare axum hello server.
    pub async fn hello() -> Server {
        Server::role(HELLO_ROLE, &[]).await
    }

    /// This executable re-run in `role` (see [`super::serve_role_if_asked`])
    /// with the extra environment `vars`, serving at a fresh address.
    async fn role(role: &str, vars: &[(&str, String)]) -> Server {
        let addr = format!("127.0.0.1:{}", free_port());
        let child = sized(&mut Command::new(std::env::current_exe().expect("exe")))
            .env(role, &addr)
            .envs(vars.iter().map(|(k, v)| (*k, v.as_str())))
            .stdout(Stdio::null())
            .spawn()
            .expect("spawn a server role");
        wait_for(&addr).await;
        Server {
            children: vec![child],
            addr,
            peer: None,
            scratch: None,
        }
    }

    /// A `maas` node on `dir` with `extra` flags, and the bench defaults for
    /// flags `extra` does not give (a billion-token welcome grant, no rate
    /// limit, warn logs).
    pub async fn maas(dir: &Path, extra: &[String]) -> Server {
        let defaults = [
            ("--listen", "127.0.0.1:0"),
            ("--jwt-secret", SECRET),
            ("--operator-token", OPERATOR),
            ("--welcome-grant", "1000000000"),
            ("--rate-limit", "0"),
            ("--rate-limit-ip", "0"),
            ("--log-level", "warn"),
        ];
        let mut command = Command::new(node_binary());
        for (flag, value) in defaults {
            if !extra.iter().any(|a| a == flag) {
                command.args([flag, value]);
            }
        }
        let mut child = sized(&mut command)
            .arg("--data-dir")
            .arg(dir)
            .args(extra)
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn maas");
        let stdout = child.stdout.take().expect("stdout");
        let clustered = extra.iter().any(|a| a == "--peer-listen");
        // The banner: `http://ADDR` first, then `quic://ADDR` when clustered.
        let (addr, peer) = tokio::task::spawn_blocking(move || {
            let mut lines = BufReader::new(stdout).lines();
            let mut next = || lines.next().and_then(Result::ok).unwrap_or_default();
            let addr = next()
                .split("http://")
                .nth(1)
                .and_then(|rest| rest.split_whitespace().next())
                .map(str::to_owned);
            let peer = if clustered {
                next()
                    .split("quic://")
                    .nth(1)
                    .and_then(|a| a.trim().parse().ok())
            } else {
                None
            };
            // Keep draining, so the node never blocks on a full pipe.
            std::thread::spawn(move || for _ in lines {});
            (addr, peer)
        })
        .await
        .expect("banner reader");
        let addr = addr.expect("maas printed its HTTP address");
        Server {
            children: vec![child],
            addr,
            peer,
            scratch: None,
        }
    }

    /// Redis, as durable as our acknowledged spends (`appendfsync always`);
    /// `None` if `redis-server` is not installed.
    pub async fn redis() -> Option<Server> {
        let scratch = tempfile::tempdir().ok()?;
        let port = free_port();
        let child = Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", &port.to_string()])
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
        let addr = format!("127.0.0.1:{port}");
        wait_for(&addr).await;
        Some(Server {
            children: vec![child],
            addr,
            peer: None,
            scratch: Some(scratch),
        })
    }

    /// The seed design's server (this executable in its seed role) in front of
    /// the Redis at `redis`, starting new users with `grant` tokens.
    pub async fn seed(redis: &str, grant: u64) -> Server {
        Server::role(
            super::seed::SEED_ROLE,
            &[
                (super::seed::REDIS_ENV, redis.to_owned()),
                (super::seed::GRANT_ENV, grant.to_string()),
            ],
        )
        .await
    }

    /// Adds another process (say, its Redis) to this target.
    pub fn with(mut self, mut other: Server) -> Server {
        self.children.append(&mut other.children);
        if self.scratch.is_none() {
            self.scratch = other.scratch.take();
        }
        self
    }

    /// Peak RSS and CPU seconds so far of all its processes.
    pub fn usage(&self) -> Usage {
        self.children
            .iter()
            .map(|c| process_usage(c.id()))
            .fold(Usage::default(), Usage::plus)
    }

    /// The first process's id.
    pub fn pid(&self) -> u32 {
        self.children[0].id()
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

/// Peak RSS, CPU seconds and bytes written of one process.
pub fn process_usage(pid: u32) -> Usage {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    Usage {
        peak_rss_kib: status_kib(pid, "VmHWM:"),
        cpu_secs: stat_cpu(&stat).map_or(0.0, |(_, secs)| secs),
        written_bytes: written_bytes(pid),
    }
}

/// The name and CPU seconds (user + system) in a process's or thread's
/// `stat` line: `pid (name) state ...`. The name may hold spaces and
/// parentheses, so the fields are counted after its last `)`: utime is the
/// 12th after it and stime the 13th (the 14th and 15th overall), in clock
/// ticks (100 per second here).
fn stat_cpu(stat: &str) -> Option<(&str, f64)> {
    let (head, rest) = stat.rsplit_once(')')?;
    let name = head.split_once('(').map_or("", |(_, n)| n);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    Some((name, (ticks(11) + ticks(12)) as f64 / 100.0))
}

/// CPU seconds of one process's threads so far, summed by thread name
/// (`/proc/<pid>/task/*/stat`): the node names its group-commit and
/// checkpoint threads, and tokio its workers.
pub fn thread_cpu(pid: u32) -> std::collections::BTreeMap<String, f64> {
    let mut by_name = std::collections::BTreeMap::new();
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return by_name;
    };
    for task in tasks.filter_map(Result::ok) {
        let Ok(stat) = std::fs::read_to_string(task.path().join("stat")) else {
            continue;
        };
        if let Some((name, secs)) = stat_cpu(&stat) {
            *by_name.entry(name.to_owned()).or_insert(0.0) += secs;
        }
    }
    by_name
}

/// Cores each thread name used between two [`thread_cpu`] readings
/// `seconds` apart, busiest first, leaving out those under 1 %.
pub fn thread_cores(
    before: &std::collections::BTreeMap<String, f64>,
    after: &std::collections::BTreeMap<String, f64>,
    seconds: f64,
) -> String {
    thread_shares(before, after, 1.0 / seconds)
        .iter()
        .filter(|(_, c)| *c >= 0.01)
        .map(|(name, c)| format!("{name} {c:.3}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Each thread name's CPU µs per request between two [`thread_cpu`]
/// readings `requests` apart, busiest first, leaving out those under 0.1 µs:
/// where a request's CPU went.
pub fn thread_micros_per_request(
    before: &std::collections::BTreeMap<String, f64>,
    after: &std::collections::BTreeMap<String, f64>,
    requests: u64,
) -> String {
    thread_shares(before, after, 1e6 / requests.max(1) as f64)
        .iter()
        .filter(|(_, us)| *us >= 0.1)
        .map(|(name, us)| format!("{name} {us:.1}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Each thread name's CPU seconds between two readings, times `scale`,
/// largest first.
fn thread_shares<'a>(
    before: &std::collections::BTreeMap<String, f64>,
    after: &'a std::collections::BTreeMap<String, f64>,
    scale: f64,
) -> Vec<(&'a String, f64)> {
    let mut shares: Vec<(&String, f64)> = after
        .iter()
        .map(|(name, cpu)| {
            (
                name,
                (cpu - before.get(name).copied().unwrap_or(0.0)) * scale,
            )
        })
        .collect();
    shares.sort_by(|a, b| b.1.total_cmp(&a.1));
    shares
}

/// `write_bytes` from a process's `/proc/<pid>/io` (0 if unreadable).
fn written_bytes(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/io"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("write_bytes:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

/// A KiB figure (`VmRSS`, `VmHWM`, ...) from a process's /proc status.
pub fn status_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Bytes of all files under `dir`.
pub fn dir_bytes(dir: &Path) -> u64 {
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

/// A TCP port free on 127.0.0.1 right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// Waits until something accepts TCP connections at `addr` (at most 6 s).
pub async fn wait_for(addr: &str) {
    for _ in 0..300 {
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("server at {addr} did not start");
}

/// A client token for `user`, valid for an hour.
pub fn jwt(user: &str) -> String {
    let hour = Duration::from_secs(3600);
    maas_node::sign_hs256_valid_for(SECRET.as_bytes(), user, hour).expect("sign")
}

/// The ceiling: a bare axum route, no auth, no storage.
pub fn hello_server(addr: &str) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        // `/memes` too, so that the regions bench's own requests get a 200.
        let app = axum::Router::new()
            .route("/hello", axum::routing::get(|| async { "hello" }))
            .route("/memes", axum::routing::get(|| async { "hello" }));
        let listener = tokio::net::TcpListener::bind(addr).await.expect("bind");
        axum::serve(listener, app).await.expect("serve");
    });
}

/// The counters of `servers` (`/metrics`), summed by series (name and
/// labels); a node that does not answer within 5 s counts nothing.
pub async fn counters(servers: &[Server]) -> std::collections::BTreeMap<String, u64> {
    let mut sums = std::collections::BTreeMap::new();
    for server in servers {
        let read = super::load::fetch(&server.addr, "/metrics", OPERATOR);
        let Ok(Ok((200, body))) = tokio::time::timeout(Duration::from_secs(5), read).await else {
            continue;
        };
        for line in body.lines().filter(|l| !l.starts_with('#')) {
            let Some((series, value)) = line.rsplit_once(' ') else {
                continue;
            };
            if let Ok(value) = value.trim().parse::<f64>() {
                *sums.entry(series.to_owned()).or_insert(0) += value as u64;
            }
        }
    }
    sums
}

/// What `after` counted since `before`, by series.
pub fn counted_since(
    before: std::collections::BTreeMap<String, u64>,
    mut after: std::collections::BTreeMap<String, u64>,
) -> std::collections::BTreeMap<String, u64> {
    for (series, before) in before {
        if let Some(counted) = after.get_mut(&series) {
            *counted = counted.saturating_sub(before);
        }
    }
    after
}

/// The spends (`GET /memes`) answered 200 as the nodes' own request
/// histogram (`maas_http_request_duration_seconds`) timed them: from the
/// start of the node's front (`shell::front`, before auth and the route) to
/// its answer, without the time a request waited in the kernel, or for a
/// worker, before it, nor the load generator's.
///
/// It counts a stall once per connection that was inside the node: an
/// HTTP/1.1 connection carries one request at a time, so while the node
/// waits (say, on its disk) at most one spend per connection is timed,
/// while the load generator counts every spend that was due meanwhile
/// (coordinated omission, on the node's side). Its share within 5 ms reads
/// higher than the truth whenever the node stalls.
pub struct NodeLatency {
    pub answered: u64,
    /// Upper bounds (s) of the buckets, ascending, with how many answers
    /// took at most that long.
    buckets: Vec<(f64, u64)>,
}

impl NodeLatency {
    /// The answers in `counted`: what the nodes counted over a stretch of
    /// time ([`counted_since`]).
    pub fn of(counted: &std::collections::BTreeMap<String, u64>) -> Self {
        const SERIES: &str = "maas_http_request_duration_seconds";
        const LABELS: &str = "{route=\"/memes\",status=\"200\"";
        let bucket_prefix = format!("{SERIES}_bucket{LABELS},le=\"");
        let mut buckets: Vec<(f64, u64)> = counted
            .iter()
            .filter_map(|(series, &n)| {
                let le = series.strip_prefix(&bucket_prefix)?.strip_suffix("\"}")?;
                Some((le.parse().ok()?, n))
            })
            .collect();
        buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
        NodeLatency {
            answered: counted
                .get(&format!("{SERIES}_count{LABELS}}}"))
                .copied()
                .unwrap_or(0),
            buckets,
        }
    }

    /// The share of the answers within `micros` µs, one of the buckets' bounds.
    pub fn share_within(&self, micros: u64) -> f64 {
        let seconds = micros as f64 / 1e6;
        let within = self
            .buckets
            .iter()
            .find(|(le, _)| (*le - seconds).abs() < 1e-9)
            .map_or(0, |(_, n)| *n);
        within as f64 / self.answered.max(1) as f64
    }

    /// The smallest bucket bound that holds 99 % of the answers.
    pub fn p99_bound(&self) -> String {
        let needed = self.answered.saturating_mul(99).div_ceil(100);
        match self.buckets.iter().find(|(_, n)| *n >= needed) {
            Some((le, _)) if le.is_finite() => format!("{} ms", le * 1000.0),
            _ => "over the largest bucket".to_owned(),
        }
    }
}
