//! What a hostile operator, a hostile client and a failing disk do to a node:
//! the real `maas` binary, refused configurations, and the answers it gives.

mod support;

use support::{Node, OPERATOR, SECRET, run_to_exit, token};

/// A JWT with arbitrary claims, signed with `secret`.
fn jwt(secret: &str, claims: serde_json::Value) -> String {
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )
    .expect("sign")
}

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs()
}

/// Asserts that `maas` refuses to start with `args`/`env`, saying `why`.
async fn refused(args: &[&str], env: &[(&str, &str)], why: &str) {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().to_str().expect("utf-8 path");
    let mut all = vec!["--listen", "127.0.0.1:0", "--data-dir", data];
    all.extend_from_slice(args);
    let (status, stderr) = run_to_exit(&all, env).await;
    assert!(
        !status.success(),
        "{args:?} {env:?} started; it must be refused"
    );
    assert!(
        stderr.contains(why),
        "{args:?} {env:?}: stderr should say {why:?}, said: {stderr}"
    );
}

#[tokio::test]
async fn weak_or_missing_credentials_are_refused_at_start() {
    let strong_op = ["--operator-token", OPERATOR];
    // A short or empty HS256 secret, by flag or by environment.
    for secret in ["", "x", &"s".repeat(31)] {
        let mut args = vec!["--jwt-secret", secret];
        args.extend_from_slice(&strong_op);
        refused(&args, &[], "at least 32 bytes").await;
        refused(
            &strong_op,
            &[("MAAS_JWT_SECRET", secret)],
            "at least 32 bytes",
        )
        .await;
    }
    // A blank or short operator token.
    for op in ["", "                       ", "short"] {
        refused(
            &["--jwt-secret", SECRET, "--operator-token", op],
            &[],
            "--operator-token must be at least 16",
        )
        .await;
    }
    // Half-configured: the missing flag is named.
    refused(
        &["--jwt-secret", SECRET],
        &[],
        "--operator-token is required",
    )
    .await;
    refused(
        &strong_op,
        &[],
        "--jwt-secret or --jwt-public-key is required",
    )
    .await;
    refused(
        &["--jwt-audience", "maas"],
        &[],
        "--jwt-secret or --jwt-public-key is required",
    )
    .await;
}

#[tokio::test]
async fn configuration_that_cannot_be_right_is_refused() {
    let creds = ["--jwt-secret", SECRET, "--operator-token", OPERATOR];
    let with = |extra: &[&'static str]| {
        let mut v = creds.to_vec();
        v.extend_from_slice(extra);
        v
    };
    refused(
        &with(&["--idempotency-ttl-secs", "0"]),
        &[],
        "idempotency-ttl-secs",
    )
    .await;
    refused(&with(&["--meme-cost", "0"]), &[], "meme-cost").await;
    refused(
        &with(&["--region", "2", "--genesis-regions", "1,3"]),
        &[],
        "leaves out this region",
    )
    .await;
    refused(
        &with(&["--jwt-leeway-secs", "3600"]),
        &[],
        "jwt-leeway-secs",
    )
    .await;
    refused(&with(&["--max-body-bytes", "0"]), &[], "max-body-bytes").await;
    refused(
        &with(&["--notify-url", "http://127.0.0.1:9/hook"]),
        &[],
        "notify-secret",
    )
    .await;
    refused(
        &with(&[
            "--notify-url",
            "http://127.0.0.1:9/hook",
            "--notify-secret",
            "short",
        ]),
        &[],
        "at least 32 bytes",
    )
    .await;
    refused(
        &with(&[
            "--notify-url",
            "http://127.0.0.1:9/hook",
            "--notify-secret",
            "a-notify-secret-of-more-than-32-bytes",
            "--statement-retention-days",
            "0",
        ]),
        &[],
        "needs statements",
    )
    .await;
}

#[tokio::test]
async fn the_dev_operator_token_is_dead_once_real_credentials_are_set() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = Node::start(dir.path(), &[]).await;
    node.post(
        "/update-token-balance",
        maas_node::DEV_OPERATOR_TOKEN,
        r#"{"user_id":"mallory","amount":1000}"#,
    )
    .await
    .assert_problem(401, "unauthenticated");
    // A token signed with the dev secret is no one here either.
    let dev = maas_node::sign_hs256_valid_for(
        maas_node::DEV_JWT_SECRET.as_bytes(),
        "mallory",
        std::time::Duration::from_secs(60),
    )
    .expect("sign");
    node.get("/memes", &dev)
        .await
        .assert_problem(401, "unauthenticated");
}

