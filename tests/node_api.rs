//! The regional node over real HTTP on loopback, with a real sled directory.

mod support;

use support::{
    Node, OPERATOR, SECRET, WEBHOOK_SECRET, billing_body, request, run_to_exit, token, unix_now,
};

#[tokio::test]
async fn client_routes_charge_and_report_the_balance() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = Node::start(dir.path(), &[]).await;
    let alice = token("alice");

    let r = node
        .get("/memes?lat=40.730610&lon=-73.935242&query=food", &alice)
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let meme = r.json();
    for field in ["id", "title", "image", "source", "kind"] {
        assert!(!meme[field].is_null(), "missing {field}: {}", r.body);
    }
    assert_eq!(meme["kind"], "curated");
    assert_eq!(meme["balance"], 149, "150 welcome tokens minus one");
    assert_eq!(r.header("x-tokens-remaining"), Some("149"));

    // Same input, same meme; the /v1 twin charges the same way.
    let again = node
        .get("/v1/memes?lat=40.730610&lon=-73.935242&query=food", &alice)
        .await;
    assert_eq!(again.json()["id"], meme["id"]);
    assert_eq!(again.json()["balance"], 148);
    let no_params = node.get("/memes", &alice).await;
    assert_eq!(no_params.status, 200);

    let b = node.get("/v1/balance", &alice).await;
    assert_eq!(b.status, 200);
    let b = b.json();
    assert_eq!(
        (b["user_id"].as_str(), b["balance"].as_u64()),
        (Some("alice"), Some(147))
    );
    assert_eq!(b["spendable_here"], 147);
    assert_eq!(b["calls"], 3);

    let op = node.get("/v1/users/alice", OPERATOR).await.json();
    assert_eq!(
        (op["balance"].as_u64(), op["calls"].as_u64()),
        (Some(147), Some(3))
    );

    assert_eq!(node.send("GET", "/health", &[], "").await.status, 200);
    assert_eq!(node.send("GET", "/ready", &[], "").await.status, 200);
    assert_eq!(
        node.send("GET", "/no/such/route", &[], "").await.status,
        404
    );
    let metrics = node.send("GET", "/metrics", &[], "").await;
    assert_eq!(metrics.status, 200);
    assert!(
        metrics.body.contains("maas_spends_total 3"),
        "{}",
        metrics.body
    );
    assert!(
        metrics
            .body
            .contains("maas_http_request_duration_seconds_bucket{route=\"/memes\",status=\"200\"")
    );
    // Requests are counted under the route's template, never the raw path
    // (a label per user id would be unbounded), and a miss as `unmatched`.
    for series in [
        "{route=\"/v1/users/{id}\",status=\"200\"",
        "{route=\"/v1/memes\",status=\"200\"",
        "{route=\"unmatched\",status=\"404\"",
    ] {
        assert!(
            metrics
                .body
                .contains(&format!("maas_http_request_duration_seconds_count{series}")),
            "no {series} in {}",
            metrics.body
        );
    }
    assert!(
        !metrics.body.contains("/v1/users/alice"),
        "{}",
        metrics.body
    );
    assert!(
        metrics
            .body
            .contains("maas_storage_flush_duration_seconds_count")
    );
}

#[tokio::test]
async fn operators_top_up_and_debit_but_never_below_zero() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = Node::start(dir.path(), &[]).await;

    let r = node.adjust("bob", 50).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let j = r.json();
    assert_eq!(j["success"], true);
    assert_eq!(j["user_id"], "bob");
    assert_eq!(j["new_balance"], 200);
    assert!(j["message"].as_str().is_some());

    let r = node
        .post("/v1/users/bob/adjustments", OPERATOR, r#"{"amount":-190}"#)
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["balance"], 10);

    let r = node.adjust("bob", -11).await;
    r.assert_problem(402, "insufficient-tokens");
    assert_eq!(r.json()["balance"], 10);
    assert_eq!(
        node.balance("bob").await,
        10,
        "a refused debit changes nothing"
    );
}

