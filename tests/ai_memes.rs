//! Memes people can see, and AI memes charged on delivery, on real processes:
//! images served and decoded, the premium path end to end, an OpenAI-compatible
//! stub server on loopback (answering, failing, slow), a full queue, and
//! `kill -9` in the middle of a job.

mod support;

use axum::Router;
use axum::extract::State;
use axum::routing::post;
use base64::Engine as _;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use support::{Node, OPERATOR, WEBHOOK_SECRET, billing_body, token, unix_now};

/// How the stub AI server behaves.
#[derive(Clone, Debug)]
enum Stub {
    /// Answers chat completions with these two lines.
    Captions(&'static str),
    /// Answers image generations with this PNG.
    Picture(Vec<u8>),
    /// Answers 500 to everything.
    Fail,
    /// Sleeps this long, then answers with captions.
    Slow(Duration),
}

/// An OpenAI-compatible server on loopback; counts the calls it got.
struct StubServer {
    url: String,
    calls: Arc<Mutex<u32>>,
}

async fn start_stub(behaviour: Stub) -> StubServer {
    let calls = Arc::new(Mutex::new(0u32));
    let state = (behaviour, calls.clone());
    async fn answer(
        State((behaviour, calls)): State<(Stub, Arc<Mutex<u32>>)>,
    ) -> axum::response::Response {
        use axum::response::IntoResponse;
        *calls.lock().expect("lock") += 1;
        let captions = |text: &str| {
            axum::Json(serde_json::json!({
                "choices": [{"message": {"role": "assistant", "content": text}}]
            }))
            .into_response()
        };
        match behaviour {
            Stub::Captions(text) => captions(text),
            Stub::Picture(png) => {
                let b64 = base64::engine::general_purpose::STANDARD.encode(png);
                axum::Json(serde_json::json!({"data": [{"b64_json": b64}]})).into_response()
            }
            Stub::Fail => axum::http::StatusCode::INTERNAL_SERVER_ERROR.into_response(),
            Stub::Slow(d) => {
                tokio::time::sleep(d).await;
                captions("Slow top\nSlow bottom")
            }
        }
    }
    let app = Router::new()
        .route("/v1/chat/completions", post(answer))
        .route("/v1/images/generations", post(answer))
        .with_state(state);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind the stub");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    StubServer { url, calls }
}

fn decode_png(bytes: &[u8]) -> image::RgbImage {
    image::load_from_memory_with_format(bytes, image::ImageFormat::Png)
        .expect("a PNG")
        .to_rgb8()
}

/// Pure white pixels: the caption text.
fn white_pixels(img: &image::RgbImage) -> usize {
    img.pixels().filter(|p| p.0 == [255, 255, 255]).count()
}

/// A node on a fresh directory (kept alive by the returned guard) with `pat`
/// upgraded to Memes AI.
async fn subscriber_node(args: &[&str]) -> (tempfile::TempDir, Node) {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = Node::start(dir.path(), args).await;
    upgrade(&node, "pat").await;
    (dir, node)
}

async fn upgrade(node: &Node, user: &str) {
    let body = billing_body("evt_up", user, "2099-01-01T00:00:00Z", 1);
    let r = node.billing_event(&body, unix_now(), WEBHOOK_SECRET).await;
    assert_eq!(r.status, 200, "{}", r.body);
}

async fn held(node: &Node, user: &str) -> u64 {
    let r = node.get(&format!("/v1/users/{user}"), OPERATOR).await;
    r.json()["held"].as_u64().expect("held")
}

async fn memes(node: &Node, user: &str, query: &str, key: Option<&str>) -> support::Response {
    let auth = format!("Bearer {}", token(user));
    let mut headers = vec![("authorization", auth.as_str())];
    if let Some(k) = key {
        headers.push(("idempotency-key", k));
    }
    node.send("GET", &format!("/memes?{query}"), &headers, "")
        .await
}

/// Polls the caller's job until it is finished.
async fn finished_job(node: &Node, user: &str, id: &str) -> serde_json::Value {
    for _ in 0..200 {
        let r = node.get(&format!("/v1/jobs/{id}"), &token(user)).await;
        let json = r.json();
        if json["state"] == "done" || json["state"] == "failed" {
            assert_eq!(r.status, 200, "{}", r.body);
            return json;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("job {id} did not finish");
}

async fn wait_until_running(node: &Node, user: &str, id: &str) {
    for _ in 0..200 {
        let r = node.get(&format!("/v1/jobs/{id}"), &token(user)).await;
        if r.json()["state"] == "running" {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("job {id} never ran");
}

#[tokio::test]
async fn every_curated_meme_links_a_png_this_node_serves_immutably() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = Node::start(dir.path(), &["--public-url", "https://memes.example/"]).await;
    let r = memes(&node, "alice", "query=monday", None).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let json = r.json();
    assert_eq!(json["kind"], "curated");
    let url = json["image"].as_str().expect("image").to_owned();
    let path = url
        .strip_prefix("https://memes.example")
        .expect("absolute under --public-url");
    assert!(
        path.starts_with("/v1/images/") && path.ends_with(".png"),
        "{url}"
    );

    // No credential needed: browsers fetch images without one.
    let image = node.send("GET", path, &[], "").await;
    assert_eq!(image.status, 200);
    assert_eq!(image.header("content-type"), Some("image/png"));
    assert!(
        image
            .header("cache-control")
            .is_some_and(|c| c.contains("immutable"))
    );
    let etag = image.header("etag").expect("etag").to_owned();
    let png = decode_png(&image.bytes);
    assert!(
        [(480, 480), (480, 640)].contains(&png.dimensions()),
        "{:?}",
        png.dimensions()
    );
    assert!(white_pixels(&png) > 500, "captions in white");
    let again = node
        .send("GET", path, &[("if-none-match", &etag)], "")
        .await;
    assert_eq!(again.status, 304);

    // Deterministic from the spec: another node, its own data, the same bytes.
    let other_dir = tempfile::tempdir().expect("tempdir");
    let other = Node::start(other_dir.path(), &[]).await;
    let theirs = other.send("GET", path, &[], "").await;
    assert_eq!(theirs.status, 200);
    assert_eq!(theirs.bytes, image.bytes);

    for bad in [
        "/v1/images/00000000000000000000000000000000.png",
        "/v1/images/x.png",
        "/v1/images/..%2f.png",
    ] {
        node.send("GET", bad, &[], "")
            .await
            .assert_problem(404, "image-not-found");
    }
}

#[tokio::test]
async fn a_subscriber_gets_an_ai_meme_charged_once_on_delivery() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = Node::start(dir.path(), &["--ai-meme-cost", "5"]).await;

    // Not a subscriber: curated, at the normal price.
    let first = memes(&node, "pat", "query=rust", None).await.json();
    assert_eq!(first["kind"], "curated");
    let before = node.balance("pat").await;
    assert_eq!(first["balance"], before);
    assert_eq!(
        memes(&node, "pat", "query=rust", None).await.json()["balance"],
        before - 1
    );

    upgrade(&node, "pat").await;
    let before = node.balance("pat").await;
    let r = memes(
        &node,
        "pat",
        "query=borrow+checker&lat=-33.9&lon=151.2",
        Some("k-1"),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let json = r.json();
    assert_eq!(json["kind"], "ai");
    assert_eq!(json["generator"], "embedded");
    assert_eq!(json["charged"], 5);
    assert_eq!(json["balance"], before - 5);
    assert_eq!(node.balance("pat").await, before - 5);
    assert_eq!(held(&node, "pat").await, 0);
    let image = node
        .send("GET", json["image"].as_str().expect("image"), &[], "")
        .await;
    assert_eq!(image.status, 200);
    let png = decode_png(&image.bytes);
    assert!(white_pixels(&png) > 500);

    // The same key again: the same job, replayed, no second charge.
    let again = memes(
        &node,
        "pat",
        "query=borrow+checker&lat=-33.9&lon=151.2",
        Some("k-1"),
    )
    .await;
    assert_eq!(again.status, 200);
    assert_eq!(again.header("idempotent-replayed"), Some("true"));
    assert_eq!(again.json()["id"], json["id"]);
    assert_eq!(node.balance("pat").await, before - 5);
    // The same key for another request is refused.
    memes(&node, "pat", "query=cats", Some("k-1"))
        .await
        .assert_problem(422, "idempotency-key-reused");

    // The job, to its owner only.
    let id = json["id"].as_str().expect("id");
    let job = node.get(&format!("/v1/jobs/{id}"), &token("pat")).await;
    assert_eq!(job.json()["state"], "done");
    assert_eq!(job.json()["meme"]["image"], json["image"]);
    node.get(&format!("/v1/jobs/{id}"), &token("mallory"))
        .await
        .assert_problem(404, "job-not-found");

    // Every request without a key is a new meme.
    let a = memes(&node, "pat", "query=cats", None).await.json();
    let b = memes(&node, "pat", "query=cats", None).await.json();
    assert_ne!(a["id"], b["id"]);
    assert_eq!(node.balance("pat").await, before - 15);
    let metrics = node.send("GET", "/metrics", &[], "").await.body;
    assert!(
        metrics.contains("maas_ai_jobs_total{outcome=\"done\"} 3"),
        "{metrics}"
    );

    // A subscriber who cannot pay for the hold gets the usual 402: no job,
    // nothing held, and the key stays free for a retry once topped up.
    let left = node.balance("pat").await;
    let r = node.adjust("pat", -(left as i64 - 3)).await;
    assert_eq!(r.status, 200, "{}", r.body);
    memes(&node, "pat", "query=cats", Some("k-poor"))
        .await
        .assert_problem(402, "insufficient-tokens");
    assert_eq!(held(&node, "pat").await, 0);
    assert_eq!(node.balance("pat").await, 3);
    assert_eq!(node.adjust("pat", 10).await.status, 200);
    let paid = memes(&node, "pat", "query=cats", Some("k-poor")).await;
    assert_eq!(paid.status, 200, "{}", paid.body);
    assert_eq!(node.balance("pat").await, 8);
}

#[tokio::test]
async fn a_failing_ai_server_charges_nothing_or_falls_back_and_says_so() {
    let stub = start_stub(Stub::Fail).await;
    let (_dir, strict) = subscriber_node(&[
        "--ai-endpoint",
        &stub.url,
        "--ai-fallback",
        "none",
        "--ai-timeout-secs",
        "2",
    ])
    .await;
    let before = strict.balance("pat").await;
    memes(&strict, "pat", "query=rust", None)
        .await
        .assert_problem(502, "ai-failed");
    assert_eq!(strict.balance("pat").await, before);
    assert_eq!(held(&strict, "pat").await, 0);
    // One call and its one retry.
    assert_eq!(*stub.calls.lock().expect("lock"), 2);

    let (_dir, lenient) = subscriber_node(&["--ai-endpoint", &stub.url]).await;
    let before = lenient.balance("pat").await;
    let r = memes(&lenient, "pat", "query=rust", None).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let json = r.json();
    assert_eq!(json["generator"], "embedded");
    assert!(
        json["fallback"].as_str().is_some_and(|f| f.contains("500")),
        "{json}"
    );
    assert_eq!(lenient.balance("pat").await, before - 5);
    let metrics = lenient.send("GET", "/metrics", &[], "").await.body;
    assert!(
        metrics.contains("maas_ai_fallbacks_total{reason=\"error\"} 1"),
        "{metrics}"
    );
}

#[tokio::test]
async fn the_openai_backend_draws_the_servers_captions_and_serves_its_pictures() {
    let captions = start_stub(Stub::Captions("When the tests pass\n\"On the first try\"")).await;
    let (_dir, node) = subscriber_node(&["--ai-endpoint", &captions.url]).await;
    let json = memes(&node, "pat", "query=tests", None).await.json();
    assert_eq!(json["generator"], "openai", "{json}");
    assert_eq!(json["title"], "When the tests pass / On the first try");
    let image = node
        .send("GET", json["image"].as_str().expect("image"), &[], "")
        .await;
    assert!(white_pixels(&decode_png(&image.bytes)) > 500);

    // A caption the filter blocks is never shown: the embedded generator
    // makes the meme, and says why.
    let blocked = start_stub(Stub::Captions("Nazi jokes\nare not funny")).await;
    let (_dir, node) = subscriber_node(&["--ai-endpoint", &blocked.url]).await;
    let json = memes(&node, "pat", "query=tests", None).await.json();
    assert_eq!(json["generator"], "embedded");
    assert!(
        json["fallback"]
            .as_str()
            .is_some_and(|f| f.contains("filter")),
        "{json}"
    );
    assert!(
        !json["title"]
            .as_str()
            .expect("title")
            .to_lowercase()
            .contains("nazi")
    );

    // Image mode: the server's PNG, served as it came.
    let mut picture = Vec::new();
    image::RgbImage::from_pixel(64, 48, image::Rgb([10, 200, 30]))
        .write_to(
            &mut std::io::Cursor::new(&mut picture),
            image::ImageFormat::Png,
        )
        .expect("encode");
    let pictures = start_stub(Stub::Picture(picture.clone())).await;
    let (_dir, node) =
        subscriber_node(&["--ai-endpoint", &pictures.url, "--ai-mode", "image"]).await;
    let json = memes(&node, "pat", "query=frogs", None).await.json();
    assert_eq!(json["generator"], "openai", "{json}");
    let image = node
        .send("GET", json["image"].as_str().expect("image"), &[], "")
        .await;
    assert_eq!(image.status, 200);
    assert_eq!(image.bytes, picture);
}

#[tokio::test]
async fn a_full_queue_answers_503_and_charges_nothing() {
    let stub = start_stub(Stub::Slow(Duration::from_secs(2))).await;
    let (_dir, node) = subscriber_node(&[
        "--ai-endpoint",
        &stub.url,
        "--ai-queue",
        "1",
        "--ai-workers",
        "1",
    ])
    .await;
    let before = node.balance("pat").await;
    // One job running, one waiting: the queue is full.
    let first = memes(&node, "pat", "query=a&wait=0", None).await;
    assert_eq!(first.status, 202, "{}", first.body);
    assert_eq!(first.header("retry-after"), Some("1"));
    let first_id = first.json()["id"].as_str().expect("id").to_owned();
    assert_eq!(
        first.header("location"),
        Some(format!("/v1/jobs/{first_id}").as_str())
    );
    wait_until_running(&node, "pat", &first_id).await;
    let second = memes(&node, "pat", "query=b&wait=0", None).await;
    assert_eq!(second.status, 202, "{}", second.body);
    assert_eq!(held(&node, "pat").await, 10);

    let busy = memes(&node, "pat", "query=c", None).await;
    busy.assert_problem(503, "ai-busy");
    assert!(busy.header("retry-after").is_some());
    assert_eq!(held(&node, "pat").await, 10, "the refused job held nothing");
    // Or a curated meme at the normal price, if the client says so.
    let curated = memes(&node, "pat", "query=c&fallback=curated", None).await;
    assert_eq!(curated.status, 200, "{}", curated.body);
    assert_eq!(curated.json()["kind"], "curated");

    let second_id = second.json()["id"].as_str().expect("id").to_owned();
    for id in [first_id, second_id] {
        assert_eq!(finished_job(&node, "pat", &id).await["state"], "done");
    }
    assert_eq!(node.balance("pat").await, before - 5 - 5 - 1);
    assert_eq!(held(&node, "pat").await, 0);
    let metrics = node.send("GET", "/metrics", &[], "").await.body;
    assert!(
        metrics.contains("maas_ai_jobs_total{outcome=\"busy\"} 2"),
        "{metrics}"
    );
}

#[tokio::test]
async fn kill_9_during_a_job_releases_its_hold_at_restart_and_charges_nothing() {
    let stub = start_stub(Stub::Slow(Duration::from_secs(60))).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let args = ["--ai-endpoint", stub.url.as_str(), "--ai-fallback", "none"];
    let node = Node::start(dir.path(), &args).await;
    upgrade(&node, "pat").await;
    let before = node.balance("pat").await;
    let r = memes(&node, "pat", "query=a&wait=0", Some("k-crash")).await;
    assert_eq!(r.status, 202, "{}", r.body);
    let id = r.json()["id"].as_str().expect("id").to_owned();
    wait_until_running(&node, "pat", &id).await;
    assert_eq!(
        held(&node, "pat").await,
        5,
        "the hold is durable before the job runs"
    );
    node.kill9().await;

    let node = Node::start(dir.path(), &args).await;
    let job = finished_job(&node, "pat", &id).await;
    assert_eq!(job["state"], "failed", "{job}");
    assert!(
        job["error"]
            .as_str()
            .is_some_and(|e| e.contains("nothing was charged"))
    );
    assert_eq!(node.balance("pat").await, before);
    assert_eq!(held(&node, "pat").await, 0);
    // The retry of the same key is that job, not a second one.
    let again = memes(&node, "pat", "query=a&wait=0", Some("k-crash")).await;
    again.assert_problem(502, "ai-failed");
    assert_eq!(held(&node, "pat").await, 0);
}

#[tokio::test]
async fn a_job_expires_with_its_key_and_its_image_stays() {
    let dir = tempfile::tempdir().expect("tempdir");
    let args = ["--idempotency-ttl-secs", "1"];
    let node = Node::start(dir.path(), &args).await;
    upgrade(&node, "pat").await;
    let json = memes(&node, "pat", "query=cats", Some("k-old"))
        .await
        .json();
    let (id, image) = (
        json["id"].as_str().expect("id"),
        json["image"].as_str().expect("image"),
    );
    assert!(node.terminate().await.success());
    tokio::time::sleep(Duration::from_millis(1_500)).await;

    // Past the key's TTL the job is gone (the sweep also deletes its record
    // from sled, at start and every minute); the meme's image is not.
    let node = Node::start(dir.path(), &args).await;
    let mut gone = false;
    for _ in 0..100 {
        let r = node.get(&format!("/v1/jobs/{id}"), &token("pat")).await;
        if r.status == 404 {
            r.assert_problem(404, "job-not-found");
            gone = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(gone, "the job's record outlived its key");
    let still = node.send("GET", image, &[], "").await;
    assert_eq!(
        still.status, 200,
        "the meme someone paid for stays viewable"
    );
}
