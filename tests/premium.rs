//! The premium tier on one real node: signed billing webhooks, the operator's
//! subscription writes, and holds that survive `kill -9`.

mod support;

use support::{Node, OPERATOR, WEBHOOK_SECRET, billing_body, token, unix_now};

#[tokio::test]
async fn the_billing_webhook_takes_only_signed_fresh_events_and_the_highest_version() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = Node::start(dir.path(), &[]).await;
    let now = unix_now();
    let tier = |r: &support::Response| r.json()["tier"].as_str().map(str::to_owned);

    let upgrade = billing_body("evt_1", "pat", "2099-01-01T00:00:00Z", 2);
    let r = node.billing_event(&upgrade, now, WEBHOOK_SECRET).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["applied"], true);
    let pat = node.get("/v1/balance", &token("pat")).await;
    assert_eq!(tier(&pat).as_deref(), Some("memes-ai"), "{}", pat.body);
    assert_eq!(pat.json()["memes_ai_until"], "2099-01-01T00:00:00.000Z");

    // The same event again, and an older one (a cancel sent before the
    // upgrade, arriving after it): 200, not applied, nothing changes.
    for (body, what) in [
        (upgrade.clone(), "duplicate"),
        (
            billing_body("evt_0", "pat", "2000-01-01T00:00:00Z", 1),
            "older",
        ),
    ] {
        let r = node.billing_event(&body, now, WEBHOOK_SECRET).await;
        assert_eq!(r.status, 200, "{what}: {}", r.body);
        assert_eq!(r.json()["applied"], false, "{what}");
    }
    let pat = node.get("/v1/balance", &token("pat")).await;
    assert_eq!(tier(&pat).as_deref(), Some("memes-ai"));

    // Refused with 401: a wrong secret, an old replayed timestamp, no
    // signature, and the operator's credential (it does not open this route).
    let cancel = billing_body("evt_3", "pat", "2000-01-01T00:00:00Z", 3);
    let forged = node
        .billing_event(&cancel, now, "another-secret-another-secret-0123")
        .await;
    forged.assert_problem(401, "bad-signature");
    let stale = node.billing_event(&cancel, now - 600, WEBHOOK_SECRET).await;
    stale.assert_problem(401, "bad-signature");
    let unsigned = node.post("/v1/webhooks/billing", OPERATOR, &cancel).await;
    unsigned.assert_problem(401, "bad-signature");
    // A signed but malformed body is the caller's error, not ours.
    let bad_date = billing_body("evt_4", "pat", "next tuesday", 4);
    node.billing_event(&bad_date, now, WEBHOOK_SECRET)
        .await
        .assert_problem(422, "invalid-body");
    node.billing_event("{not json", now, WEBHOOK_SECRET)
        .await
        .assert_problem(400, "invalid-request");
    let pat = node.get("/v1/balance", &token("pat")).await;
    assert_eq!(
        tier(&pat).as_deref(),
        Some("memes-ai"),
        "nothing refused took effect"
    );

    // The valid cancel (version 3) ends it; so does the operator's route.
    let r = node.billing_event(&cancel, now, WEBHOOK_SECRET).await;
    assert_eq!(r.json()["applied"], true, "{}", r.body);
    let pat = node.get("/v1/balance", &token("pat")).await;
    assert_eq!(tier(&pat).as_deref(), Some("standard"));
    let put = node
        .send(
            "PUT",
            "/v1/users/pat/subscription",
            &[
                ("authorization", &format!("Bearer {OPERATOR}")),
                ("content-type", "application/json"),
            ],
            r#"{"memes_ai_until":"2099-06-01T00:00:00Z","version":5}"#,
        )
        .await;
    assert_eq!(put.json()["applied"], true, "{}", put.body);
    let pat = node.get("/v1/users/pat", OPERATOR).await;
    assert_eq!(tier(&pat).as_deref(), Some("memes-ai"));
}

#[tokio::test]
async fn a_hold_survives_kill_9_and_is_captured_once_or_released_by_its_ttl() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = Node::start(dir.path(), &[]).await;
    let hold = |job: &str, amount: u64| format!(r#"{{"job":"{job}","amount":{amount}}}"#);

    let r = node
        .post("/v1/users/quinn/holds", OPERATOR, &hold("job-1", 40))
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["spendable_here"], 110);
    let r = node
        .post("/v1/users/quinn/holds", OPERATOR, &hold("job-2", 30))
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    // Held tokens cannot be spent: 150 - 70 held leaves 80.
    let standing = node.get("/v1/users/quinn", OPERATOR).await.json();
    assert_eq!(
        (
            standing["held"].as_u64(),
            standing["spendable_here"].as_u64()
        ),
        (Some(70), Some(80))
    );
    node.kill9().await;

    // Both holds were acknowledged, so both survived. Restart with a short
    // TTL for holds opened from now on.
    let node = Node::start(dir.path(), &["--hold-ttl-secs", "1"]).await;
    let standing = node.get("/v1/users/quinn", OPERATOR).await.json();
    assert_eq!(standing["held"], 70, "{standing}");
    let r = node
        .post("/v1/users/quinn/holds/job-1/capture", OPERATOR, "")
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["balance"], 110);
    let again = node
        .post("/v1/users/quinn/holds/job-1/capture", OPERATOR, "")
        .await;
    assert_eq!(again.status, 200, "{}", again.body);
    assert_eq!(again.json()["balance"], 110, "captured once");
    // job-2's job failed: released, it can no longer be captured.
    let r = node
        .post("/v1/users/quinn/holds/job-2/release", OPERATOR, "")
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    node.post("/v1/users/quinn/holds/job-2/capture", OPERATOR, "")
        .await
        .assert_problem(409, "hold-conflict");
    // job-3 is never closed: its TTL (1 s) releases it.
    let r = node
        .post("/v1/users/quinn/holds", OPERATOR, &hold("job-3", 5))
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    tokio::time::sleep(std::time::Duration::from_millis(1_500)).await;
    node.post("/v1/users/quinn/holds/job-3/capture", OPERATOR, "")
        .await
        .assert_problem(409, "hold-conflict");
    node.post("/v1/users/quinn/holds/job-9/release", OPERATOR, "")
        .await
        .assert_problem(404, "hold-not-found");
    let standing = node.get("/v1/users/quinn", OPERATOR).await.json();
    assert_eq!(
        (
            standing["balance"].as_u64(),
            standing["held"].as_u64(),
            standing["calls"].as_u64()
        ),
        (Some(110), Some(0), Some(1)),
        "{standing}"
    );
    // A client cannot open holds: the routes are the operator's.
    node.post("/v1/users/quinn/holds", &token("quinn"), &hold("x", 1))
        .await
        .assert_problem(403, "forbidden");
}