#[tokio::test]
async fn every_error_is_a_problem_with_a_stable_type() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = Node::start(dir.path(), &["--max-body-bytes", "1024"]).await;
    let alice = token("alice");

    // 400: bad queries.
    for path in [
        "/memes?lat=40.7",
        "/memes?lon=-73.9",
        "/memes?lat=91&lon=0",
        "/memes?lat=0&lon=180.5",
        "/memes?lat=abc&lon=0",
        "/memes?lat=NaN&lon=0",
        "/memes?lat=inf&lon=0",
        "/memes?colour=red",
        "/memes?query=a&query=b",
    ] {
        node.get(path, &alice)
            .await
            .assert_problem(400, "invalid-request");
    }
    let long = "x".repeat(201);
    node.get(&format!("/memes?query={long}"), &alice)
        .await
        .assert_problem(400, "invalid-request");
    node.get(&format!("/memes?query={}", "x".repeat(200)), &alice)
        .await;

    // 401: missing, malformed, wrongly signed, expired, huge.
    node.send("GET", "/memes", &[], "")
        .await
        .assert_problem(401, "unauthenticated");
    node.get("/memes", "not.a.jwt")
        .await
        .assert_problem(401, "unauthenticated");
    let forged = maas_node::sign_hs256(b"another-secret", "alice", u64::MAX / 2).expect("sign");
    node.get("/memes", &forged)
        .await
        .assert_problem(401, "unauthenticated");
    let expired = maas_node::sign_hs256(SECRET.as_bytes(), "alice", 1_000).expect("sign");
    node.get("/memes", &expired)
        .await
        .assert_problem(401, "unauthenticated");
    node.get("/memes", &"A".repeat(12_000))
        .await
        .assert_problem(401, "unauthenticated");
    node.send(
        "GET",
        "/memes",
        &[("authorization", "Basic YWxpY2U6eA==")],
        "",
    )
    .await
    .assert_problem(401, "unauthenticated");

    // 402: covered in its own tests; 403: wrong kind of credential.
    node.post(
        "/update-token-balance",
        &alice,
        r#"{"user_id":"alice","amount":1000}"#,
    )
    .await
    .assert_problem(403, "forbidden");
    node.get("/v1/users/alice", &alice)
        .await
        .assert_problem(403, "forbidden");
    node.get("/memes", OPERATOR)
        .await
        .assert_problem(403, "forbidden");

    // 404 and 405.
    node.get("/no/such/route", &alice)
        .await
        .assert_problem(404, "not-found");
    let r = node.send("DELETE", "/health", &[], "").await;
    r.assert_problem(405, "method-not-allowed");
    assert_eq!(
        r.header("allow"),
        Some("GET,HEAD"),
        "a 405 names what is allowed"
    );

    // 413: a body over the limit.
    let big = format!(
        r#"{{"user_id":"alice","amount":1,"pad":"{}"}}"#,
        "x".repeat(4096)
    );
    node.post("/update-token-balance", OPERATOR, &big)
        .await
        .assert_problem(413, "payload-too-large");

    // 422: unknown field, wrong type, out-of-range number, zero amount.
    for body in [
        r#"{"user_id":"alice","amount":1,"extra":true}"#,
        r#"{"user_id":"alice","amount":"ten"}"#,
        r#"{"user_id":"alice","amount":99999999999999999999}"#,
        r#"{"user_id":"alice","amount":0}"#,
        r#"{"user_id":"","amount":1}"#,
    ] {
        node.post("/update-token-balance", OPERATOR, body)
            .await
            .assert_problem(422, "invalid-body");
    }
    // 400: not JSON at all.
    node.post("/update-token-balance", OPERATOR, "{nope")
        .await
        .assert_problem(400, "invalid-request");

    // Nothing above changed alice's balance except the one 200-char query.
    assert_eq!(node.balance("alice").await, 149);
}

#[tokio::test]
async fn too_many_requests_are_rate_limited() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = Node::start(dir.path(), &["--rate-limit", "3"]).await;
    let carol = token("carol");
    // An admitted request says how much is left.
    let first = node.get("/v1/balance", &carol).await;
    assert_eq!(first.status, 200);
    assert_eq!(first.header("ratelimit-limit"), Some("3"));
    assert_eq!(first.header("ratelimit-remaining"), Some("2"));
    let mut limited = None;
    // 12 requests span at most three one-second windows unless the machine stalls
    // for over 2 s, so some window sees more than 3.
    for _ in 0..12 {
        let r = node.get("/v1/balance", &carol).await;
        if r.status == 429 {
            limited = Some(r);
            break;
        }
        assert_eq!(r.status, 200);
    }
    let r = limited.expect("a 429 within 12 requests at 3/s");
    r.assert_problem(429, "rate-limited");
    assert_eq!(r.header("retry-after"), Some("1"));
    assert_eq!(r.header("ratelimit-limit"), Some("3"));
    assert_eq!(r.header("ratelimit-remaining"), Some("0"));
    assert_eq!(r.header("ratelimit-reset"), Some("1"));
    // Another user is not limited by carol's requests.
    assert_eq!(node.get("/v1/balance", &token("dan")).await.status, 200);
}

