//! Startup, the dev banner, background tasks and graceful shutdown.

use crate::shell::app::{App, MemeParts};
use crate::shell::auth::{Authenticator, JwtKey, JwtRules, sign_hs256_valid_for};
use crate::shell::certs::TlsFiles;
use crate::shell::config::{
    Cli, ConfiguredJwt, Credentials, DEV_BILLING_WEBHOOK_SECRET, DEV_JWT_SECRET,
    DEV_OPERATOR_TOKEN, LogFormat, PublicKeyAlgorithm, Subcommand,
};
use crate::shell::engine::{Engine, now_ms};
use crate::shell::generator::{Embedded, MemeGenerator};
use crate::shell::http;
use crate::shell::images::Images;
use crate::shell::jobs::{Jobs, JobsConfig};
use crate::shell::limits::{FORGET_IDLE_EVERY, Limits};
use crate::shell::log_lines::LogLines;
use crate::shell::metrics::Metrics;
use crate::shell::notify::{Notifier, NotifyConfig};
use crate::shell::openai::{OpenAi, OpenAiConfig};
use crate::shell::statements::Statements;
use crate::shell::store::Store;
use crate::shell::transport::Transport;
use crate::shell::webhook::{self, WebhookVerifier};
use crate::{CaptionFilter, Catalog, NodeError, Replica, ReplicaConfig, RulesConfig};
use ledger_crdt::{Genesis, RegionId};
use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

/// How often expired idempotency records are swept.
const SWEEP_EVERY: Duration = Duration::from_secs(3600);

