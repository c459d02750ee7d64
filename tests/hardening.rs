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
    refused(&["--jwt-secret", SECRET], &[], "--operator-token is required").await;
    refused(&strong_op, &[], "--jwt-secret or --jwt-public-key is required").await;
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
    refused(&with(&["--jwt-leeway-secs", "3600"]), &[], "jwt-leeway-secs").await;
    refused(&with(&["--max-body-bytes", "0"]), &[], "max-body-bytes").await;
}

#[tokio::test]
async fn the_dev_operator_token_is_dead_once_real_credentials_are_set() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = Node::start(dir.path(), &[]).await;
    node.post(
        "/update-token-balance",
        maas_node::config::DEV_OPERATOR_TOKEN,
        r#"{"user_id":"mallory","amount":1000}"#,
    )
    .await
    .assert_problem(401, "unauthenticated");
    // A token signed with the dev secret is no one here either.
    let dev = maas_node::auth::sign_hs256_valid_for(
        maas_node::config::DEV_JWT_SECRET.as_bytes(),
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
        let r = node.send("HEAD", path, &[("authorization", &auth)], "").await;
        assert_eq!(r.status, 405, "HEAD {path}");
        assert_eq!(r.header("allow"), Some("GET"));
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