#[tokio::test]
async fn a_flood_from_one_address_is_limited_before_authentication() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = Node::start(dir.path(), &["--rate-limit-ip", "5"]).await;
    let mut statuses = Vec::new();
    // Bad credentials: each would cost a signature check, and none ever
    // reaches the per-user limit.
    for _ in 0..20 {
        let r = node.get("/v1/balance", "not-a-token").await;
        if r.status == 429 {
            r.assert_problem(429, "rate-limited");
            assert_eq!(r.header("ratelimit-limit"), Some("5"));
            assert!(r.header("retry-after").is_some());
        } else {
            r.assert_problem(401, "unauthenticated");
        }
        statuses.push(r.status);
    }
    // 20 requests take far less than the 3 s in which 5/s would admit them all.
    assert!(statuses.contains(&429), "{statuses:?}");
    // A refusal is counted under the route it was refused on. `/metrics` is
    // limited too: wait (bounded) for the address's next token.
    let mut metrics = None;
    for _ in 0..30 {
        let r = node.send("GET", "/metrics", &[], "").await;
        if r.status == 200 {
            metrics = Some(r.body);
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    let metrics = metrics.expect("/metrics within 6 s");
    assert!(
        metrics.contains(
            "maas_http_request_duration_seconds_count{route=\"/v1/balance\",status=\"429\"}"
        ),
        "{metrics}"
    );
}

#[tokio::test]
async fn fifty_clients_spend_the_last_hundred_tokens_exactly_once_each() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = Node::start(dir.path(), &["--rate-limit", "0"]).await;
    let r = node.adjust("dave", -50).await;
    assert_eq!(r.json()["new_balance"], 100);

    let addr = node.addr.clone();
    let auth = format!("Bearer {}", token("dave"));
    let mut tasks = Vec::new();
    for _ in 0..50 {
        let (addr, auth) = (addr.clone(), auth.clone());
        tasks.push(tokio::spawn(async move {
            let (mut ok, mut refused) = (0u32, 0u32);
            // Bounded: each client stops at its first 402, and after 100 tries.
            for _ in 0..100 {
                let r = request(
                    &addr,
                    "GET",
                    "/memes?query=cats",
                    &[("authorization", &auth)],
                    "",
                )
                .await
                .expect("request");
                match r.status {
                    200 => ok += 1,
                    402 => {
                        refused += 1;
                        break;
                    }
                    other => panic!("unexpected {other}: {}", r.body),
                }
            }
            (ok, refused)
        }));
    }
    let (mut ok, mut refused) = (0, 0);
    for t in tasks {
        let (o, r) = t.await.expect("task");
        ok += o;
        refused += r;
    }
    assert_eq!(ok, 100, "exactly the last 100 tokens were spent");
    assert_eq!(
        refused, 50,
        "every client was refused once the tokens ran out"
    );
    assert_eq!(node.balance("dave").await, 0);
}

#[tokio::test]
async fn a_retry_with_the_same_idempotency_key_is_charged_once_even_after_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = Node::start(dir.path(), &[]).await;
    let auth = format!("Bearer {}", token("erin"));
    let headers = [
        ("authorization", auth.as_str()),
        ("idempotency-key", "meme-1"),
    ];

    let first = node.send("GET", "/memes?query=dogs", &headers, "").await;
    assert_eq!(first.status, 200);
    let retry = node.send("GET", "/memes?query=dogs", &headers, "").await;
    assert_eq!(retry.status, 200);
    assert_eq!(retry.body, first.body, "the retry sees the same answer");
    assert_eq!(retry.header("idempotent-replayed"), Some("true"));
    assert_eq!(node.balance("erin").await, 149, "charged once");

    // The same key for a different request is refused.
    node.send("GET", "/memes?query=cats", &headers, "")
        .await
        .assert_problem(422, "idempotency-key-reused");

    // Operator top-ups are idempotent too.
    let op_headers = [
        (
            "authorization",
            "Bearer test-operator-credential-0123456789",
        ),
        ("content-type", "application/json"),
        ("idempotency-key", "invoice-77"),
    ];
    let body = r#"{"user_id":"erin","amount":25}"#;
    let a = node
        .send("POST", "/update-token-balance", &op_headers, body)
        .await;
    let b = node
        .send("POST", "/update-token-balance", &op_headers, body)
        .await;
    assert_eq!((a.status, b.status), (200, 200));
    assert_eq!(a.body, b.body);
    assert_eq!(node.balance("erin").await, 174, "credited once");

    // Keys are durable: after a crash the retry is still recognised.
    node.kill9().await;
    let node = Node::start(dir.path(), &[]).await;
    let after = node.send("GET", "/memes?query=dogs", &headers, "").await;
    assert_eq!(after.status, 200);
    assert_eq!(after.header("idempotent-replayed"), Some("true"));
    assert_eq!(node.balance("erin").await, 174);
}

