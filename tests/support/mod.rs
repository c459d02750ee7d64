//! Test harness: runs the real `maas` binary on an ephemeral loopback port with a
//! fresh sled directory, and talks to it with a minimal HTTP/1.1 client.

#![allow(dead_code, unreachable_pub)]

pub mod proxy;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};

/// The HS256 secret every test node verifies client tokens with.
pub const SECRET: &str = "test-secret-for-integration-tests";
/// The operator credential of every test node.
pub const OPERATOR: &str = "test-operator-credential-0123456789";
/// The billing webhook secret of every test node.
pub const WEBHOOK_SECRET: &str = "test-billing-webhook-secret-0123456789";

/// A running `maas` process.
pub struct Node {
    child: Child,
    /// `127.0.0.1:port`.
    pub addr: String,
    /// Where its QUIC endpoint really listens, if it runs one.
    pub peer: Option<std::net::SocketAddr>,
    dir: PathBuf,
}

impl Node {
    /// Starts a node on a fresh port with its data in `dir`, the test
    /// credentials, plus `extra` flags.
    pub async fn start(dir: &Path, extra: &[&str]) -> Node {
        Node::start_logged(dir, extra, Stdio::inherit()).await
    }

    /// Like [`Node::start`], with the node's stderr (its log) going to
    /// `stderr`.
    pub async fn start_logged(dir: &Path, extra: &[&str], stderr: Stdio) -> Node {
        let mut args = vec![
            "--jwt-secret",
            SECRET,
            "--operator-token",
            OPERATOR,
            "--billing-webhook-secret",
            WEBHOOK_SECRET,
        ];
        args.extend_from_slice(extra);
        Node::start_logging_to(dir, &args, stderr).await
    }

    /// Starts a node on a fresh port with its data in `dir` and only `extra`
    /// flags (no credentials unless they are among them).
    pub async fn start_bare(dir: &Path, extra: &[&str]) -> Node {
        Node::start_logging_to(dir, extra, Stdio::inherit()).await
    }

    /// Like [`Node::start_bare`], with the node's stderr going to `stderr`.
    pub async fn start_logging_to(dir: &Path, extra: &[&str], stderr: Stdio) -> Node {
        let mut child = maas()
            .args(["--listen", "127.0.0.1:0"])
            .arg("--data-dir")
            .arg(dir)
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(stderr)
            .kill_on_drop(true)
            .spawn()
            .expect("spawn maas");
        let stdout = child.stdout.take().expect("stdout");
        let mut lines = BufReader::new(stdout).lines();
        let first = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
            .await
            .expect("maas printed its address in time")
            .expect("read stdout")
            .expect("a first line");
        let addr = first
            .split("http://")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .expect("address in the first line")
            .to_owned();
        let mut peer = None;
        if extra.contains(&"--peer-listen") {
            let second = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
                .await
                .expect("maas printed its peer address in time")
                .expect("read stdout")
                .expect("a second line");
            peer = second
                .split("quic://")
                .nth(1)
                .and_then(|a| a.trim().parse().ok());
            assert!(peer.is_some(), "peer address in {second:?}");
        }
        // Keep draining stdout so the child never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Node {
            child,
            addr,
            peer,
            dir: dir.to_owned(),
        }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id().expect("running")
    }

    /// `kill -9`: no chance to flush or drain.
    pub async fn kill9(mut self) {
        self.child.start_kill().expect("SIGKILL");
        let _ = self.child.wait().await;
    }

    /// SIGTERM, then the exit status.
    pub async fn terminate(self) -> std::process::ExitStatus {
        self.terminate_within(Duration::from_secs(20)).await
    }

    /// SIGTERM, then the exit status, which must come within `limit`.
    pub async fn terminate_within(mut self, limit: Duration) -> std::process::ExitStatus {
        let status = std::process::Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success());
        tokio::time::timeout(limit, self.child.wait())
            .await
            .expect("exited in time")
            .expect("exit status")
    }

    /// Sends one request.
    pub async fn send(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &str,
    ) -> Response {
        request(&self.addr, method, path, headers, body)
            .await
            .expect("request completed")
    }

    /// `GET` with a bearer credential.
    pub async fn get(&self, path: &str, bearer: &str) -> Response {
        let auth = format!("Bearer {bearer}");
        self.send("GET", path, &[("authorization", &auth)], "")
            .await
    }

    /// `POST` JSON with a bearer credential.
    pub async fn post(&self, path: &str, bearer: &str, body: &str) -> Response {
        let auth = format!("Bearer {bearer}");
        self.send(
            "POST",
            path,
            &[
                ("authorization", &auth),
                ("content-type", "application/json"),
            ],
            body,
        )
        .await
    }

    /// An operator's balance adjustment through the seed API.
    pub async fn adjust(&self, user: &str, amount: i64) -> Response {
        let body = format!(r#"{{"user_id":"{user}","amount":{amount}}}"#);
        self.post("/update-token-balance", OPERATOR, &body).await
    }

    /// The user's balance, as the operator sees it.
    pub async fn balance(&self, user: &str) -> u64 {
        let r = self.get(&format!("/v1/users/{user}"), OPERATOR).await;
        assert_eq!(r.status, 200, "{}", r.body);
        r.json()["balance"].as_u64().expect("balance")
    }

    /// The user's balance, or `None` if this region never saw the user (404).
    pub async fn balance_if_seen(&self, user: &str) -> Option<u64> {
        let r = self.get(&format!("/v1/users/{user}"), OPERATOR).await;
        if r.status == 404 {
            r.assert_problem(404, "user-not-found");
            return None;
        }
        assert_eq!(r.status, 200, "{}", r.body);
        Some(r.json()["balance"].as_u64().expect("balance"))
    }

    /// Posts a billing event signed at `t` (unix seconds) with `secret`.
    pub async fn billing_event(&self, body: &str, t: u64, secret: &str) -> Response {
        let signature = maas_node::sign_webhook(secret.as_bytes(), t, body.as_bytes());
        self.send(
            "POST",
            "/v1/webhooks/billing",
            &[
                ("maas-signature", &signature),
                ("content-type", "application/json"),
            ],
            body,
        )
        .await
    }

    /// The data directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

/// The `maas` binary with no `MAAS_*` variable inherited, logging warnings.
pub fn maas() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_maas"));
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("MAAS_") {
            command.env_remove(name);
        }
    }
    command.env("MAAS_LOG_LEVEL", "warn");
    command
}

