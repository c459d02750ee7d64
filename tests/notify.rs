//! Low-balance notifications from a real node to a receiver on loopback that
//! fails, times out, goes away and comes back; the node is killed and
//! restarted in between.

mod support;

use std::collections::{BTreeSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use support::{Node, token};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

const SECRET: &str = "notify-secret-for-the-tests-0123456789";

/// What the receiver does with the next request.
#[derive(Clone, Copy, Debug)]
enum Behaviour {
    Fail,
    /// Answers only after the node's attempt has timed out.
    Hang,
    Take,
}

/// Events the receiver took, and what it will do next.
#[derive(Default)]
struct Inbox {
    script: VecDeque<Behaviour>,
    attempts: usize,
    taken: Vec<serde_json::Value>,
}

/// A receiver on `port`, until the returned handle is aborted.
async fn receiver(port: u16, inbox: Arc<Mutex<Inbox>>) -> tokio::task::JoinHandle<()> {
    let listener = TcpListener::bind(("127.0.0.1", port)).await.expect("bind");
    tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                return;
            };
            let inbox = inbox.clone();
            tokio::spawn(async move {
                let mut raw = Vec::new();
                let mut buf = [0u8; 4096];
                let (head, body) = loop {
                    let Ok(n) = stream.read(&mut buf).await else {
                        return;
                    };
                    if n == 0 {
                        return;
                    }
                    raw.extend_from_slice(&buf[..n]);
                    let Some(split) = raw.windows(4).position(|w| w == b"\r\n\r\n") else {
                        continue;
                    };
                    let head = String::from_utf8_lossy(&raw[..split]).to_lowercase();
                    let length: usize = head
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length: "))
                        .and_then(|v| v.trim().parse().ok())
                        .unwrap_or(0);
                    if raw.len() >= split + 4 + length {
                        break (head, raw[split + 4..split + 4 + length].to_vec());
                    }
                };
                let behaviour = {
                    let mut inbox = inbox.lock().unwrap();
                    inbox.attempts += 1;
                    inbox.script.pop_front().unwrap_or(Behaviour::Take)
                };
                let status = match behaviour {
                    Behaviour::Fail => "500 Internal Server Error",
                    Behaviour::Hang => {
                        tokio::time::sleep(Duration::from_secs(8)).await;
                        "200 OK"
                    }
                    Behaviour::Take => {
                        let signature = head
                            .lines()
                            .find_map(|l| l.strip_prefix("maas-signature: "))
                            .unwrap_or_default()
                            .to_owned();
                        let t: u64 = signature
                            .split(',')
                            .find_map(|p| p.strip_prefix("t="))
                            .and_then(|t| t.parse().ok())
                            .unwrap_or(0);
                        let expected = maas_node::sign_webhook(SECRET.as_bytes(), t, &body);
                        assert_eq!(signature, expected, "signed with the notify secret");
                        let event: serde_json::Value = serde_json::from_slice(&body).unwrap();
                        inbox.lock().unwrap().taken.push(event);
                        "200 OK"
                    }
                };
                let answer =
                    format!("HTTP/1.1 {status}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
                let _ = stream.write_all(answer.as_bytes()).await;
            });
        }
    })
}

/// Distinct event ids taken, by type.
fn taken(inbox: &Mutex<Inbox>, kind: &str) -> BTreeSet<String> {
    inbox
        .lock()
        .unwrap()
        .taken
        .iter()
        .filter(|e| e["type"] == kind)
        .map(|e| e["id"].as_str().unwrap().to_owned())
        .collect()
}

async fn until(within: Duration, what: &str, mut check: impl FnMut() -> bool) {
    let start = Instant::now();
    while !check() {
        assert!(start.elapsed() < within, "not within {within:?}: {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_event_per_crossing_reaches_a_flaky_receiver_across_restarts() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let inbox = Arc::new(Mutex::new(Inbox::default()));
    inbox
        .lock()
        .unwrap()
        .script
        .extend([Behaviour::Fail, Behaviour::Hang, Behaviour::Fail]);
    let running = receiver(port, inbox.clone()).await;
    let url = format!("http://127.0.0.1:{port}/hook");
    let args = [
        "--notify-url",
        url.as_str(),
        "--notify-secret",
        SECRET,
        "--low-balance-threshold",
        "145",
        "--rate-limit",
        "0",
    ];
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(dir.path(), &args).await;
    let user = "low-user";
    // 150 → 144: one crossing (145 → 144), not one event per spend.
    for _ in 0..6 {
        assert_eq!(
            node.get("/memes?query=cats", &token(user)).await.status,
            200
        );
    }
    until(
        Duration::from_secs(30),
        "the low-balance event arrives",
        || !taken(&inbox, "balance.low").is_empty(),
    )
    .await;
    assert!(
        inbox.lock().unwrap().attempts >= 4,
        "it failed, hung, failed, then was taken"
    );
    let event = inbox.lock().unwrap().taken[0].clone();
    assert_eq!(event["user_id"], user);
    assert_eq!(event["balance"], 144);
    assert_eq!(event["threshold"], 145);
    for _ in 0..2 {
        assert_eq!(
            node.get("/memes?query=cats", &token(user)).await.status,
            200
        );
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(taken(&inbox, "balance.low").len(), 1, "still one crossing");

    // The receiver goes away; the balance recovers; the node is killed
    // before the event could be delivered, and restarts on its data.
    running.abort();
    let _ = running.await;
    assert_eq!(node.adjust(user, 10).await.status, 200);
    tokio::time::sleep(Duration::from_millis(500)).await;
    node.kill9().await;
    assert!(taken(&inbox, "balance.recovered").is_empty());
    let node = Node::start(dir.path(), &args).await;
    let _running = receiver(port, inbox.clone()).await;
    until(
        Duration::from_secs(30),
        "the recovery event arrives after both restarts",
        || !taken(&inbox, "balance.recovered").is_empty(),
    )
    .await;
    let recovered: Vec<_> = inbox
        .lock()
        .unwrap()
        .taken
        .iter()
        .filter(|e| e["type"] == "balance.recovered")
        .cloned()
        .collect();
    assert_eq!(recovered[0]["balance"], 152);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(taken(&inbox, "balance.recovered").len(), 1);
    assert_eq!(taken(&inbox, "balance.low").len(), 1);
    node.terminate().await;
}