#[tokio::test]
async fn concurrent_retries_of_one_key_charge_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = Node::start(dir.path(), &["--rate-limit", "0"]).await;
    let auth = format!("Bearer {}", token("fay"));
    let mut saw_conflict = false;
    // Each round fires 16 identical requests at once; whatever the interleaving,
    // each key is charged exactly once. Some round sees a retry arrive while the
    // first is still waiting for its flush: that one is a 409.
    for round in 0..20 {
        let key = format!("k-{round}");
        let mut tasks = Vec::new();
        for _ in 0..16 {
            let (addr, auth, key) = (node.addr.clone(), auth.clone(), key.clone());
            tasks.push(tokio::spawn(async move {
                request(
                    &addr,
                    "GET",
                    "/memes",
                    &[("authorization", &auth), ("idempotency-key", &key)],
                    "",
                )
                .await
                .expect("request")
            }));
        }
        for t in tasks {
            let r = t.await.expect("task");
            match r.status {
                200 => {}
                409 => {
                    r.assert_problem(409, "idempotency-key-in-use");
                    saw_conflict = true;
                }
                other => panic!("unexpected {other}: {}", r.body),
            }
        }
        assert_eq!(
            node.balance("fay").await,
            150 - (round + 1),
            "round {round} charged once"
        );
        if saw_conflict && round >= 4 {
            break;
        }
    }
    assert!(saw_conflict, "no request ever overlapped an in-flight key");
}

#[tokio::test]
async fn kill_9_during_spend_load_loses_no_acknowledged_write() {
    let dir = tempfile::tempdir().expect("tempdir");
    spend_load_then_kill_9(dir.path(), &[], 700).await;
}

/// With a checkpoint every 50 ms, the load runs through many log files, each
/// reusing the one before it (its old records still behind the new ones).
/// Every acknowledged write comes back, and so does every commit's chunk of
/// statement lines: the statement adds up to the balance. (That stale records
/// never replay is the unit tests' in `shell/wal.rs`: here a new record
/// seldom ends where an old one did.)
#[tokio::test]
async fn kill_9_while_log_files_are_reused_loses_no_acknowledged_write() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = spend_load_then_kill_9(dir.path(), &["--checkpoint-ms", "50"], 1_500).await;
    let balance = node.balance("gus").await;
    let op = format!("Bearer {OPERATOR}");
    let (mut total, mut lines, mut opening) = (0i64, 0usize, None);
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/v1/users/gus/history?limit=500&cursor={c}"),
            None => "/v1/users/gus/history?limit=500".to_owned(),
        };
        let page = node.send("GET", &path, &[("authorization", &op)], "").await;
        assert_eq!(page.status, 200, "{}", page.body);
        let page = page.json();
        opening.get_or_insert(page["opening_balance"].as_i64().expect("opening"));
        for line in page["lines"].as_array().expect("lines") {
            total += line["amount"].as_i64().expect("amount");
            lines += 1;
        }
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    assert!(lines > 100, "the load wrote lines: {lines}");
    assert_eq!(
        opening.expect("a page") + total,
        balance as i64,
        "the statement adds up to the balance after the crash"
    );
}

/// Credits and spends `gus` from eight connections for `load_ms`, kills the
/// node, restarts it on the same directory and checks that every
/// acknowledged write is there; returns the restarted node.
async fn spend_load_then_kill_9(dir: &std::path::Path, extra: &[&str], load_ms: u64) -> Node {
    let args: Vec<&str> = ["--rate-limit", "0"].iter().chain(extra).copied().collect();
    let node = Node::start(dir, &args).await;
    let r = node.adjust("gus", 100000).await;
    assert_eq!(r.status, 200);
    let start = 150 + 100_000u64;

    let spend_auth = format!("Bearer {}", token("gus"));
    let mut tasks = Vec::new();
    for worker in 0..8 {
        let (addr, spend_auth) = (node.addr.clone(), spend_auth.clone());
        tasks.push(tokio::spawn(async move {
            // (acknowledged, unknown outcome); workers 0 and 1 credit, the rest spend.
            let (mut acked, mut unknown) = (0u64, 0u64);
            let op = format!("Bearer {OPERATOR}");
            for _ in 0..5_000 {
                let r = if worker < 2 {
                    request(
                        &addr,
                        "POST",
                        "/update-token-balance",
                        &[("authorization", &op), ("content-type", "application/json")],
                        r#"{"user_id":"gus","amount":1}"#,
                    )
                    .await
                } else {
                    request(
                        &addr,
                        "GET",
                        "/memes",
                        &[("authorization", &spend_auth)],
                        "",
                    )
                    .await
                };
                match r {
                    Ok(r) if r.status == 200 => acked += 1,
                    Ok(r) => panic!("unexpected {}: {}", r.status, r.body),
                    // The node died mid-request: maybe applied, maybe not.
                    Err(_) => {
                        unknown += 1;
                        break;
                    }
                }
            }
            (worker < 2, acked, unknown)
        }));
    }
    tokio::time::sleep(std::time::Duration::from_millis(load_ms)).await;
    node.kill9().await;

    let (mut credits, mut credits_unknown, mut spends, mut spends_unknown) = (0, 0, 0, 0);
    for t in tasks {
        let (credit, acked, unknown) = t.await.expect("task");
        if credit {
            credits += acked;
            credits_unknown += unknown;
        } else {
            spends += acked;
            spends_unknown += unknown;
        }
    }
    assert!(spends > 0 && credits > 0, "the load ran before the kill");
    eprintln!(
        "acked spends {spends} (+{spends_unknown} unknown), credits {credits} (+{credits_unknown} unknown)"
    );

    let node = Node::start(dir, extra).await;
    let balance = node.balance("gus").await;
    let highest = start + credits + credits_unknown - spends;
    let lowest = start + credits - spends - spends_unknown;
    assert!(
        (lowest..=highest).contains(&balance),
        "balance {balance} outside [{lowest}, {highest}]: an acknowledged write was lost"
    );
    node
}