/// `maas healthcheck`: one `GET /ready` over a plain socket, bounded to 2 s in
/// all (connect, write, read).
fn healthcheck(addr: std::net::SocketAddr) -> std::process::ExitCode {
    use std::io::Read;
    let timeout = Duration::from_secs(2);
    let ready = (|| -> std::io::Result<bool> {
        let mut stream = std::net::TcpStream::connect_timeout(&addr, timeout)?;
        stream.set_read_timeout(Some(timeout))?;
        stream.set_write_timeout(Some(timeout))?;
        stream.write_all(b"GET /ready HTTP/1.0\r\nHost: localhost\r\n\r\n")?;
        let mut status = [0u8; 12];
        stream.read_exact(&mut status)?;
        Ok(status.starts_with(b"HTTP/1.") && &status[8..12] == b" 200")
    })();
    match ready {
        Ok(true) => std::process::ExitCode::SUCCESS,
        Ok(false) => {
            let _ = writeln!(std::io::stderr(), "maas: {addr} is not ready");
            std::process::ExitCode::FAILURE
        }
        Err(e) => {
            let _ = writeln!(std::io::stderr(), "maas: {addr}: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Parses the command line, runs the node, and returns the process exit code.
pub fn main() -> std::process::ExitCode {
    let cli = <Cli as clap::Parser>::parse();
    match &cli.command {
        Some(Subcommand::Certs { dir, names }) => return certs_command(dir, names),
        Some(Subcommand::WebhookSign { body, secret }) => {
            let secret = secret.as_deref().unwrap_or(DEV_BILLING_WEBHOOK_SECRET);
            let header = webhook::sign(secret.as_bytes(), now_ms() / 1_000, body.as_bytes());
            let _ = writeln!(std::io::stdout(), "{header}");
            return std::process::ExitCode::SUCCESS;
        }
        Some(Subcommand::Healthcheck { addr }) => return healthcheck(*addr),
        Some(Subcommand::Dev {
            regions,
            http_port,
            peer_port,
            dir,
            no_restart,
        }) => {
            return crate::shell::dev::run(&crate::shell::dev::DevCluster {
                regions: *regions,
                http_port: *http_port,
                peer_port: *peer_port,
                dir: dir.clone(),
                restart: !*no_restart,
            });
        }
        None => {}
    }
    init_logging(&cli);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            let _ = writeln!(std::io::stderr(), "maas: cannot start the runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(run(cli));
    // A blocking task stuck on a dead disk must not hold the exit hostage.
    runtime.shutdown_timeout(Duration::from_secs(1));
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            // Not eprintln!: with stderr gone, it would panic instead of exiting.
            let _ = writeln!(std::io::stderr(), "maas: {e}");
            match e {
                NodeError::FlushFailed => std::process::ExitCode::from(EXIT_FINAL_FLUSH_FAILED),
                _ => std::process::ExitCode::FAILURE,
            }
        }
    }
}

/// The exit code when the final flush at shutdown failed or did not finish:
/// writes never acknowledged may be lost (no acknowledged write is).
pub(crate) const EXIT_FINAL_FLUSH_FAILED: u8 = 3;

/// How long shutdown waits for its final flush.
const FINAL_FLUSH_TIMEOUT: Duration = Duration::from_secs(5);

fn init_logging(cli: &Cli) {
    let builder = tracing_subscriber::fmt()
        .with_max_level(cli.log_level)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        // By default a failed log write is reported with eprintln!, which
        // panics when stderr itself is what failed (a full disk, /dev/full):
        // a log line is never worth a thread.
        .log_internal_errors(false);
    // Ignore a second initialisation (tests may run several nodes in one process).
    let _ = match cli.log_format {
        LogFormat::Json => builder
            .fmt_fields(tracing_subscriber::fmt::format::JsonFields::new())
            .event_format(LogLines::Json)
            .try_init(),
        LogFormat::Text => builder.event_format(LogLines::Text).try_init(),
    };
}

/// The catalog, images and AI jobs, from the flags.
fn meme_parts(
    cli: &Cli,
    engine: &Arc<Engine>,
    metrics: &Arc<Metrics>,
) -> Result<MemeParts, NodeError> {
    let flags = &cli.memes;
    let filter = Arc::new(match &flags.caption_blocklist_file {
        Some(path) => {
            let extra = std::fs::read_to_string(path).map_err(|e| {
                NodeError::Config(format!("--caption-blocklist-file {}: {e}", path.display()))
            })?;
            CaptionFilter::with_extra(&extra)
        }
        None => CaptionFilter::builtin(),
    });
    // One core stays with the ledger path.
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    let workers = flags
        .ai_workers
        .map_or(cores.saturating_sub(1).max(1), |n| n as usize);
    let cpu = Arc::new(tokio::sync::Semaphore::new(workers));
    let images = Arc::new(Images::new(
        flags.image_cache_bytes,
        cpu,
        flags.public_url.clone(),
        engine.clone(),
        metrics.clone(),
    ));
    let generator: Arc<dyn MemeGenerator> = match &flags.ai_endpoint {
        None => Arc::new(Embedded::new(filter.clone())),
        Some(endpoint) => {
            let api_key = match &flags.ai_api_key_file {
                None => None,
                Some(path) => {
                    let key = std::fs::read_to_string(path).map_err(|e| {
                        NodeError::Config(format!("--ai-api-key-file {}: {e}", path.display()))
                    })?;
                    let key = key.trim().to_owned();
                    if key.is_empty() || key.chars().any(char::is_control) {
                        return Err(NodeError::Config(format!(
                            "--ai-api-key-file {} holds no usable key",
                            path.display()
                        )));
                    }
                    Some(key)
                }
            };
            let config = OpenAiConfig {
                endpoint: endpoint.clone(),
                api_key,
                model: flags.ai_model.clone(),
                mode: flags.ai_mode,
                timeout: Duration::from_secs(flags.ai_timeout_secs),
                fallback: flags.ai_fallback,
            };
            Arc::new(
                OpenAi::new(config, filter.clone(), metrics.clone()).map_err(NodeError::Config)?,
            )
        }
    };
    tracing::info!(
        generator = generator.name(),
        workers,
        queue = flags.ai_queue,
        "AI memes"
    );
    let config = JobsConfig {
        queue_capacity: flags.ai_queue as usize,
        workers,
        cost: flags.ai_meme_cost,
        keep_records_ms: cli.idempotency_ttl_secs.saturating_mul(1_000),
    };
    let jobs = Jobs::start(
        engine.clone(),
        images.clone(),
        generator,
        config,
        metrics.clone(),
    );
    Ok(MemeParts {
        catalog: Catalog::builtin(cli.catalog_seed),
        images,
        jobs,
    })
}

/// Runs a node until SIGINT or SIGTERM, then drains requests and flushes.
pub(crate) async fn run(cli: Cli) -> Result<(), NodeError> {
    cli.check().map_err(NodeError::Config)?;
    if cli.exit_with_parent {
        crate::shell::dev::exit_with_parent().map_err(NodeError::Config)?;
    }
    let region = RegionId(cli.region);
    let genesis_regions: Vec<RegionId> = if cli.genesis_regions.is_empty() {
        vec![region]
    } else {
        cli.genesis_regions.iter().copied().map(RegionId).collect()
    };
    let genesis = Genesis::new(cli.welcome_grant, genesis_regions)?;
    let credentials = cli.credentials().map_err(NodeError::Config)?;
    let dev_credentials = matches!(credentials, Credentials::Dev);
    let billing_secret = cli
        .billing_secret(dev_credentials)
        .map_err(NodeError::Config)?;
    let (jwt_key, operator_token) = match credentials {
        Credentials::Dev => (
            JwtKey::Secret(DEV_JWT_SECRET.as_bytes().to_vec()),
            DEV_OPERATOR_TOKEN.to_owned(),
        ),
        Credentials::Configured {
            jwt,
            operator_token,
        } => (jwt_key(jwt)?, operator_token),
    };
    let rules = JwtRules {
        leeway_secs: cli.jwt_leeway_secs,
        audience: cli.jwt_audience.clone(),
        issuer: cli.jwt_issuer.clone(),
    };
    let auth = Authenticator::new(&jwt_key, &rules, &operator_token)?;

    let metrics = Arc::new(Metrics::default());
    let store = Store::open(&cli.data_dir, cli.cache_bytes)?;
    let durable = store.load()?;
    let rules = RulesConfig {
        region,
        genesis,
        meme_cost: cli.meme_cost,
        idempotency_ttl_ms: cli.idempotency_ttl_secs.saturating_mul(1000),
        policy: spend_policy(&cli),
    };
    let mut config = ReplicaConfig::new(rules);
    config.hold_ttl_ms = cli.hold_ttl_secs.saturating_mul(1_000);
    config.statements = cli.statement_retention_days > 0;
    config.batch_age_ms = cli.replication_batch_ms;
    config.catch_up_grace_ms = cli.catch_up_grace_ms;
    let grant = config.rules.genesis.grant();
    // The peer socket is bound first: its address is part of our identity.
    let clustered = cli.peer_listen.is_some() || !cli.join.is_empty();
    let peer_socket = if clustered {
        let bind = cli
            .peer_listen
            .unwrap_or_else(|| std::net::SocketAddr::from(([127, 0, 0, 1], 0)));
        let socket = std::net::UdpSocket::bind(bind)?;
        config.addr = cli.advertise.unwrap_or(socket.local_addr()?);
        Some(socket)
    } else {
        None
    };
    // A new life of this node wins over its older self in the membership.
    config.generation = now_ms();
    config.seed = config.generation ^ u64::from(region.0);
    let replica = Replica::restore(config, durable);
    let engine = Arc::new(Engine::new(replica, store, metrics.clone()));
    engine.start_group_commit(Duration::from_micros(cli.commit_linger_us))?;
    engine.start_checkpoints(Duration::from_millis(cli.checkpoint_ms))?;
    tokio::spawn(engine.clone().run_ticker());
    tokio::spawn(sweep_idempotency(engine.clone()));
    let statements = Arc::new(Statements::new(
        engine.clone(),
        grant,
        cli.statement_retention_days,
    ));
    tokio::spawn(expire_statements(statements.clone()));
    if let (Some(url), Some(secret)) = (&cli.notify_url, &cli.notify_secret) {
        let config = NotifyConfig::new(url, secret.as_bytes().to_vec(), cli.low_balance_threshold)
            .map_err(NodeError::Config)?;
        let notifier = Arc::new(Notifier::new(config, region));
        engine.set_notifier(notifier.clone());
        tokio::spawn(notifier.run(engine.clone()));
    }
    let transport = match peer_socket {
        Some(socket) => {
            let tls = tls_files(&cli)?;
            let peer_addr = socket.local_addr()?;
            let transport = Transport::start(socket, &tls, region, engine.clone())?;
            engine.join(&cli.join);
            tracing::info!(%peer_addr, seeds = ?cli.join, "cluster transport up");
            Some((transport, peer_addr))
        }
        None => None,
    };

    let listener = tokio::net::TcpListener::bind(cli.listen).await?;
    let addr = listener.local_addr()?;
    // The banner is for people; a closed or full stdout must not stop a node.
    if let Err(e) = banner(&cli, addr, transport.as_ref().map(|t| t.1), dev_credentials) {
        tracing::warn!(error = %e, "could not print the banner");
    }
    tracing::info!(%addr, region = %region, data_dir = %cli.data_dir.display(), "serving");

    let memes = meme_parts(&cli, &engine, &metrics)?;
    memes.jobs.recover().await?;
    let limits = listener_limits(&cli);
    metrics.connection_cap(limits.max_connections);
    let rate_limits = Limits::new(cli.rate_limit, cli.rate_limit_ip);
    let app = Arc::new(App::new(
        engine.clone(),
        memes,
        auth,
        rate_limits,
        metrics,
        WebhookVerifier::new(billing_secret.as_deref(), cli.webhook_tolerance_secs),
        statements,
    ));
    let forgetting = app.clone();
    tokio::spawn(async move {
        let mut every = tokio::time::interval(FORGET_IDLE_EVERY);
        loop {
            every.tick().await;
            forgetting.limits.forget_idle();
        }
    });
    let router = http::router(
        app,
        cli.max_body_bytes,
        Duration::from_secs(cli.request_timeout_secs),
    );
    let open = engine.connection_count();
    let drained =
        crate::shell::listener::serve(listener, router, limits, open, shutdown_signal()).await;
    if drained.closed_by_force > 0 {
        tracing::warn!(
            connections = drained.closed_by_force,
            "closed connections at the end of the shutdown grace"
        );
    }
    if let Some((transport, _)) = transport {
        if !cli.stay_on_shutdown {
            leave(&engine).await;
        }
        transport.close(Duration::from_secs(2)).await;
    }
    // Every acknowledged write already waited for its flush; this one covers
    // writes whose requests were abandoned mid-way, and is bounded in time.
    let last = engine.clone();
    let flushed = tokio::time::timeout(
        FINAL_FLUSH_TIMEOUT,
        // Then a checkpoint, so a clean stop leaves no log to replay.
        tokio::task::spawn_blocking(move || last.commit().and_then(|()| last.store().checkpoint())),
    )
    .await;
    match flushed {
        Ok(Ok(Ok(()))) => {
            tracing::info!("stopped cleanly");
            Ok(())
        }
        Ok(Ok(Err(e))) => {
            tracing::error!(error = %e, "the final flush failed");
            Err(NodeError::FlushFailed)
        }
        Ok(Err(_)) | Err(_) => {
            tracing::error!("the final flush did not finish in time");
            Err(NodeError::FlushFailed)
        }
    }
}

/// The listener's limits: the flags', with the connection cap lowered to fit
/// the open-file limit (raised first, where the OS allows).
fn listener_limits(cli: &Cli) -> crate::shell::listener::Limits {
    /// Descriptors kept for sled, QUIC and the rest of the process.
    const RESERVED_FDS: u64 = 256;
    let mut max_connections = cli.max_connections;
    if let Some(fds) = crate::shell::listener::raise_fd_limit() {
        let fit = fds.saturating_sub(RESERVED_FDS).max(1);
        if max_connections > fit {
            tracing::warn!(
                requested = max_connections,
                open_file_limit = fds,
                using = fit,
                "--max-connections lowered to fit the open-file limit"
            );
            max_connections = fit;
        }
    }
    crate::shell::listener::Limits {
        header_read_timeout: Duration::from_secs(cli.header_read_timeout_secs),
        max_connections: usize::try_from(max_connections).unwrap_or(usize::MAX),
        shutdown_grace: Duration::from_secs(cli.shutdown_grace),
    }
}

/// Reads the configured JWT key.
fn jwt_key(jwt: ConfiguredJwt) -> Result<JwtKey, NodeError> {
    Ok(match jwt {
        ConfiguredJwt::Secret(secret) => JwtKey::Secret(secret.into_bytes()),
        ConfiguredJwt::PublicKey(path, algorithm) => {
            let pem = std::fs::read(&path)
                .map_err(|e| NodeError::Config(format!("reading {}: {e}", path.display())))?;
            match algorithm {
                PublicKeyAlgorithm::Eddsa => JwtKey::EdDsaPem(pem),
                PublicKeyAlgorithm::Rs256 => JwtKey::Rs256Pem(pem),
            }
        }
    })
}

/// Hands every right this region holds to live peers, then leaves the
/// membership; gives up after 10 s (the rights stay ours, safely, until we
/// return).
async fn leave(engine: &Engine) {
    engine.leave();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !engine.left() && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    if engine.left() {
        tracing::info!("left the cluster; rights handed to live peers");
    } else {
        tracing::warn!("graceful leave did not finish; this region keeps its rights");
    }
}

/// The TLS files to use: the flags', or a dev CA under the data directory.
fn tls_files(cli: &Cli) -> Result<TlsFiles, NodeError> {
    match (&cli.tls_ca, &cli.tls_cert, &cli.tls_key) {
        (Some(ca), Some(cert), Some(key)) => Ok(TlsFiles {
            ca: ca.clone(),
            cert: cert.clone(),
            key: key.clone(),
        }),
        _ => {
            let dir = cli.data_dir.join("tls");
            tracing::warn!(dir = %dir.display(), "DEV ONLY: using a generated cluster CA; peers need certificates from it (see `maas certs`)");
            crate::shell::certs::ensure_node(&dir, &format!("region-{}", cli.region))
        }
    }
}

/// `maas certs`: creates the CA and the named node certificates.
fn certs_command(dir: &std::path::Path, names: &[String]) -> std::process::ExitCode {
    for name in names {
        match crate::shell::certs::ensure_node(dir, name) {
            Ok(files) => println!(
                "{name}: --tls-ca {} --tls-cert {} --tls-key {}",
                files.ca.display(),
                files.cert.display(),
                files.key.display()
            ),
            Err(e) => {
                eprintln!("maas certs: {e}");
                return std::process::ExitCode::FAILURE;
            }
        }
    }
    std::process::ExitCode::SUCCESS
}

/// Prints where the node listens and, in dev mode, working credentials and curl
/// lines. The first lines are stable: tests read the addresses from them.
fn banner(
    cli: &Cli,
    addr: std::net::SocketAddr,
    peer_addr: Option<std::net::SocketAddr>,
    dev: bool,
) -> Result<(), NodeError> {
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "maas listening on http://{addr} (region {})",
        cli.region
    )?;
    if let Some(peer) = peer_addr {
        writeln!(out, "maas peers on quic://{peer}")?;
    }
    if dev {
        writeln!(
            out,
            "DEV MODE: built-in credentials below are public; never deploy them."
        )?;
        writeln!(
            out,
            "  set --jwt-secret/--jwt-public-key and --operator-token for real use."
        )?;
        let operator = DEV_OPERATOR_TOKEN;
        let month = Duration::from_secs(30 * 24 * 3600);
        let token = sign_hs256_valid_for(DEV_JWT_SECRET.as_bytes(), "demo-user", month)?;
        writeln!(out, "  demo user:      demo-user")?;
        writeln!(out, "  demo token:     {token}")?;
        writeln!(out, "Try:")?;
        writeln!(
            out,
            "  curl -H 'Authorization: Bearer {token}' 'http://{addr}/memes?lat=40.730610&lon=-73.935242&query=food'"
        )?;
        writeln!(out, "  operator token: {operator}")?;
        writeln!(
            out,
            "  curl -X POST -H 'Authorization: Bearer {operator}' -H 'Content-Type: application/json' -d '{{\"user_id\":\"demo-user\",\"amount\":50}}' http://{addr}/update-token-balance"
        )?;
        writeln!(
            out,
            "  billing webhook secret: {DEV_BILLING_WEBHOOK_SECRET}"
        )?;
        writeln!(
            out,
            "Upgrade demo-user to Memes AI (a signed billing event):"
        )?;
        let exe =
            std::env::current_exe().map_or_else(|_| "maas".to_owned(), |p| p.display().to_string());
        writeln!(
            out,
            "  BODY='{{\"id\":\"evt_demo\",\"user_id\":\"demo-user\",\"memes_ai_until\":\"2099-01-01T00:00:00Z\",\"version\":1}}'"
        )?;
        writeln!(
            out,
            "  curl -X POST -H \"Maas-Signature: $('{exe}' webhook-sign --body \"$BODY\")\" -d \"$BODY\" http://{addr}/v1/webhooks/billing"
        )?;
        writeln!(
            out,
            "then the same GET /memes makes an AI meme (charged once delivered); open its \"image\" under http://{addr}"
        )?;
    }
    out.flush()?;
    Ok(())
}

/// Hourly: compacts statement lines past the retention.
async fn expire_statements(statements: Arc<Statements>) {
    let mut every = tokio::time::interval(SWEEP_EVERY);
    loop {
        every.tick().await;
        match statements.run(|s| s.expire(now_ms())).await {
            Ok(0) => {}
            Ok(lines) => tracing::info!(lines, "compacted statement lines past the retention"),
            Err(e) => tracing::warn!(error = %e, "statement retention failed; retried in an hour"),
        }
    }
}

async fn sweep_idempotency(engine: Arc<Engine>) {
    let mut every = tokio::time::interval(SWEEP_EVERY);
    loop {
        every.tick().await;
        let removed = engine.expire_records();
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

/// Escrow, except in a benchmark that asks for the naive baseline.
fn spend_policy(cli: &Cli) -> crate::SpendPolicy {
    #[cfg(feature = "simulation")]
    if cli.naive_counters_that_overspend {
        tracing::warn!("BENCHMARK ONLY: naive counters, spends can overdraw balances");
        return crate::SpendPolicy::NaiveLocalView;
    }
    let _ = cli;
    crate::SpendPolicy::Escrow
}
