//! `maas dev --regions N`: several regions on loopback, one process each, under
//! a supervisor.
//!
//! Region `i` serves HTTP on `http_port + i - 1` and QUIC on
//! `peer_port + i - 1`, keeps its data in `<dir>/region-i`, and joins through
//! every other region. One dev CA in `<dir>/tls` signs every node's
//! certificate.
//!
//! The demo exists to show a region dying while the others serve, so the
//! supervisor:
//! - keeps the other regions running when one dies, says so, and restarts the
//!   dead one on its own data after a second (not with `--no-restart`; and it
//!   gives up on a region that dies five times in a minute);
//! - forwards SIGTERM and SIGINT to every region and waits for them (SIGKILL
//!   after [`STOP_GRACE`]), so the next `maas dev` finds its ports and sled
//!   locks free;
//! - leaves no orphan: each region asks the kernel for SIGTERM when the
//!   supervisor dies, even by `kill -9` (`--exit-with-parent`).
//!
//! Regions run with `--stay-on-shutdown`: they keep their rights for the next
//! run instead of handing them over.

use crate::shell::certs;
use rustix::process::{Pid, Signal, kill_process};
use std::collections::VecDeque;
use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;
use tokio::process::{Child, Command};
use tokio::signal::unix::{SignalKind, signal};
use tokio::time::Instant;

/// How long regions get to stop after SIGTERM before they are killed.
pub(crate) const STOP_GRACE: Duration = Duration::from_secs(15);

/// How long after a region died it is started again.
const RESTART_AFTER: Duration = Duration::from_secs(1);

/// A region that dies this often within [`RESTART_WINDOW`] is left down.
const MAX_RESTARTS: usize = 5;
const RESTART_WINDOW: Duration = Duration::from_secs(60);

/// What `maas dev` was asked to run.
#[derive(Clone, Debug)]
pub(crate) struct DevCluster {
    /// How many regions.
    pub regions: u16,
    /// HTTP port of region 1.
    pub http_port: u16,
    /// QUIC port of region 1.
    pub peer_port: u16,
    /// Data and certificates.
    pub dir: PathBuf,
    /// Restart a region that dies.
    pub restart: bool,
}

/// One supervised region.
struct Region {
    index: u16,
    args: Vec<OsString>,
    http: SocketAddr,
    child: Option<Child>,
    /// When it was last started again, within the restart window.
    restarts: VecDeque<Instant>,
    /// It died; start it again at this time.
    restart_at: Option<Instant>,
}

impl Region {
    fn spawn(&mut self, exe: &Path) -> Result<u32, String> {
        let child = Command::new(exe)
            .args(&self.args)
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("starting region {}: {e}", self.index))?;
        let pid = child.id().unwrap_or(0);
        self.child = Some(child);
        Ok(pid)
    }
}

/// Runs the regions until SIGTERM or SIGINT; returns the exit code.
pub(crate) fn run(cluster: &DevCluster) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return fail(&format!("cannot start the runtime: {e}")),
    };
    match runtime.block_on(supervise(cluster)) {
        Ok(code) => code,
        Err(e) => fail(&e),
    }
}

fn fail(message: &str) -> ExitCode {
    say(message);
    ExitCode::FAILURE
}

/// One line on stdout, where the regions' banners go too.
fn say(message: &str) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "maas dev: {message}");
    let _ = out.flush();
}

fn plan(cluster: &DevCluster) -> Result<Vec<Region>, String> {
    let port = |base: u16, i: u16| {
        base.checked_add(i - 1)
            .ok_or_else(|| format!("port {base} + {i} is out of range"))
    };
    let peer = |i: u16| port(cluster.peer_port, i).map(|p| SocketAddr::from(([127, 0, 0, 1], p)));
    let genesis: Vec<String> = (1..=cluster.regions).map(|i| i.to_string()).collect();
    let mut regions = Vec::new();
    for i in 1..=cluster.regions {
        let tls = certs::ensure_node(&cluster.dir.join("tls"), &format!("region-{i}"))
            .map_err(|e| e.to_string())?;
        let seeds: Vec<String> = (1..=cluster.regions)
            .filter(|&j| j != i)
            .map(|j| peer(j).map(|a| a.to_string()))
            .collect::<Result<_, _>>()?;
        let http = SocketAddr::from(([127, 0, 0, 1], port(cluster.http_port, i)?));
        let mut args: Vec<OsString> = vec![
            "--region".into(),
            i.to_string().into(),
            "--listen".into(),
            http.to_string().into(),
            "--peer-listen".into(),
            peer(i)?.to_string().into(),
            "--data-dir".into(),
            cluster.dir.join(format!("region-{i}")).into(),
            "--genesis-regions".into(),
            genesis.join(",").into(),
            "--tls-ca".into(),
            tls.ca.into(),
            "--tls-cert".into(),
            tls.cert.into(),
            "--tls-key".into(),
            tls.key.into(),
            "--stay-on-shutdown".into(),
            "--exit-with-parent".into(),
        ];
        if !seeds.is_empty() {
            args.push("--join".into());
            args.push(seeds.join(",").into());
        }
        regions.push(Region {
            index: i,
            args,
            http,
            child: None,
            restarts: VecDeque::new(),
            restart_at: None,
        });
    }
    Ok(regions)
}