/// The write-ahead log alone brings back every acknowledged write: with
/// checkpoints an hour apart, sled is never flushed before the `kill -9`.
#[tokio::test]
async fn kill_9_before_any_checkpoint_recovers_every_acknowledged_write_from_the_log() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = Node::start(
        dir.path(),
        &["--rate-limit", "0", "--checkpoint-ms", "3600000"],
    )
    .await;
    let mut expected = Vec::new();
    for i in 0..12u64 {
        let user = format!("wal-{i}");
        assert_eq!(node.adjust(&user, 10 * i as i64 + 5).await.status, 200);
        for _ in 0..i {
            assert_eq!(node.get("/memes", &token(&user)).await.status, 200);
        }
        expected.push((user, 150 + 10 * i + 5 - i));
    }
    // A retried spend is charged once, before and after the crash.
    let auth = format!("Bearer {}", token("wal-0"));
    let headers = [
        ("authorization", auth.as_str()),
        ("idempotency-key", "once"),
    ];
    for _ in 0..2 {
        assert_eq!(node.send("GET", "/memes", &headers, "").await.status, 200);
    }
    expected[0].1 -= 1;
    let logged: u64 = std::fs::read_dir(dir.path())
        .expect("data dir")
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().starts_with("wal."))
        .filter_map(|e| e.metadata().ok())
        .map(|m| m.len())
        .sum();
    assert!(logged > 0, "the writes are in the log");
    node.kill9().await;

    let log = tempfile::NamedTempFile::new().expect("log file");
    let node = Node::start_logged(
        dir.path(),
        &["--log-level", "info"],
        log.reopen().expect("log").into(),
    )
    .await;
    for (user, balance) in &expected {
        assert_eq!(node.balance(user).await, *balance, "{user}");
    }
    let replay = node.send("GET", "/memes", &headers, "").await;
    assert_eq!(replay.status, 200);
    assert_eq!(
        replay.header("x-tokens-remaining"),
        Some("154"),
        "replayed, not charged again"
    );
    let text = std::fs::read_to_string(log.path()).expect("read log");
    assert!(
        text.contains("replayed the write-ahead log"),
        "recovery read the log: {text}"
    );
}

#[tokio::test]
async fn sigterm_drains_and_exits_zero() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = Node::start(dir.path(), &[]).await;
    let hank = token("hank");
    assert_eq!(node.get("/memes", &hank).await.status, 200);
    let status = node.terminate().await;
    assert!(status.success(), "exit status {status:?}");
    let node = Node::start(dir.path(), &[]).await;
    assert_eq!(node.balance("hank").await, 149);
}

#[tokio::test]
async fn help_documents_every_flag_with_its_environment_variable() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_maas"))
        .arg("--help")
        .output()
        .expect("run maas --help");
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for (flag, env) in [
        ("--listen", "MAAS_LISTEN"),
        ("--data-dir", "MAAS_DATA_DIR"),
        ("--region", "MAAS_REGION"),
        ("--jwt-secret", "MAAS_JWT_SECRET"),
        ("--operator-token", "MAAS_OPERATOR_TOKEN"),
        ("--meme-cost", "MAAS_MEME_COST"),
        ("--log-format", "MAAS_LOG_FORMAT"),
    ] {
        assert!(
            help.contains(flag) && help.contains(env),
            "{flag}/{env} missing:\n{help}"
        );
    }
}