/// Runs `maas` with `args` and `env` until it exits (at most 20 s); returns its
/// exit status and what it printed on stderr.
pub async fn run_to_exit(
    args: &[&str],
    env: &[(&str, &str)],
) -> (std::process::ExitStatus, String) {
    let mut command = maas();
    command
        .args(args)
        .envs(env.iter().copied())
        .kill_on_drop(true);
    let output = tokio::time::timeout(Duration::from_secs(20), command.output())
        .await
        .expect("maas exited in time")
        .expect("run maas");
    (
        output.status,
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// A client token for `user`, valid for an hour.
pub fn token(user: &str) -> String {
    let hour = Duration::from_secs(3600);
    maas_node::sign_hs256_valid_for(SECRET.as_bytes(), user, hour).expect("sign")
}

/// A parsed HTTP response.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
    /// The body's bytes as sent (an image, say).
    pub bytes: Vec<u8>,
}

impl Response {
    /// A header's value, by lower-case name.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The body as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }

    /// Asserts this is a problem response of the given status and type.
    pub fn assert_problem(&self, status: u16, kind: &str) {
        assert_eq!(self.status, status, "{}", self.body);
        assert_eq!(
            self.header("content-type"),
            Some("application/problem+json")
        );
        let json = self.json();
        assert_eq!(json["type"], format!("/problems/{kind}"), "{}", self.body);
        assert_eq!(json["status"], status);
        assert!(json["detail"].as_str().is_some_and(|d| !d.is_empty()));
    }
}

/// Seconds since the Unix epoch, now.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs()
}

/// A billing event body.
pub fn billing_body(event: &str, user: &str, until: &str, version: u64) -> String {
    format!(
        r#"{{"id":"{event}","user_id":"{user}","memes_ai_until":"{until}","version":{version}}}"#
    )
}

/// One HTTP/1.1 request on a fresh connection; `Err` if the connection failed.
pub async fn request(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> std::io::Result<Response> {
    let mut stream = TcpStream::connect(addr).await?;
    let mut head = format!("{method} {path} HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\n");
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str(&format!("content-length: {}\r\n\r\n", body.len()));
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body.as_bytes()).await?;
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(30), stream.read_to_end(&mut raw))
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "response timed out"))??;
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| {
            std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "no complete response")
        })?;
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let bytes = raw[split + 4..].to_vec();
    let body = String::from_utf8_lossy(&bytes).into_owned();
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidData, "bad status line"))?;
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    Ok(Response {
        status,
        headers,
        body,
        bytes,
    })
}

/// The value of an unlabelled series `name` in a Prometheus text exposition.
pub fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}
