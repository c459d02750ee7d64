//! The compose cluster (`deploy/compose.yaml`) across real container networks:
//! the image built by `deploy/container/build-image.sh`, three regions in
//! their own containers, mTLS certificates from the `certs` init step, and
//! Prometheus scraping all three. A partition is a `docker network disconnect`
//! of one region from the peer network; a crash is a `docker kill`.
//!
//! Needs a Docker engine and Compose. Without one the test says so and passes,
//! unless `MAAS_CONTAINER_TESTS=1` (set by `.ci/run`) makes it required.

mod support;

use std::process::Command;
use std::time::{Duration, Instant};
use support::request;

/// The compose file's demo credentials (the test does not override them).
const JWT_SECRET: &str = "compose-demo-jwt-secret-change-me-0123456789";
const OPERATOR: &str = "compose-demo-operator-token-change-me-012345";
/// Tokens every new user starts with (the node's default).
const GRANT: u64 = 150;

/// A compose project, taken down with its volumes and networks when dropped
/// (a failed assertion included).
struct Cluster {
    project: String,
    image: String,
    peer_net: String,
    env: Vec<(String, String)>,
    http: [String; 3],
    prometheus: String,
}

impl Cluster {
    fn compose(&self, args: &[&str]) -> std::process::Output {
        Command::new("docker-compose")
            .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/deploy"))
            .args(["-p", &self.project])
            .args(args)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .output()
            .expect("run docker-compose")
    }

    fn container(&self, region: usize) -> String {
        format!("{}_region-{region}_1", self.project)
    }

    fn peers_network(&self) -> String {
        format!("{}_peers", self.project)
    }

    fn http(&self, region: usize) -> &str {
        &self.http[region - 1]
    }

    /// Cuts `region` off the peer network: its clients still reach it.
    fn cut(&self, region: usize) {
        docker(&[
            "network",
            "disconnect",
            &self.peers_network(),
            &self.container(region),
        ]);
    }

    /// Puts `region` back on the peer network at its own address.
    fn heal(&self, region: usize) {
        let ip = format!("{}.1{region}", self.peer_net);
        docker(&[
            "network",
            "connect",
            "--ip",
            &ip,
            &self.peers_network(),
            &self.container(region),
        ]);
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let out = self.compose(&["down", "--volumes", "--remove-orphans", "--timeout", "5"]);
        if !out.status.success() {
            eprintln!("compose down: {}", String::from_utf8_lossy(&out.stderr));
        }
        // The image is this run's own; the Debian and Prometheus bases stay,
        // so the next run skips the bootstrap.
        let _ = Command::new("docker").args(["rmi", &self.image]).output();
    }
}