#[tokio::test]
async fn every_route_that_reads_a_body_takes_one_up_to_the_configured_limit() {
    // axum caps a body it reads at 2 MiB unless told otherwise: a request
    // with a body that missed the front's lifting of that cap would be
    // refused 3 MiB under a 4 MiB `--max-body-bytes`.
    let dir = tempfile::tempdir().expect("tempdir");
    let node = Node::start(dir.path(), &["--max-body-bytes", "4194304"]).await;
    let operator = format!("Bearer {OPERATOR}");
    let big = format!(r#"{{"pad":"{}"}}"#, "x".repeat(3 << 20));
    for (method, path) in [
        ("POST", "/update-token-balance"),
        ("POST", "/v1/users/alice/adjustments"),
        ("PUT", "/v1/users/alice/subscription"),
        ("POST", "/v1/users/alice/holds"),
        ("POST", "/v1/webhooks/billing"),
    ] {
        let answer = node
            .send(
                method,
                path,
                &[
                    ("authorization", &operator),
                    ("content-type", "application/json"),
                ],
                &big,
            )
            .await;
        assert!(
            answer.status != 413 && answer.status != 404 && answer.status != 405,
            "{method} {path}: {}",
            answer.status
        );
    }
}

#[tokio::test]
async fn every_answer_carries_a_request_id_and_a_problem_names_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = Node::start(dir.path(), &[]).await;
    let ok = node.send("GET", "/health", &[], "").await;
    let first = ok.header("x-request-id").expect("a request id").to_owned();
    let again = node.send("GET", "/health", &[], "").await;
    assert_ne!(
        again.header("x-request-id"),
        Some(first.as_str()),
        "one per request"
    );

    let missing = node.send("GET", "/no-such-route", &[], "").await;
    missing.assert_problem(404, "not-found");
    let id = missing.header("x-request-id").expect("a request id");
    assert_eq!(missing.json()["instance"], format!("/requests/{id}"));

    // A client's own id is kept, so it can find its request in our logs.
    let theirs = node
        .send(
            "GET",
            "/v1/balance",
            &[("x-request-id", "client-chose-this")],
            "",
        )
        .await;
    theirs.assert_problem(401, "unauthenticated");
    assert_eq!(theirs.header("x-request-id"), Some("client-chose-this"));
    assert_eq!(theirs.json()["instance"], "/requests/client-chose-this");
}

#[tokio::test]
async fn a_line_logged_while_serving_a_request_names_it_in_both_formats() {
    // The billing webhook logs each event it takes, inside its request.
    for format in ["json", "text"] {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = tempfile::NamedTempFile::new().expect("log file");
        let node = Node::start_logged(
            dir.path(),
            &["--log-format", format, "--log-level", "info"],
            log.reopen().expect("log").into(),
        )
        .await;
        let send = |event: &'static str, id: Option<&'static str>| {
            let body = billing_body(event, "ivy", "2099-01-01T00:00:00Z", 1);
            let signature =
                maas_node::sign_webhook(WEBHOOK_SECRET.as_bytes(), unix_now(), body.as_bytes());
            let node = &node;
            async move {
                let mut headers = vec![
                    ("maas-signature", signature),
                    ("content-type", "application/json".to_owned()),
                ];
                if let Some(id) = id {
                    headers.push(("x-request-id", id.to_owned()));
                }
                let headers: Vec<(&str, &str)> =
                    headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
                let r = node
                    .send("POST", "/v1/webhooks/billing", &headers, &body)
                    .await;
                assert_eq!(r.status, 200, "{}", r.body);
                r.header("x-request-id").expect("a request id").to_owned()
            }
        };
        let ours = send("evt_ours", None).await;
        // A client's id may hold a quote, which JSON must escape.
        let theirs = send("evt_theirs", Some("client \"7\"")).await;
        assert_eq!(theirs, "client \"7\"");
        let text = std::fs::read_to_string(log.path()).expect("read log");
        let line_of = |event: &str| {
            text.lines()
                .find(|l| l.contains("billing event") && l.contains(event))
                .unwrap_or_else(|| panic!("no line for {event}: {text}"))
                .to_owned()
        };
        for (event, id) in [("evt_ours", &ours), ("evt_theirs", &theirs)] {
            let line = line_of(event);
            if format == "json" {
                let line: serde_json::Value = serde_json::from_str(&line)
                    .unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
                assert_eq!(line["request_id"], id.as_str(), "{line}");
                assert_eq!(line["fields"]["event"], event, "{line}");
            } else {
                assert!(
                    line.contains(&format!("request{{request_id={id}}}: ")),
                    "{line}"
                );
            }
        }
        // Lines outside any request name none.
        let startup = text
            .lines()
            .find(|l| !l.contains("billing event"))
            .unwrap_or_else(|| panic!("a line logged at startup: {text}"));
        assert!(!startup.contains("request_id"), "{startup}");
    }
}

#[tokio::test]
async fn the_healthcheck_command_says_whether_a_node_is_ready() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(dir.path(), &[]).await;
    let (status, stderr) = run_to_exit(&["healthcheck", "--addr", &node.addr], &[]).await;
    assert!(status.success(), "a ready node is healthy: {stderr}");
    let closed = {
        // A port nothing listens on: bound, then closed.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().to_string()
    };
    let (status, stderr) = run_to_exit(&["healthcheck", "--addr", &closed], &[]).await;
    assert_eq!(status.code(), Some(1));
    assert!(
        stderr.contains(&closed),
        "says which address failed: {stderr}"
    );
    node.terminate().await;
}