async fn supervise(cluster: &DevCluster) -> Result<ExitCode, String> {
    let exe = std::env::current_exe().map_err(|e| format!("finding our own binary: {e}"))?;
    let mut term = signal(SignalKind::terminate()).map_err(|e| e.to_string())?;
    let mut int = signal(SignalKind::interrupt()).map_err(|e| e.to_string())?;
    let mut regions = plan(cluster)?;
    for region in &mut regions {
        let pid = region.spawn(&exe)?;
        say(&format!(
            "region {} pid {pid} http://{}",
            region.index, region.http
        ));
    }
    let mut every = tokio::time::interval(Duration::from_millis(100));
    let stopped_by = loop {
        tokio::select! {
            _ = term.recv() => break "SIGTERM",
            _ = int.recv() => break "SIGINT",
            _ = every.tick() => {}
        }
        let now = Instant::now();
        for region in &mut regions {
            watch(region, &exe, cluster.restart, now);
        }
        if regions
            .iter()
            .all(|r| r.child.is_none() && r.restart_at.is_none())
        {
            say("every region is down; stopping");
            return Ok(ExitCode::FAILURE);
        }
    };
    say(&format!("{stopped_by}: stopping every region"));
    Ok(stop_all(&mut regions).await)
}

/// Notices a region's death and restarts it when due.
fn watch(region: &mut Region, exe: &Path, restart: bool, now: Instant) {
    if let Some(child) = &mut region.child
        && let Ok(Some(status)) = child.try_wait()
    {
        region.child = None;
        while region
            .restarts
            .front()
            .is_some_and(|t| now.duration_since(*t) > RESTART_WINDOW)
        {
            region.restarts.pop_front();
        }
        let verdict = if !restart {
            "not restarting it (--no-restart)".to_owned()
        } else if region.restarts.len() >= MAX_RESTARTS {
            format!("it died {MAX_RESTARTS} times within {RESTART_WINDOW:?}; leaving it down")
        } else {
            region.restart_at = Some(now + RESTART_AFTER);
            format!("restarting it on its own data in {RESTART_AFTER:?}")
        };
        say(&format!(
            "region {} exited ({status}); the other regions keep serving; {verdict}",
            region.index
        ));
    }
    if region.restart_at.is_some_and(|t| now >= t) {
        region.restart_at = None;
        region.restarts.push_back(now);
        match region.spawn(exe) {
            Ok(pid) => say(&format!(
                "region {} restarted, pid {pid} http://{}",
                region.index, region.http
            )),
            Err(e) => say(&e),
        }
    }
}

/// SIGTERM to every region, then waits (SIGKILL after [`STOP_GRACE`]).
async fn stop_all(regions: &mut [Region]) -> ExitCode {
    for region in regions.iter() {
        if let Some(pid) = region
            .child
            .as_ref()
            .and_then(Child::id)
            .and_then(|id| Pid::from_raw(i32::try_from(id).ok()?))
        {
            let _ = kill_process(pid, Signal::TERM);
        }
    }
    let deadline = Instant::now() + STOP_GRACE;
    let mut clean = true;
    for region in regions.iter_mut() {
        let Some(child) = &mut region.child else {
            continue;
        };
        match tokio::time::timeout_at(deadline, child.wait()).await {
            Ok(Ok(status)) => {
                clean &= status.success();
                say(&format!("region {} stopped ({status})", region.index));
            }
            _ => {
                clean = false;
                let _ = child.kill().await;
                say(&format!(
                    "region {} did not stop within {STOP_GRACE:?}; killed",
                    region.index
                ));
            }
        }
    }
    if clean {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// For a region started by `maas dev`: exit (through the usual SIGTERM path)
/// when the supervisor dies, whatever killed it.
pub(crate) fn exit_with_parent() -> Result<(), String> {
    rustix::process::set_parent_process_death_signal(Some(Signal::TERM))
        .map_err(|e| format!("asking for a signal on the supervisor's death: {e}"))?;
    // The supervisor may have died before the request above took effect.
    if rustix::process::getppid().is_none_or(|p| p.as_raw_nonzero().get() == 1) {
        return Err("the supervisor is already gone".into());
    }
    Ok(())
}
