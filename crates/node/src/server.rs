//! Startup, the dev banner, background tasks and graceful shutdown.

use crate::auth::{Authenticator, JwtKey, sign_hs256_valid_for};
use crate::catalog::Catalog;
use crate::config::{Cli, DEV_JWT_SECRET, DEV_OPERATOR_TOKEN, LogFormat, PublicKeyAlgorithm};
use crate::core::CoreConfig;
use crate::metrics::Metrics;
use crate::rate_limit::RateLimiter;
use crate::replica::{Replica, ReplicaConfig};
use crate::service::Service;
use crate::store::Store;
use crate::{NodeError, http};
use ledger_crdt::{Genesis, RegionId};
use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

/// How often expired idempotency records are swept.
const SWEEP_EVERY: Duration = Duration::from_secs(3600);

/// Parses the command line, runs the node, and returns the process exit code.
pub fn main() -> std::process::ExitCode {
    let cli = <Cli as clap::Parser>::parse();
    init_logging(&cli);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("maas: cannot start the runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("maas: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn init_logging(cli: &Cli) {
    let builder = tracing_subscriber::fmt()
        .with_max_level(cli.log_level)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    // Ignore a second initialisation (tests may run several nodes in one process).
    let _ = match cli.log_format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Text => builder.try_init(),
    };
}

/// Runs a node until SIGINT or SIGTERM, then drains requests and flushes.
pub async fn run(cli: Cli) -> Result<(), NodeError> {
    let region = RegionId(cli.region);
    let genesis_regions: Vec<RegionId> = if cli.genesis_regions.is_empty() {
        vec![region]
    } else {
        cli.genesis_regions.iter().copied().map(RegionId).collect()
    };
    let genesis = Genesis::new(cli.welcome_grant, genesis_regions)?;
    let dev_secret = cli.jwt_secret.is_none() && cli.jwt_public_key.is_none();
    let jwt_key = match (&cli.jwt_secret, &cli.jwt_public_key) {
        (Some(secret), _) => JwtKey::Secret(secret.as_bytes().to_vec()),
        (None, Some(path)) => {
            let pem = std::fs::read(path)
                .map_err(|e| NodeError::Config(format!("reading {}: {e}", path.display())))?;
            match cli.jwt_algorithm {
                PublicKeyAlgorithm::Eddsa => JwtKey::EdDsaPem(pem),
                PublicKeyAlgorithm::Rs256 => JwtKey::Rs256Pem(pem),
            }
        }
        (None, None) => JwtKey::Secret(DEV_JWT_SECRET.as_bytes().to_vec()),
    };
    let operator_token = cli.operator_token.as_deref().unwrap_or(DEV_OPERATOR_TOKEN);
    let auth = Authenticator::new(&jwt_key, operator_token)?;

    let metrics = Arc::new(Metrics::default());
    let store = Store::open(&cli.data_dir, cli.cache_bytes)?;
    let durable = store.load()?;
    let core = CoreConfig {
        region,
        genesis,
        meme_cost: cli.meme_cost,
        idempotency_ttl_ms: cli.idempotency_ttl_secs.saturating_mul(1000),
        policy: crate::core::SpendPolicy::Escrow,
    };
    let replica = Replica::restore(ReplicaConfig::new(core), durable);
    let service = Arc::new(Service::new(
        replica,
        store,
        Catalog::builtin(cli.catalog_seed),
        auth,
        RateLimiter::new(cli.rate_limit),
        metrics,
    ));
    service.start_group_commit(Duration::from_micros(cli.commit_linger_us))?;
    tokio::spawn(tick(service.clone()));
    tokio::spawn(sweep_idempotency(service.clone()));

    let listener = tokio::net::TcpListener::bind(cli.listen).await?;
    let addr = listener.local_addr()?;
    banner(&cli, addr, dev_secret)?;
    tracing::info!(%addr, region = %region, data_dir = %cli.data_dir.display(), "serving");

    axum::serve(listener, http::router(service.clone(), cli.max_body_bytes))
        .with_graceful_shutdown(shutdown_signal())
        .await?;
    // Every acknowledged write already waited for its flush; this one covers
    // writes whose requests were abandoned mid-way.
    let last = service.clone();
    tokio::task::spawn_blocking(move || last.commit())
        .await
        .map_err(|_| NodeError::FlushFailed)?;
    tracing::info!("stopped cleanly");
    Ok(())
}

/// Prints where the node listens and, in dev mode, working credentials and curl
/// lines. The first line is stable: tests read the address from it.
fn banner(cli: &Cli, addr: std::net::SocketAddr, dev_secret: bool) -> Result<(), NodeError> {
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "maas listening on http://{addr} (region {})",
        cli.region
    )?;
    if dev_secret || cli.operator_token.is_none() {
        writeln!(
            out,
            "DEV MODE: built-in credentials below are public; never deploy them."
        )?;
        writeln!(
            out,
            "  set --jwt-secret/--jwt-public-key and --operator-token for real use."
        )?;
    }
    let operator = cli.operator_token.as_deref().unwrap_or(DEV_OPERATOR_TOKEN);
    if dev_secret {
        let month = Duration::from_secs(30 * 24 * 3600);
        let token = sign_hs256_valid_for(DEV_JWT_SECRET.as_bytes(), "demo-user", month)?;
        writeln!(out, "  demo user:      demo-user")?;
        writeln!(out, "  demo token:     {token}")?;
        writeln!(out, "Try:")?;
        writeln!(
            out,
            "  curl -H 'Authorization: Bearer {token}' 'http://{addr}/memes?lat=40.730610&lon=-73.935242&query=food'"
        )?;
    }
    if cli.operator_token.is_none() {
        writeln!(out, "  operator token: {operator}")?;
        writeln!(
            out,
            "  curl -X POST -H 'Authorization: Bearer {operator}' -H 'Content-Type: application/json' -d '{{\"user_id\":\"demo-user\",\"amount\":50}}' http://{addr}/update-token-balance"
        )?;
    }
    out.flush()?;
    Ok(())
}

/// How often the replica's timers run.
const TICK_EVERY: Duration = Duration::from_millis(10);

async fn tick(service: Arc<Service>) {
    let mut every = tokio::time::interval(TICK_EVERY);
    loop {
        every.tick().await;
        service.tick();
    }
}

async fn sweep_idempotency(service: Arc<Service>) {
    let mut every = tokio::time::interval(SWEEP_EVERY);
    loop {
        every.tick().await;
        let removed = service.expire_records();
        if removed > 0 {
            tracing::info!(removed, "expired idempotency records");
        }
    }
}

async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
    tracing::info!("shutting down: draining in-flight requests");
}
