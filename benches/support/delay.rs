//! A TCP proxy that adds a one-way delay to every byte, in both directions, and
//! keeps their order: a remote region's link to the primary's database.

use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

/// Listens on 127.0.0.1 and relays every connection to `target`, each direction
/// `one_way` late. Returns the address to connect to; runs until the runtime ends.
pub async fn tcp_delay_proxy(target: SocketAddr, one_way: Duration) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
    let addr = listener.local_addr().expect("proxy addr");
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let Ok(upstream) = TcpStream::connect(target).await else {
                continue;
            };
            let _ = (client.set_nodelay(true), upstream.set_nodelay(true));
            let (client_read, client_write) = client.into_split();
            let (upstream_read, upstream_write) = upstream.into_split();
            pipe(client_read, upstream_write, one_way);
            pipe(upstream_read, client_write, one_way);
        }
    });
    addr
}

/// Reads chunks as they come and writes each `delay` after it was read.
fn pipe(mut from: OwnedReadHalf, mut to: OwnedWriteHalf, delay: Duration) {
    let (tx, mut rx) = mpsc::unbounded_channel::<(tokio::time::Instant, Vec<u8>)>();
    tokio::spawn(async move {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match from.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    let due = tokio::time::Instant::now() + delay;
                    if tx.send((due, buf[..n].to_vec())).is_err() {
                        return;
                    }
                }
            }
        }
    });
    tokio::spawn(async move {
        while let Some((due, bytes)) = rx.recv().await {
            tokio::time::sleep_until(due).await;
            if to.write_all(&bytes).await.is_err() {
                return;
            }
        }
        let _ = to.shutdown().await;
    });
}

/// Why the delay cannot come from the kernel here (`tc netem` on a veth pair
/// in a network namespace), or `None` if it could. Probed with a throwaway
/// namespace holding a veth pair, removed whatever happens.
///
/// Kernel delay would cost no userspace CPU, where the proxies share the two
/// cores with what they measure; but a kernel built without `sch_netem`
/// (this VM's: `CONFIG_NET_SCH_NETEM` is not set) cannot delay a packet at
/// all, so the benches fall back to the proxies and say so.
pub fn netem_unavailable() -> Option<String> {
    let ns = format!("maas-bench-probe-{}", std::process::id());
    let run = |args: &[&str]| -> Result<(), String> {
        let out = std::process::Command::new(args[0])
            .args(&args[1..])
            .output()
            .map_err(|e| format!("{}: {e}", args[0]))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(format!(
                "`{}`: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            ))
        }
    };
    let probe = || -> Result<(), String> {
        run(&["ip", "netns", "add", &ns])?;
        run(&[
            "ip", "-n", &ns, "link", "add", "probe0", "type", "veth", "peer", "name", "probe1",
        ])?;
        run(&[
            "tc", "-n", &ns, "qdisc", "add", "dev", "probe0", "root", "netem", "delay", "50ms",
        ])
    };
    let result = probe();
    let _ = run(&["ip", "netns", "del", &ns]);
    result.err()
}