/// Runs `docker args`; panics with its stderr if it fails.
fn docker(args: &[&str]) -> String {
    let out = Command::new("docker")
        .args(args)
        .output()
        .expect("run docker");
    assert!(
        out.status.success(),
        "docker {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A free loopback port (bound, then released for compose to publish).
fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("addr").port()
}

/// Whether this machine can run the test; `false` means skip with a note.
fn engine_available() -> bool {
    let engine = Command::new("docker")
        .arg("info")
        .output()
        .is_ok_and(|o| o.status.success());
    let compose = Command::new("docker-compose")
        .arg("version")
        .output()
        .is_ok_and(|o| o.status.success());
    if engine && compose {
        return true;
    }
    assert!(
        std::env::var("MAAS_CONTAINER_TESTS").as_deref() != Ok("1"),
        "MAAS_CONTAINER_TESTS=1 but Docker (engine: {engine}) or docker-compose \
         (found: {compose}) is not usable"
    );
    eprintln!("skipped: no Docker engine or docker-compose here");
    false
}

/// Polls `check` every 200 ms until it holds; panics after `within`.
async fn eventually<F, Fut>(within: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let start = Instant::now();
    while !check().await {
        assert!(start.elapsed() < within, "not within {within:?}: {what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn client_token(user: &str) -> String {
    maas_node::sign_hs256_valid_for(JWT_SECRET.as_bytes(), user, Duration::from_secs(3600))
        .expect("sign")
}

/// One spend at `addr`: true if acknowledged, false on 402; anything else
/// fails the test.
async fn spend(addr: &str, user: &str) -> bool {
    let bearer = format!("Bearer {}", client_token(user));
    let r = request(
        addr,
        "GET",
        "/memes?query=cats",
        &[("authorization", &bearer)],
        "",
    )
    .await
    .unwrap_or_else(|e| panic!("spend at {addr}: {e}"));
    match r.status {
        200 => true,
        402 => false,
        other => panic!("spend at {addr}: {other} {}", r.body),
    }
}

/// A GET with the operator's credential; `None` if the node cannot be reached.
async fn operator_get(addr: &str, path: &str) -> Option<serde_json::Value> {
    let bearer = format!("Bearer {OPERATOR}");
    let r = request(addr, "GET", path, &[("authorization", &bearer)], "")
        .await
        .ok()?;
    (r.status == 200).then(|| r.json())
}

async fn balance(addr: &str, user: &str) -> Option<u64> {
    operator_get(addr, &format!("/v1/users/{user}"))
        .await
        .and_then(|v| v["balance"].as_u64())
}

/// Regions `addr` sees up.
async fn members_up(addr: &str) -> usize {
    operator_get(addr, "/v1/cluster").await.map_or(0, |v| {
        v["members"]
            .as_array()
            .map_or(0, |m| m.iter().filter(|m| m["state"] == "up").count())
    })
}

async fn converged(cluster: &Cluster, user: &str, expected: u64) -> bool {
    for region in 1..=3 {
        if balance(cluster.http(region), user).await != Some(expected) {
            return false;
        }
    }
    true
}

/// Builds the image and brings the cluster (and Prometheus) up.
async fn start() -> Cluster {
    let root = env!("CARGO_MANIFEST_DIR");
    let id = std::process::id();
    let tag = format!("maas:test-{id}");
    let built = Command::new(format!("{root}/deploy/container/build-image.sh"))
        .args([
            "--tag",
            &tag,
            "--binary",
            env!("CARGO_BIN_EXE_maas"),
            "--monitoring",
        ])
        .status()
        .expect("run build-image.sh");
    assert!(built.success(), "build-image.sh failed");

    let http = [free_port(), free_port(), free_port()].map(|p| format!("127.0.0.1:{p}"));
    let prometheus = format!("127.0.0.1:{}", free_port());
    let peer_net = format!("172.30.{}", 10 + id % 200);
    let port = |addr: &str| addr.rsplit(':').next().unwrap_or_default().to_owned();
    let env = vec![
        ("MAAS_IMAGE".to_owned(), tag.clone()),
        (
            "PROMETHEUS_IMAGE".to_owned(),
            "maas-local/prometheus".to_owned(),
        ),
        ("MAAS_PEER_NET".to_owned(), peer_net.clone()),
        ("MAAS_HTTP_PORT_1".to_owned(), port(&http[0])),
        ("MAAS_HTTP_PORT_2".to_owned(), port(&http[1])),
        ("MAAS_HTTP_PORT_3".to_owned(), port(&http[2])),
        ("PROMETHEUS_PORT".to_owned(), port(&prometheus)),
    ];
    let cluster = Cluster {
        project: format!("maastest{id}"),
        image: tag,
        peer_net,
        env,
        http,
        prometheus,
    };
    let up = cluster.compose(&[
        "up",
        "-d",
        "certs",
        "region-1",
        "region-2",
        "region-3",
        "prometheus",
    ]);
    assert!(
        up.status.success(),
        "compose up: {}",
        String::from_utf8_lossy(&up.stderr)
    );
    let c = &cluster;
    for region in 1..=3 {
        eventually(
            Duration::from_secs(60),
            "every region sees two peers up",
            move || async move { members_up(c.http(region)).await == 2 },
        )
        .await;
    }
    cluster
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_compose_cluster_survives_a_partition_and_a_killed_region() {
    if !engine_available() {
        return;
    }
    let cluster = start().await;
    let c = &cluster;
    let user = "container-user";

    // Every region serves, and every region sees every spend.
    for region in 1..=3 {
        assert!(
            spend(cluster.http(region), user).await,
            "region {region} spends"
        );
    }
    let mut acked = 3;
    eventually(Duration::from_secs(30), "3 spends seen everywhere", || {
        converged(&cluster, user, GRANT - 3)
    })
    .await;

    // Prometheus scrapes all three regions.
    eventually(
        Duration::from_secs(60),
        "Prometheus has 3 healthy targets",
        move || async move {
            let Ok(r) = request(&c.prometheus, "GET", "/api/v1/targets", &[], "").await else {
                return false;
            };
            r.status == 200
                && r.json()["data"]["activeTargets"]
                    .as_array()
                    .is_some_and(|t| t.len() == 3 && t.iter().all(|t| t["health"] == "up"))
        },
    )
    .await;

    // Region 3 cut off from its peers: both sides keep serving from their own
    // rights until those run out, and together never overspend.
    cluster.cut(3);
    let (mut side_a, mut side_b) = (0u64, 0u64);
    let (mut a_ok, mut b_ok) = (true, true);
    for _ in 0..400 {
        if a_ok {
            a_ok = spend(cluster.http(1), user).await;
            side_a += u64::from(a_ok);
        }
        if b_ok {
            b_ok = spend(cluster.http(3), user).await;
            side_b += u64::from(b_ok);
        }
        if !a_ok && !b_ok {
            break;
        }
    }
    assert!(!a_ok && !b_ok, "both sides ran out of their own rights");
    assert!(
        side_a > 0 && side_b > 0,
        "both sides served: {side_a}, {side_b}"
    );
    acked += side_a + side_b;
    assert!(
        acked <= GRANT,
        "acknowledged {acked} spends of {GRANT} tokens"
    );

    // Healed: every region converges to exactly the grant less what was acked.
    cluster.heal(3);
    eventually(
        Duration::from_secs(60),
        "exact convergence after the heal",
        || converged(&cluster, user, GRANT - acked),
    )
    .await;

    // A crash: region 2, cut off so that what it serves after the restart can
    // only come from its own volume, acknowledges spends and is killed.
    let payer = "container-payer";
    assert!(spend(cluster.http(1), payer).await);
    eventually(
        Duration::from_secs(30),
        "the payer is known everywhere",
        || converged(&cluster, payer, GRANT - 1),
    )
    .await;
    cluster.cut(2);
    let mut at_two = 0u64;
    for _ in 0..20 {
        if spend(cluster.http(2), payer).await {
            at_two += 1;
        }
    }
    assert!(
        at_two > 0,
        "region 2 spent from its own rights while cut off"
    );
    docker(&["kill", &cluster.container(2)]);
    docker(&["start", &cluster.container(2)]);
    eventually(
        Duration::from_secs(60),
        "region 2 serves again",
        move || async move { balance(c.http(2), payer).await.is_some() },
    )
    .await;
    assert_eq!(
        balance(cluster.http(2), payer).await,
        Some(GRANT - 1 - at_two),
        "region 2 kept every spend it acknowledged before the kill"
    );
    cluster.heal(2);
    eventually(
        Duration::from_secs(60),
        "exact convergence after the restart",
        || converged(&cluster, payer, GRANT - 1 - at_two),
    )
    .await;
    eventually(
        Duration::from_secs(60),
        "region 2 is a member again",
        move || async move { members_up(c.http(1)).await == 2 && members_up(c.http(2)).await == 2 },
    )
    .await;
}