#[tokio::test]
async fn the_openapi_document_describes_every_route_problem_and_header() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(dir.path(), &[]).await;
    let r = node.get("/openapi.json", "").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("application/json"));
    let doc = r.json();
    assert_eq!(doc["openapi"], "3.1.0");

    let mut operations: Vec<String> = doc["paths"]
        .as_object()
        .unwrap()
        .iter()
        .flat_map(|(path, item)| {
            item.as_object()
                .unwrap()
                .keys()
                .map(move |method| format!("{} {path}", method.to_uppercase()))
        })
        .collect();
    operations.sort();
    let expected = [
        "GET /docs",
        "GET /docs/{asset}",
        "GET /health",
        "GET /memes",
        "GET /metrics",
        "GET /openapi.json",
        "GET /ready",
        "GET /v1/balance",
        "GET /v1/balance/history",
        "GET /v1/balance/usage",
        "GET /v1/cluster",
        "GET /v1/images/{file}",
        "GET /v1/jobs/{id}",
        "GET /v1/memes",
        "GET /v1/users/{id}",
        "GET /v1/users/{id}/history",
        "GET /v1/users/{id}/usage",
        "HEAD /memes",
        "HEAD /v1/memes",
        "POST /update-token-balance",
        "POST /v1/users/{id}/adjustments",
        "POST /v1/users/{id}/erase",
        "POST /v1/users/{id}/holds",
        "POST /v1/users/{id}/holds/{job}/capture",
        "POST /v1/users/{id}/holds/{job}/release",
        "POST /v1/webhooks/billing",
        "PUT /v1/users/{id}/subscription",
    ];
    assert_eq!(operations, expected);

    // Every stable problem type, and the problem answers every route shares.
    let types = doc["components"]["schemas"]["Problem"]["properties"]["type"]["enum"]
        .as_array()
        .unwrap();
    assert_eq!(types.len(), 26);
    for t in [
        "/problems/insufficient-tokens",
        "/problems/job-in-another-region",
    ] {
        assert!(types.iter().any(|v| v == t), "{t}");
    }
    let memes = &doc["paths"]["/v1/memes"]["get"];
    for status in ["200", "202", "402", "409", "429", "500", "default"] {
        assert!(
            memes["responses"][status].is_object(),
            "GET /v1/memes {status}"
        );
    }
    let text = doc.to_string();
    for header in [
        "Idempotency-Key",
        "X-Tokens-Remaining",
        "Retry-After",
        "Maas-Signature",
    ] {
        assert!(text.contains(header), "{header} is documented");
    }
    // Each route that answers is in the document, and each documented GET
    // without a parameter answers (nothing documented is a 404).
    for op in expected
        .iter()
        .filter(|op| op.starts_with("GET ") && !op.contains('{'))
    {
        let path = &op[4..];
        let r = node.get(path, OPERATOR).await;
        assert_ne!(r.status, 404, "{op}");
    }

    // The docs UI works offline: its page loads only assets the node serves.
    let page = node.get("/docs", "").await;
    assert_eq!(page.status, 200);
    assert!(!page.body.contains("http://") && !page.body.contains("https://"));
    for asset in ["/docs/swagger-ui-bundle.js", "/docs/swagger-ui.css"] {
        assert!(page.body.contains(asset));
        let r = node.get(asset, "").await;
        assert_eq!(r.status, 200, "{asset}");
        assert!(r.bytes.len() > 100_000, "{asset} is the real bundle");
    }
    node.get("/docs/other.js", "")
        .await
        .assert_problem(404, "not-found");
    node.terminate().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statement_pages_neither_skip_nor_repeat_while_spends_go_on() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(dir.path(), &["--rate-limit", "0"]).await;
    let user = "pager";
    let bearer = token(user);
    for _ in 0..30 {
        assert_eq!(node.get("/memes?query=cats", &bearer).await.status, 200);
    }
    // Spends keep landing while the statement is paged through.
    let addr = node.addr.clone();
    let spender = tokio::spawn(async move {
        let auth = format!("Bearer {}", token("pager"));
        for _ in 0..20 {
            let r = request(
                &addr,
                "GET",
                "/memes?query=dogs",
                &[("authorization", &auth)],
                "",
            )
            .await
            .unwrap();
            assert_eq!(r.status, 200);
        }
    });
    let mut seen: Vec<u64> = Vec::new();
    let mut total = 0i64;
    let mut first_balance = None;
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/v1/balance/history?limit=4&cursor={c}"),
            None => "/v1/balance/history?limit=4".to_owned(),
        };
        let page = node.get(&path, &bearer).await;
        assert_eq!(page.status, 200, "{}", page.body);
        let page = page.json();
        for line in page["lines"].as_array().unwrap() {
            seen.push(line["id"].as_str().unwrap().parse().unwrap());
            total += line["amount"].as_i64().unwrap();
            first_balance.get_or_insert(line["balance_after"].as_u64().unwrap());
            assert_eq!(line["kind"], "spend");
        }
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => {
                // Everything up to the first page's newest line, each once,
                // newest first, adding up from the opening balance.
                assert!(seen.windows(2).all(|w| w[0] > w[1]), "{seen:?}");
                assert!(seen.len() >= 30, "{}", seen.len());
                let opening = page["opening_balance"].as_u64().unwrap();
                assert_eq!(opening, 150);
                assert_eq!(opening as i64 + total, first_balance.unwrap() as i64);
                break;
            }
        }
    }
    spender.await.unwrap();
    let all = node
        .get("/v1/balance/history?limit=500", &bearer)
        .await
        .json();
    assert_eq!(all["lines"].as_array().unwrap().len(), 50);
    assert_eq!(all["balance"], 100);
    node.get("/v1/balance/history?cursor=x", &bearer)
        .await
        .assert_problem(400, "invalid-request");
    node.get("/v1/balance/history?limit=0", &bearer)
        .await
        .assert_problem(400, "invalid-request");
    // A misspelt, repeated or malformed parameter is refused by name, never
    // ignored.
    for (query, says) in [
        ("limt=5", "unknown query parameter `limt`"),
        ("limit=5&limit=6", "query parameter `limit` given twice"),
        ("limit=five", "`limit` must be a whole number from 1 to 500"),
    ] {
        let refused = node
            .get(&format!("/v1/balance/history?{query}"), &bearer)
            .await;
        refused.assert_problem(400, "invalid-request");
        assert_eq!(refused.json()["detail"], says, "{query}");
    }
    node.terminate().await;
}

