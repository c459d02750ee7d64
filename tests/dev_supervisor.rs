//! `maas dev --regions 3`, the demo a newcomer runs: one region dies and the
//! others serve; it comes back; SIGTERM stops everything; no orphans.

mod support;

use std::collections::BTreeMap;
use std::process::Stdio;
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::process::{Child, ChildStdout};

/// Three consecutive free TCP ports and three consecutive free UDP ports.
fn free_ports() -> (u16, u16) {
    let free = |base: u16| {
        (0..3).all(|i| {
            std::net::TcpListener::bind(("127.0.0.1", base + i)).is_ok()
                && std::net::UdpSocket::bind(("127.0.0.1", base + 100 + i)).is_ok()
        })
    };
    // Tests in this file run at once in one process: each takes its own range.
    static NEXT: std::sync::atomic::AtomicU16 = std::sync::atomic::AtomicU16::new(0);
    let turn = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let start = 20_000 + (std::process::id() % 1_000) as u16 * 20 + turn * 1_000;
    (0..500)
        .map(|k| start.wrapping_add(k * 7) % 40_000 + 20_000)
        .find(|&base| free(base))
        .map(|base| (base, base + 100))
        .expect("free ports")
}

struct Supervisor {
    child: Child,
    lines: Lines<BufReader<ChildStdout>>,
    /// Region → its current pid.
    pids: BTreeMap<u16, u32>,
}

impl Supervisor {
    async fn start(dir: &std::path::Path, http: u16, peer: u16, extra: &[&str]) -> Supervisor {
        let mut child = support::maas()
            .args(["dev", "--regions", "3"])
            .args(["--http-port", &http.to_string()])
            .args(["--peer-port", &peer.to_string()])
            .arg("--dir")
            .arg(dir)
            .args(extra)
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn maas dev");
        let lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
        let mut s = Supervisor {
            child,
            lines,
            pids: BTreeMap::new(),
        };
        while s.pids.len() < 3 {
            s.next_line().await;
        }
        s
    }

    /// Reads the next supervisor line (skipping the regions' banners), and
    /// notes any pid it announces.
    async fn next_line(&mut self) -> String {
        loop {
            let line = tokio::time::timeout(Duration::from_secs(30), self.lines.next_line())
                .await
                .expect("a line in time")
                .expect("read")
                .expect("stdout open");
            let Some(rest) = line.strip_prefix("maas dev: region ") else {
                if line.starts_with("maas dev: ") {
                    return line;
                }
                continue;
            };
            let words: Vec<&str> = rest.split_whitespace().collect();
            let region: u16 = words[0].parse().expect("region");
            if let Some(at) = words.iter().position(|w| *w == "pid" || *w == "pid,") {
                let pid = words[at + 1].trim_end_matches(',').parse().expect("pid");
                self.pids.insert(region, pid);
            }
            return line;
        }
    }

    async fn line_containing(&mut self, needle: &str) -> String {
        loop {
            let line = self.next_line().await;
            if line.contains(needle) {
                return line;
            }
        }
    }
}

fn alive(pid: u32) -> bool {
    // A zombie is dead for our purpose: it holds no port and no lock.
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| s.split_whitespace().nth(2).is_none_or(|state| state != "Z"))
        .unwrap_or(false)
}

async fn healthy(http: u16) -> bool {
    matches!(
        support::request(&format!("127.0.0.1:{http}"), "GET", "/health", &[], "").await,
        Ok(r) if r.status == 200
    )
}

async fn wait_until<F: std::future::Future<Output = bool>>(what: &str, mut f: impl FnMut() -> F) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !f().await {
        assert!(Instant::now() < deadline, "{what}: not within 30 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_region_is_restarted_while_the_others_serve_and_sigterm_stops_everything() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (http, peer) = free_ports();
    let mut dev = Supervisor::start(dir.path(), http, peer, &[]).await;
    for i in 0..3 {
        wait_until("every region healthy", || healthy(http + i)).await;
    }
    let first_pids = dev.pids.clone();

    // kill -9 region 2: the others keep serving, and it comes back.
    let victim = first_pids[&2];
    std::process::Command::new("kill")
        .args(["-KILL", &victim.to_string()])
        .status()
        .expect("kill");
    let line = dev.line_containing("region 2 exited").await;
    assert!(line.contains("the other regions keep serving"), "{line}");
    assert!(healthy(http).await && healthy(http + 2).await);
    dev.line_containing("region 2 restarted").await;
    assert_ne!(dev.pids[&2], victim, "a new process");
    wait_until("region 2 healthy again", || healthy(http + 1)).await;
    assert!(
        alive(first_pids[&1]) && alive(first_pids[&3]),
        "the others were not touched"
    );

    // SIGTERM to the supervisor reaches every region and waits for them.
    let pids: Vec<u32> = dev.pids.values().copied().collect();
    std::process::Command::new("kill")
        .args(["-TERM", &dev.child.id().expect("running").to_string()])
        .status()
        .expect("kill");
    let status = tokio::time::timeout(Duration::from_secs(30), dev.child.wait())
        .await
        .expect("the supervisor exited in time")
        .expect("status");
    assert!(status.success(), "{status:?}");
    for pid in pids {
        assert!(!alive(pid), "region pid {pid} outlived the supervisor");
    }

    // The next run finds its ports and sled locks free. Then kill -9 of the
    // supervisor itself: its regions follow it (no orphans).
    let dev = Supervisor::start(dir.path(), http, peer, &["--no-restart"]).await;
    for i in 0..3 {
        wait_until("every region healthy on the second run", || {
            healthy(http + i)
        })
        .await;
    }
    let pids: Vec<u32> = dev.pids.values().copied().collect();
    let mut child = dev.child;
    child.start_kill().expect("SIGKILL");
    let _ = child.wait().await;
    wait_until("every region gone after the supervisor's kill -9", || {
        let pids = pids.clone();
        async move { pids.iter().all(|&p| !alive(p)) }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_no_restart_a_dead_region_stays_down_and_the_rest_serve() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (http, peer) = free_ports();
    let mut dev = Supervisor::start(dir.path(), http, peer, &["--no-restart"]).await;
    for i in 0..3 {
        wait_until("every region healthy", || healthy(http + i)).await;
    }
    let victim = dev.pids[&3];
    std::process::Command::new("kill")
        .args(["-KILL", &victim.to_string()])
        .status()
        .expect("kill");
    let line = dev.line_containing("region 3 exited").await;
    assert!(line.contains("not restarting"), "{line}");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(!healthy(http + 2).await, "region 3 came back");
    assert!(healthy(http).await && healthy(http + 1).await);
    std::process::Command::new("kill")
        .args(["-INT", &dev.child.id().expect("running").to_string()])
        .status()
        .expect("kill");
    let status = tokio::time::timeout(Duration::from_secs(30), dev.child.wait())
        .await
        .expect("exited in time")
        .expect("status");
    assert!(status.success(), "{status:?}");
}