#[tokio::test]
async fn jwt_time_claims_audience_and_issuer_are_checked() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = Node::start(
        dir.path(),
        &[
            "--jwt-audience",
            "maas-api",
            "--jwt-issuer",
            "https://id.example",
            "--jwt-leeway-secs",
            "2",
        ],
    )
    .await;
    let now = now_secs();
    let good = serde_json::json!({
        "sub": "alice", "exp": now + 600, "aud": "maas-api", "iss": "https://id.example"
    });
    let r = node.get("/memes", &jwt(SECRET, good.clone())).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let mut cases = Vec::new();
    for (field, value) in [
        ("aud", serde_json::json!("someone-else")),
        ("iss", serde_json::json!("https://evil.example")),
        ("nbf", serde_json::json!(now + 120)),
        ("exp", serde_json::json!(now - 30)),
    ] {
        let mut claims = good.clone();
        claims[field] = value;
        cases.push((field, claims));
    }
    for field in ["aud", "iss"] {
        let mut claims = good.clone();
        claims.as_object_mut().expect("object").remove(field);
        cases.push((field, claims));
    }
    for (field, claims) in cases {
        let r = node.get("/memes", &jwt(SECRET, claims)).await;
        assert_eq!(r.status, 401, "a bad or missing `{field}` was accepted");
    }
    // Without a configured audience, a plain token still works.
    let plain = tempfile::tempdir().expect("tempdir");
    let node = Node::start(plain.path(), &[]).await;
    let r = node.get("/memes", &token("bob")).await;
    assert_eq!(r.status, 200, "{}", r.body);
}

#[tokio::test]
async fn head_never_spends() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = Node::start(dir.path(), &[]).await;
    let alice = token("alice");
    let auth = format!("Bearer {alice}");
    for path in ["/memes", "/v1/memes", "/memes?query=cats"] {
        let r = node
            .send("HEAD", path, &[("authorization", &auth)], "")
            .await;
        assert_eq!(r.status, 405, "HEAD {path}");
        assert_eq!(r.header("allow"), Some("GET"));
    }
    // Another method's 405 names only GET too: HEAD is refused here.
    for path in ["/memes", "/v1/memes"] {
        for method in ["POST", "PUT", "DELETE", "PATCH"] {
            let r = node
                .send(method, path, &[("authorization", &auth)], "")
                .await;
            r.assert_problem(405, "method-not-allowed");
            assert_eq!(r.header("allow"), Some("GET"), "{method} {path}");
        }
    }
    let r = node.get("/v1/balance", &alice).await;
    assert_eq!(r.json()["balance"], 150, "a HEAD spent: {}", r.body);
    assert_eq!(r.json()["calls"], 0);
}

#[tokio::test]
async fn an_operator_lookup_of_an_unknown_user_is_404() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = Node::start(dir.path(), &[]).await;
    node.get("/v1/users/no-such-user", OPERATOR)
        .await
        .assert_problem(404, "user-not-found");
    // Once seen (a spend), the user is there.
    assert_eq!(node.get("/memes", &token("carol")).await.status, 200);
    assert_eq!(node.balance("carol").await, 149);
    // A user's own balance route shows the welcome grant to a new user.
    let r = node.get("/v1/balance", &token("dave")).await;
    assert_eq!(r.json()["balance"], 150, "{}", r.body);
}

/// A tmpfs of a given size mounted on a fresh directory, unmounted on drop.
struct SmallDisk {
    dir: tempfile::TempDir,
}

impl SmallDisk {
    fn mount(size: &str) -> SmallDisk {
        let dir = tempfile::tempdir().expect("tempdir");
        let ok = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .status()
            .expect("run mount");
        assert!(
            ok.success(),
            "mounting a tmpfs failed: this test needs root (CI runs as root)"
        );
        SmallDisk { dir }
    }

    fn resize(&self, size: &str) {
        let ok = std::process::Command::new("mount")
            .args(["-o", &format!("remount,size={size}")])
            .arg(self.dir.path())
            .status()
            .expect("run mount");
        assert!(ok.success(), "remount");
    }

    /// KiB in use.
    fn used_kib(&self) -> u64 {
        let out = std::process::Command::new("df")
            .args(["--output=used", "-k"])
            .arg(self.dir.path())
            .output()
            .expect("run df");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .nth(1)
            .and_then(|l| l.trim().parse().ok())
            .expect("df's figure")
    }

