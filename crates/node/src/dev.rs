//! `maas dev --regions N`: several regions on loopback, one process each.
//!
//! Region `i` serves HTTP on `http_port + i - 1` and QUIC on
//! `peer_port + i - 1`, keeps its data in `<dir>/region-i`, and joins through
//! every other region. One dev CA in `<dir>/tls` signs every node's
//! certificate. Ctrl-C reaches every process (they share the terminal's
//! process group); each stops cleanly, keeping its rights for the next run.

use crate::certs;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, ExitCode};
use std::time::{Duration, Instant};

/// Starts the regions and waits for them to stop.
pub fn run(regions: u16, http_port: u16, peer_port: u16, dir: &Path) -> ExitCode {
    match start(regions, http_port, peer_port, dir) {
        Ok(children) => wait(children),
        Err(e) => {
            eprintln!("maas dev: {e}");
            ExitCode::FAILURE
        }
    }
}

fn start(regions: u16, http_port: u16, peer_port: u16, dir: &Path) -> Result<Vec<Child>, String> {
    let exe = std::env::current_exe().map_err(|e| format!("finding our own binary: {e}"))?;
    let port = |base: u16, i: u16| {
        base.checked_add(i - 1)
            .ok_or_else(|| format!("port {base} + {i} is out of range"))
    };
    let peer = |i: u16| port(peer_port, i).map(|p| SocketAddr::from(([127, 0, 0, 1], p)));
    let genesis: Vec<String> = (1..=regions).map(|i| i.to_string()).collect();
    let mut children = Vec::new();
    for i in 1..=regions {
        let tls = certs::ensure_node(&dir.join("tls"), &format!("region-{i}"))
            .map_err(|e| e.to_string())?;
        let seeds: Vec<String> = (1..=regions)
            .filter(|&j| j != i)
            .map(|j| peer(j).map(|a| a.to_string()))
            .collect::<Result<_, _>>()?;
        let mut command = Command::new(&exe);
        command
            .arg("--region")
            .arg(i.to_string())
            .arg("--listen")
            .arg(SocketAddr::from(([127, 0, 0, 1], port(http_port, i)?)).to_string())
            .arg("--peer-listen")
            .arg(peer(i)?.to_string())
            .arg("--data-dir")
            .arg(dir.join(format!("region-{i}")))
            .arg("--genesis-regions")
            .arg(genesis.join(","))
            .arg("--tls-ca")
            .arg(&tls.ca)
            .arg("--tls-cert")
            .arg(&tls.cert)
            .arg("--tls-key")
            .arg(&tls.key)
            .arg("--stay-on-shutdown");
        if !seeds.is_empty() {
            command.arg("--join").arg(seeds.join(","));
        }
        let child = command
            .spawn()
            .map_err(|e| format!("starting region {i}: {e}"))?;
        children.push(child);
    }
    Ok(children)
}

/// Waits until every region has exited; if one fails, stops the rest.
fn wait(mut children: Vec<Child>) -> ExitCode {
    let mut failed = false;
    let mut failed_at: Option<Instant> = None;
    while !children.is_empty() {
        children.retain_mut(|child| match child.try_wait() {
            Ok(Some(status)) => {
                failed |= !status.success();
                false
            }
            Ok(None) => true,
            Err(_) => false,
        });
        if failed && failed_at.is_none() {
            eprintln!("maas dev: a region failed; stopping the others");
            failed_at = Some(Instant::now());
        }
        if failed_at.is_some_and(|t| t.elapsed() > Duration::from_secs(1)) {
            for child in &mut children {
                let _ = child.kill();
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