#[tokio::test]
async fn usage_by_day_and_an_operators_removal_of_a_statement() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(dir.path(), &[]).await;
    let user = "usage-user";
    let bearer = token(user);
    for _ in 0..3 {
        assert_eq!(node.get("/memes?query=cats", &bearer).await.status, 200);
    }
    assert_eq!(node.adjust(user, 10).await.status, 200);
    assert_eq!(node.adjust(user, -4).await.status, 200);
    let usage = node.get("/v1/balance/usage?days=7", &bearer).await;
    assert_eq!(usage.status, 200, "{}", usage.body);
    let days = usage.json()["days"].as_array().unwrap().clone();
    assert_eq!(days.len(), 1, "all today: {days:?}");
    assert_eq!(days[0]["calls"], 3);
    assert_eq!(days[0]["tokens_spent"], 3);
    assert_eq!(days[0]["tokens_credited"], 10);
    assert_eq!(days[0]["tokens_debited"], 4);
    let operator_view = node
        .get(&format!("/v1/users/{user}/usage?days=1"), OPERATOR)
        .await;
    assert_eq!(operator_view.json()["days"], serde_json::json!(days));
    node.get("/v1/balance/usage?days=0", &bearer)
        .await
        .assert_problem(400, "invalid-request");
    for (query, says) in [
        ("dyas=7", "unknown query parameter `dyas`"),
        ("days=7&days=8", "query parameter `days` given twice"),
        ("days=a+week", "`days` must be a whole number from 1 to 400"),
    ] {
        let refused = node
            .get(&format!("/v1/users/{user}/usage?{query}"), OPERATOR)
            .await;
        refused.assert_problem(400, "invalid-request");
        assert_eq!(refused.json()["detail"], says, "{query}");
    }

    // Removal: the lines go, their total is carried forward, the balance stays.
    let removed = node
        .send(
            "POST",
            &format!("/v1/users/{user}/erase"),
            &[("authorization", &format!("Bearer {OPERATOR}"))],
            "",
        )
        .await;
    assert_eq!(removed.status, 200, "{}", removed.body);
    assert_eq!(removed.json()["lines_removed"], 5);
    assert_eq!(removed.json()["opening_balance"], 153);
    let history = node.get("/v1/balance/history", &bearer).await.json();
    assert_eq!(history["lines"].as_array().unwrap().len(), 0);
    assert_eq!(history["opening_balance"], 153);
    assert_eq!(history["balance"], 153);
    // A client cannot remove anything.
    node.send(
        "POST",
        &format!("/v1/users/{user}/erase"),
        &[("authorization", &format!("Bearer {bearer}"))],
        "",
    )
    .await
    .assert_problem(403, "forbidden");
    node.terminate().await;
}