    fn data(&self) -> std::path::PathBuf {
        self.dir.path().join("data")
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

/// Credits 5 tokens to `count` new users with long ids, `width` at a time;
/// returns (users acknowledged, statuses seen). Every answer must come (a
/// request that hangs fails the test through the client's timeout).
async fn credit_many(node: &Node, from: usize, count: usize) -> (Vec<String>, Vec<u16>) {
    let mut acked = Vec::new();
    let mut statuses = Vec::new();
    for chunk in (from..from + count).collect::<Vec<_>>().chunks(16) {
        let mut tasks = Vec::new();
        for &i in chunk {
            let addr = node.addr.clone();
            let user = format!("user-{i:06}-{}", "x".repeat(100));
            tasks.push(tokio::spawn(async move {
                let body = format!(r#"{{"user_id":"{user}","amount":5}}"#);
                let auth = format!("Bearer {OPERATOR}");
                let r = support::request(
                    &addr,
                    "POST",
                    "/update-token-balance",
                    &[
                        ("authorization", &auth),
                        ("content-type", "application/json"),
                    ],
                    &body,
                )
                .await
                .expect("every request is answered");
                (user, r)
            }));
        }
        for task in tasks {
            let (user, r) = task.await.expect("task");
            if r.status == 200 {
                acked.push(user);
            } else {
                r.assert_problem(503, "unavailable");
            }
            statuses.push(r.status);
        }
        if statuses.iter().filter(|&&s| s == 503).count() >= 64 {
            break;
        }
    }
    (acked, statuses)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_and_a_dead_log_fail_writes_cleanly_and_recover_without_restart() {
    let disk = SmallDisk::mount("2m");
    let dev_full = std::fs::File::options()
        .write(true)
        .open("/dev/full")
        .expect("/dev/full");
    let data = disk.data();
    let node = Node::start_logged(&data, &["--log-level", "info"], dev_full.into()).await;
    // A user written while the disk had room.
    assert_eq!(node.get("/memes", &token("early")).await.status, 200);

    // Fill the disk: writes start failing with 503, never hanging.
    let (mut acked, statuses) = credit_many(&node, 0, 20_000).await;
    assert!(
        statuses.iter().filter(|&&s| s == 503).count() >= 64,
        "the disk never filled: {} writes acknowledged",
        acked.len()
    );
    node.send("GET", "/ready", &[], "")
        .await
        .assert_problem(503, "unavailable");
    let health = node.send("GET", "/health", &[], "").await;
    assert_eq!(health.status, 200, "the process and its commit thread live");
    assert_eq!(health.json()["storage"], "failing");
    assert_eq!(health.json()["commit_thread"], "alive");
    // A spend is refused with a problem, and nothing is charged.
    node.get("/memes", &token("early"))
        .await
        .assert_problem(503, "unavailable");
    // Reads that need no write keep working.
    assert_eq!(node.balance("early").await, 149);

    // Free space: the node recovers by itself.
    disk.resize("64m");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let r = node.send("GET", "/ready", &[], "").await;
        if r.status == 200 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "not ready 20 s after space was freed: {}",
            r.body
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let r = node.get("/memes", &token("early")).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        r.json()["balance"],
        148,
        "the refused spend was not charged"
    );
    let (more, _) = credit_many(&node, 100_000, 32).await;
    assert_eq!(more.len(), 32, "writes work again");
    acked.extend(more);

    // Shut down cleanly, restart on the same disk: nothing acknowledged is lost.
    let status = node.terminate().await;
    assert!(status.success(), "{status:?}");
    let node = Node::start(&data, &[]).await;
    for user in acked.iter().step_by(7) {
        assert_eq!(node.balance(user).await, 155, "{user} lost its credit");
    }

    // Fill it again, then SIGTERM while storage fails: a bounded exit whose
    // code says the final flush failed.
    disk.resize(&format!("{}k", disk.used_kib() + 1024));
    let (acked_again, statuses) = credit_many(&node, 200_000, 20_000).await;
    assert!(statuses.contains(&503), "the disk never filled again");
    acked.extend(acked_again);
    let status = node
        .terminate_within(std::time::Duration::from_secs(15))
        .await;
    assert_eq!(status.code(), Some(3), "{status:?}");

    // With room again, a restart on that disk has every acknowledged write.
    disk.resize("64m");
    let node = Node::start(&data, &[]).await;
    for user in &acked {
        assert_eq!(node.balance(user).await, 155, "{user} lost its credit");
    }
}

/// Opens a connection and sends `bytes`, then holds it.
async fn hold(addr: &str, bytes: &[u8]) -> tokio::net::TcpStream {
    use tokio::io::AsyncWriteExt;
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    stream.write_all(bytes).await.expect("write");
    stream
}

/// Reads until the peer closes (or `limit` passes); returns what came.
async fn read_until_closed(
    stream: &mut tokio::net::TcpStream,
    limit: std::time::Duration,
) -> Option<String> {
    use tokio::io::AsyncReadExt;
    let mut raw = Vec::new();
    match tokio::time::timeout(limit, stream.read_to_end(&mut raw)).await {
        Ok(_) => Some(String::from_utf8_lossy(&raw).into_owned()),
        Err(_) => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_and_half_sent_connections_cannot_starve_the_node() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = Node::start(
        dir.path(),
        &[
            "--header-read-timeout-secs",
            "5",
            "--max-connections",
            "300",
        ],
    )
    .await;
    // 400 connections: some idle, some half-sent; 300 fit under the cap. The
    // header timeout is long enough that none of them is closed before the
    // last is open, even on a loaded machine (at 1 s, a busy CI box took
    // longer than that to open 400 and the cap was never reached).
    let mut held = Vec::new();
    for i in 0..400 {
        let bytes: &[u8] = if i % 2 == 0 {
            b""
        } else {
            b"GET /health HTTP/1.1\r\nhost: x\r\nx-slow: "
        };
        held.push(hold(&node.addr, bytes).await);
    }
    // Over the cap: a 503 problem, not a hang. At most 64 connections are
    // being refused at once and the rest are closed unanswered (each holds a
    // descriptor); on a busy machine the 100 refused above can still hold
    // those slots, so a request may be closed unanswered (a reset, or no
    // response) until they drain. Never a hang: each try has 30 s at most.
    let mut tries = 0;
    let r = loop {
        tries += 1;
        match support::request(&node.addr, "GET", "/health", &[], "").await {
            Ok(r) => break r,
            Err(e)
                if tries < 50
                    && matches!(
                        e.kind(),
                        std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::UnexpectedEof
                    ) =>
            {
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
            Err(e) => panic!("not answered after {tries} tries: {e}"),
        }
    };
    r.assert_problem(503, "unavailable");
    // Each held connection is closed by the header timeout; a half-sent one
    // may get a 408-ish close, never a hang.
    for stream in &mut held {
        let closed = read_until_closed(stream, std::time::Duration::from_secs(15)).await;
        assert!(closed.is_some(), "a held connection stayed open");
    }
    let r = support::request(&node.addr, "GET", "/health", &[], "")
        .await
        .expect("answered");
    assert_eq!(r.status, 200, "{}", r.body);
}

#[tokio::test]
async fn metrics_show_the_connections_served_against_the_cap() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = Node::start(dir.path(), &["--max-connections", "50"]).await;
    let mut held = Vec::new();
    for _ in 0..10 {
        held.push(hold(&node.addr, b"").await);
    }
    // Each scrape is a connection of its own; connections closed before it
    // may take a moment to be uncounted, so poll (bounded) for the figure.
    let open_reads = |want: f64| {
        let addr = node.addr.clone();
        async move {
            let mut last = None;
            for _ in 0..100 {
                let text = support::request(&addr, "GET", "/metrics", &[], "")
                    .await
                    .expect("/metrics answered")
                    .body;
                assert_eq!(
                    support::metric(&text, "maas_http_connections_max"),
                    Some(50.0)
                );
                last = support::metric(&text, "maas_http_connections_open");
                if last == Some(want) {
                    return;
                }
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
            panic!("maas_http_connections_open stayed at {last:?}, not {want}");
        }
    };
    // The ten held, and the scrape's own.
    open_reads(11.0).await;
    held.clear();
    open_reads(1.0).await;
}

#[tokio::test]
async fn what_hyper_refuses_on_its_own_is_a_problem_too() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = Node::start(dir.path(), &[]).await;
    // Bad bytes in the request line and in a header.
    for raw in [
        &b"GET /health HTTP/1.1\r\nhost: x\r\nbad header\r\n\r\n"[..],
        b"\x01\x02\x03 / HTTP/1.1\r\n\r\n",
        b"GET /he alth HTTP/1.1\r\nhost: x\r\n\r\n",
    ] {
        let mut s = hold(&node.addr, raw).await;
        let text = read_until_closed(&mut s, std::time::Duration::from_secs(5))
            .await
            .expect("closed");
        assert!(text.starts_with("HTTP/1.1 400"), "{text}");
        assert!(
            text.contains("content-type: application/problem+json"),
            "{text}"
        );
        assert!(
            text.contains(r#""type":"/problems/invalid-request""#),
            "{text}"
        );
    }
    // A huge request target and huge headers: ours, or hyper's beyond ours.
    for (path, header, status, kind) in [
        (
            format!("/memes?query={}", "q".repeat(9_000)),
            String::new(),
            414,
            "uri-too-long",
        ),
        (
            format!("/{}", "p".repeat(70_000)),
            String::new(),
            414,
            "uri-too-long",
        ),
        (
            "/health".to_owned(),
            "h".repeat(20_000),
            431,
            "headers-too-large",
        ),
        (
            "/health".to_owned(),
            "h".repeat(300_000),
            431,
            "headers-too-large",
        ),
    ] {
        let mut head = format!("GET {path} HTTP/1.1\r\nhost: x\r\n");
        if !header.is_empty() {
            head.push_str(&format!("x-big: {header}\r\n"));
        }
        head.push_str("connection: close\r\n\r\n");
        let mut s = hold(&node.addr, head.as_bytes()).await;
        let text = read_until_closed(&mut s, std::time::Duration::from_secs(5))
            .await
            .expect("closed");
        assert!(
            text.starts_with(&format!("HTTP/1.1 {status}")),
            "{}",
            &text[..text.len().min(200)]
        );
        assert!(text.contains("application/problem+json"), "{text}");
        assert!(
            text.contains(&format!(r#""type":"/problems/{kind}""#)),
            "{text}"
        );
    }
}

#[tokio::test]
async fn sigterm_with_a_half_sent_request_exits_within_the_grace() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = Node::start(
        dir.path(),
        &["--shutdown-grace", "1", "--header-read-timeout-secs", "600"],
    )
    .await;
    assert_eq!(node.get("/memes", &token("erin")).await.status, 200);
    // A request whose body never comes, and one whose head never ends.
    let _body = hold(
        &node.addr,
        format!(
            "POST /update-token-balance HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {OPERATOR}\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{{"
        )
        .as_bytes(),
    )
    .await;
    let _head = hold(&node.addr, b"GET /health HTTP/1.1\r\nhost: x\r\n").await;
    let data = node.dir().to_owned();
    let status = node
        .terminate_within(std::time::Duration::from_secs(8))
        .await;
    assert!(status.success(), "{status:?}");
    // And the acknowledged spend survived.
    let node = Node::start(&data, &[]).await;
    assert_eq!(node.balance("erin").await, 149);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_slower_than_the_request_timeout_is_a_408_problem_and_changes_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = Node::start(dir.path(), &["--request-timeout-secs", "1"]).await;
    let head = format!(
        "POST /v1/users/slow/adjustments HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {OPERATOR}\r\n\
         content-type: application/json\r\ncontent-length: 14\r\n\r\n{{\"amount\""
    );
    let mut stream = hold(&node.addr, head.as_bytes()).await;
    let answer = read_until_closed(&mut stream, std::time::Duration::from_secs(10))
        .await
        .expect("answered within the timeout, not held open");
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("application/problem+json"), "{answer}");
    assert!(answer.contains("/problems/request-timeout"), "{answer}");
    // The half-sent credit never happened.
    assert_eq!(node.balance_if_seen("slow").await, None);
}

#[tokio::test]
async fn a_declared_body_over_the_limit_is_refused_before_it_is_read() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = Node::start(dir.path(), &["--max-body-bytes", "1024"]).await;
    // Only the head is sent: the refusal cannot have waited for the body.
    let head = format!(
        "POST /v1/users/big/adjustments HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {OPERATOR}\r\n\
         content-type: application/json\r\ncontent-length: 1000000\r\n\r\n"
    );
    let mut stream = hold(&node.addr, head.as_bytes()).await;
    let answer = read_until_closed(&mut stream, std::time::Duration::from_secs(10))
        .await
        .expect("answered at once");
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains("/problems/payload-too-large"), "{answer}");
}

#[tokio::test]
async fn a_chunked_body_over_the_limit_is_refused_as_it_is_read_and_changes_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = Node::start(dir.path(), &["--max-body-bytes", "1024"]).await;
    // No length to refuse up front: the cap must hold while the body is read.
    let body = format!(r#"{{"amount":5,"pad":"{}"}}"#, "x".repeat(2000));
    let request = format!(
        "POST /v1/users/chunky/adjustments HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {OPERATOR}\r\n\
         content-type: application/json\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n\
         {:x}\r\n{body}\r\n0\r\n\r\n",
        body.len()
    );
    let mut stream = hold(&node.addr, request.as_bytes()).await;
    let answer = read_until_closed(&mut stream, std::time::Duration::from_secs(10))
        .await
        .expect("answered and closed");
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains("/problems/payload-too-large"), "{answer}");
    assert_eq!(node.balance_if_seen("chunky").await, None);
}
