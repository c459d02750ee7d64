//! Command-line flags; every flag also reads an environment variable.

use clap::{Parser, ValueEnum};
use std::net::SocketAddr;
use std::path::PathBuf;

/// HS256 secret used when none is configured. Dev only: printed in the banner.
pub const DEV_JWT_SECRET: &str = "maas-DEV-ONLY-jwt-secret-never-deploy";
/// Operator credential used when none is configured. Dev only: printed in the banner.
pub const DEV_OPERATOR_TOKEN: &str = "maas-DEV-ONLY-operator-token";
/// The billing webhook secret of a node run without credential flags.
pub const DEV_BILLING_WEBHOOK_SECRET: &str = "maas-DEV-ONLY-billing-webhook-secret";

/// A regional node of MaaS, the escrowed token ledger behind "Memes as a Service".
///
/// With no flags it runs a single-region node on 127.0.0.1:8080 with an embedded
/// sled directory, the built-in meme catalog and dev-only credentials.
#[derive(Debug, Parser)]
#[command(name = "maas", version, args_conflicts_with_subcommands = true)]
pub(crate) struct Cli {
    /// Something other than running a node.
    #[command(subcommand)]
    pub command: Option<Subcommand>,

    /// Address the HTTP API listens on (port 0 picks a free port).
    #[arg(long, env = "MAAS_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,

    /// Directory of the sled database; created if missing.
    #[arg(long, env = "MAAS_DATA_DIR", default_value = "maas-data")]
    pub data_dir: PathBuf,

    /// This node's region id, unique in the cluster.
    #[arg(long, env = "MAAS_REGION", default_value_t = 1)]
    pub region: u16,

    /// Regions holding the welcome grant's rights at first sight of a user,
    /// comma-separated; the same on every region. Defaults to this region alone.
    #[arg(long, env = "MAAS_GENESIS_REGIONS", value_delimiter = ',')]
    pub genesis_regions: Vec<u16>,

    /// Tokens every new user starts with.
    #[arg(long, env = "MAAS_WELCOME_GRANT", default_value_t = ledger_crdt::DEFAULT_WELCOME_GRANT)]
    pub welcome_grant: u64,

    /// Tokens one `GET /memes` costs (at least 1).
    #[arg(long, env = "MAAS_MEME_COST", default_value_t = 1,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub meme_cost: u64,

    /// HS256 secret that verifies client JWTs, at least 32 bytes (RFC 7518
    /// §3.2). Set it (or --jwt-public-key) together with --operator-token; with
    /// no credential flag at all the node runs on public dev-only credentials.
    #[arg(long, env = "MAAS_JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<String>,

    /// PEM public key that verifies client JWTs, instead of a shared secret.
    #[arg(long, env = "MAAS_JWT_PUBLIC_KEY", conflicts_with = "jwt_secret")]
    pub jwt_public_key: Option<PathBuf>,

    /// Signature algorithm of --jwt-public-key.
    #[arg(long, env = "MAAS_JWT_ALGORITHM", value_enum, default_value_t = PublicKeyAlgorithm::Eddsa)]
    pub jwt_algorithm: PublicKeyAlgorithm,

    /// HMAC-SHA256 secret of the billing system's webhook
    /// (`POST /v1/webhooks/billing`), at least 32 bytes. Without it (and with
    /// real credentials) the webhook refuses every call.
    #[arg(long, env = "MAAS_BILLING_WEBHOOK_SECRET", hide_env_values = true)]
    pub billing_webhook_secret: Option<String>,

    /// How far a webhook's signed timestamp may be from now, in seconds, either
    /// way (a replayed old call is refused).
    #[arg(long, env = "MAAS_WEBHOOK_TOLERANCE_SECS", default_value_t = 300,
          value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub webhook_tolerance_secs: u64,

    /// An open hold (an AI meme being made) not captured or released within
    /// this many seconds is released: nothing is charged.
    #[arg(long, env = "MAAS_HOLD_TTL_SECS", default_value_t = 60,
          value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub hold_ttl_secs: u64,

    /// Seconds of clock skew allowed when checking a JWT's `exp` and `nbf`.
    #[arg(long, env = "MAAS_JWT_LEEWAY_SECS", default_value_t = 5,
          value_parser = clap::value_parser!(u64).range(0..=300))]
    pub jwt_leeway_secs: u64,

    /// Require client JWTs to carry this `aud` (audience).
    #[arg(long, env = "MAAS_JWT_AUDIENCE")]
    pub jwt_audience: Option<String>,

    /// Require client JWTs to carry this `iss` (issuer).
    #[arg(long, env = "MAAS_JWT_ISSUER")]
    pub jwt_issuer: Option<String>,

    /// Bearer credential of operators and the billing team (16+ characters,
    /// not blank). Required whenever a JWT key is given.
    #[arg(long, env = "MAAS_OPERATOR_TOKEN", hide_env_values = true)]
    pub operator_token: Option<String>,

    /// Requests per second one user may make (GCRA, a burst of one second's
    /// worth), counted by each region on its own; 0 disables the limit.
    #[arg(long, env = "MAAS_RATE_LIMIT", default_value_t = 1000)]
    pub rate_limit: u32,

    /// Requests per second one client IP may make, counted before any
    /// authentication so that floods of bad credentials are limited too; 0
    /// disables it. Behind a proxy every client shares its address: raise it.
    #[arg(long, env = "MAAS_RATE_LIMIT_IP", default_value_t = 10_000)]
    pub rate_limit_ip: u32,

    /// How long an Idempotency-Key is remembered, in seconds (at least 1).
    #[arg(long, env = "MAAS_IDEMPOTENCY_TTL_SECS", default_value_t = 24 * 3600,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub idempotency_ttl_secs: u64,

    /// Days a statement line is kept before it is compacted into the user's
    /// opening balance (default 400); 0 keeps no statements at all.
    #[arg(long, env = "MAAS_STATEMENT_RETENTION_DAYS", default_value_t = 400,
          value_parser = clap::value_parser!(u32).range(0..=36_500))]
    pub statement_retention_days: u32,

    /// Where low-balance events go (`http://host:port/path`): POSTed, signed
    /// with --notify-secret, when a balance crosses --low-balance-threshold
    /// downward or recovers to it.
    #[arg(long, env = "MAAS_NOTIFY_URL", value_parser = endpoint_url, requires = "notify_secret")]
    pub notify_url: Option<String>,

    /// Signs low-balance events (at least 32 bytes; its own secret, not the
    /// billing webhook's).
    #[arg(long, env = "MAAS_NOTIFY_SECRET", hide_env_values = true)]
    pub notify_secret: Option<String>,

    /// A balance below this many tokens is low (see --notify-url).
    #[arg(long, env = "MAAS_LOW_BALANCE_THRESHOLD", default_value_t = 10)]
    pub low_balance_threshold: u64,

    /// Largest request body accepted, in bytes (256 to 16 MiB).
    #[arg(long, env = "MAAS_MAX_BODY_BYTES", default_value_t = 16 * 1024,
          value_parser = body_limit)]
    pub max_body_bytes: usize,

    /// Seconds a connection may take to send a complete request head, counted
    /// from when the server starts waiting for one (so an idle keep-alive
    /// connection is closed after it too).
    #[arg(long, env = "MAAS_HEADER_READ_TIMEOUT_SECS", default_value_t = 10,
          value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub header_read_timeout_secs: u64,

    /// Seconds one request may take from its head to its answer (a slow body
    /// included); past it the answer is 408.
    #[arg(long, env = "MAAS_REQUEST_TIMEOUT_SECS", default_value_t = 30,
          value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub request_timeout_secs: u64,

    /// HTTP connections served at once; more get a 503 and are closed. Lowered
    /// at start to fit the open-file limit.
    #[arg(long, env = "MAAS_MAX_CONNECTIONS", default_value_t = 4096,
          value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub max_connections: u64,

    /// On SIGTERM/SIGINT, seconds open connections get to finish before they
    /// are closed; the final flush happens either way.
    #[arg(long, env = "MAAS_SHUTDOWN_GRACE", default_value_t = 10,
          value_parser = clap::value_parser!(u64).range(0..=3600))]
    pub shutdown_grace: u64,

    /// Microseconds the group commit waits at most after a write before
    /// flushing, so that more writes share one flush; only while writes come
    /// faster than one per flush, only until none has come for a quarter of
    /// it, and not once every open connection waits or eight writes share
    /// the flush. Adds at most this much latency (at most 100000). Each flush
    /// is an `fdatasync`, about two disk requests: against 500, 2000 took
    /// 6–9 % off the CPU per request of the seeds' SLA run.
    #[arg(long, env = "MAAS_COMMIT_LINGER_US", default_value_t = 2000,
          value_parser = clap::value_parser!(u64).range(0..=100_000))]
    pub commit_linger_us: u64,

    /// Milliseconds a region gathers its writes before sending them to its
    /// peers as one batch. Longer sends fewer bytes per spend (a user written
    /// twice in one batch travels once) and delays replication, which escrow
    /// does not depend on for safety. Rights a peer asked for leave at once
    /// (1 to 1000).
    #[arg(long, env = "MAAS_REPLICATION_BATCH_MS", default_value_t = 25,
          value_parser = clap::value_parser!(u64).range(1..=1000))]
    pub replication_batch_ms: u64,

    /// Milliseconds a write stays out of anti-entropy's answers after it was
    /// sent (or, from a third region, received): it is most likely still on
    /// its way to the asker, and answering with it sends it twice. About the
    /// longest round trip between regions plus the batch; 0 answers with
    /// everything at once (0 to 60000).
    #[arg(long, env = "MAAS_CATCH_UP_GRACE_MS", default_value_t = 500,
          value_parser = clap::value_parser!(u64).range(0..=60_000))]
    pub catch_up_grace_ms: u64,

    /// Milliseconds between checkpoints: each flushes sled and deletes the
    /// write-ahead log it covers. Longer means less flushing and more log to
    /// replay after a crash (10 to 3600000).
    #[arg(long, env = "MAAS_CHECKPOINT_MS", default_value_t = 1000,
          value_parser = clap::value_parser!(u64).range(10..=3_600_000))]
    pub checkpoint_ms: u64,

    /// sled's page cache, in bytes. Each checkpoint reads back the pages of
    /// the users who spent that this cache no longer holds: with a million
    /// users, 256 MiB took 40–50 % of the checkpoint's CPU off. Each MiB
    /// costs about 2.2 MiB of RSS: ten million users took 3.1 GiB with the
    /// default, and 3.8 GiB and rising with 256 MiB in session 28, when a
    /// user cost 14 bytes less (benches/README.md, sessions 27, 28 and 33).
    #[arg(long, env = "MAAS_CACHE_BYTES", default_value_t = 64 * 1024 * 1024)]
    pub cache_bytes: u64,

    /// Varies which meme a given query gets.
    #[arg(long, env = "MAAS_CATALOG_SEED", default_value_t = 0)]
    pub catalog_seed: u64,

    /// Meme images and the AI memes of the premium tier.
    #[command(flatten)]
    pub memes: MemeArgs,

    /// Log format.
    #[arg(long, env = "MAAS_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// Log level: error, warn, info, debug or trace.
    #[arg(long, env = "MAAS_LOG_LEVEL", default_value = "info")]
    pub log_level: tracing::Level,

    /// UDP address of the QUIC endpoint peers talk to (gossip and replication).
    /// Without it and without --join the node runs alone.
    #[arg(long, env = "MAAS_PEER_LISTEN")]
    pub peer_listen: Option<SocketAddr>,

    /// The peer address other regions should use, if not --peer-listen's
    /// (`ip:port`, or `host:port` resolved once at start).
    #[arg(long, env = "MAAS_ADVERTISE", value_parser = peer_addr)]
    pub advertise: Option<SocketAddr>,

    /// Peer addresses of cluster members to join through, comma-separated
    /// (`ip:port`, or `host:port` resolved once at start).
    #[arg(long, env = "MAAS_JOIN", value_delimiter = ',', value_parser = peer_addr)]
    pub join: Vec<SocketAddr>,

    /// The cluster CA certificate (PEM). Without the three --tls-* flags a
    /// dev-only CA and certificate are generated under the data directory.
    #[arg(long, env = "MAAS_TLS_CA", requires_all = ["tls_cert", "tls_key"])]
    pub tls_ca: Option<PathBuf>,

    /// This node's certificate (PEM), signed by the cluster CA (`maas certs`).
    #[arg(long, env = "MAAS_TLS_CERT", requires_all = ["tls_ca", "tls_key"])]
    pub tls_cert: Option<PathBuf>,

    /// This node's private key (PEM).
    #[arg(long, env = "MAAS_TLS_KEY", requires_all = ["tls_ca", "tls_cert"])]
    pub tls_key: Option<PathBuf>,

    /// On SIGTERM, stay a member holding its rights instead of handing them to
    /// live peers (for a quick restart; the default is a graceful leave).
    #[arg(long, env = "MAAS_STAY_ON_SHUTDOWN")]
    pub stay_on_shutdown: bool,

    /// Exit (as on SIGTERM) when the parent process dies: set by `maas dev`
    /// for its regions, so that no region outlives its supervisor.
    #[arg(long, hide = true)]
    pub exit_with_parent: bool,

    /// Benchmarks only, and only in builds with the `simulation` feature (test
    /// and bench builds): check spends against the balance this replica sees, as
    /// async-replicated counters do. It overspends; the benchmark shows how much.
    #[cfg(feature = "simulation")]
    #[arg(long, hide = true)]
    pub naive_counters_that_overspend: bool,
}

/// Flags of meme images and AI memes.
#[derive(Debug, clap::Args)]
pub(crate) struct MemeArgs {
    /// This node's public base URL (e.g. `https://eu.memes.example`): image
    /// links are absolute under it. Without it they are paths on this node.
    #[arg(long, env = "MAAS_PUBLIC_URL", value_parser = public_url)]
    pub public_url: Option<String>,

    /// Bytes of encoded PNGs kept in memory (images render again on a miss).
    #[arg(long, env = "MAAS_IMAGE_CACHE_BYTES", default_value_t = 64 * 1024 * 1024)]
    pub image_cache_bytes: usize,

    /// Tokens one AI meme costs a subscriber, held while it is made and
    /// charged only once it is delivered (at least 1).
    #[arg(long, env = "MAAS_AI_MEME_COST", default_value_t = 5,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub ai_meme_cost: u64,

    /// AI jobs waiting for a worker; past it `GET /memes` answers 503
    /// `/problems/ai-busy` (or a curated meme with `fallback=curated`).
    #[arg(long, env = "MAAS_AI_QUEUE", default_value_t = 64,
          value_parser = clap::value_parser!(u64).range(1..=100_000))]
    pub ai_queue: u64,

    /// Jobs generated at once. Defaults to one less than the cores (at least
    /// one), so the ledger path always keeps a core.
    #[arg(long, env = "MAAS_AI_WORKERS", value_parser = clap::value_parser!(u64).range(1..=256))]
    pub ai_workers: Option<u64>,

    /// An OpenAI-compatible server (`http://127.0.0.1:11434` for a local
    /// Ollama, say). Without it AI memes come from the embedded procedural
    /// generator.
    #[arg(long, env = "MAAS_AI_ENDPOINT", value_parser = endpoint_url)]
    pub ai_endpoint: Option<String>,

    /// A file holding the server's API key (sent as a bearer token).
    #[arg(long, env = "MAAS_AI_API_KEY_FILE", requires = "ai_endpoint")]
    pub ai_api_key_file: Option<PathBuf>,

    /// The model to ask for.
    #[arg(long, env = "MAAS_AI_MODEL", default_value = "gpt-4o-mini")]
    pub ai_model: String,

    /// `text`: ask `/v1/chat/completions` for captions and draw them;
    /// `image`: ask `/v1/images/generations` for the picture itself.
    #[arg(long, env = "MAAS_AI_MODE", value_enum, default_value_t = AiMode::Text)]
    pub ai_mode: AiMode,

    /// Seconds one call to the AI server may take (one retry follows a failure).
    #[arg(long, env = "MAAS_AI_TIMEOUT_SECS", default_value_t = 20,
          value_parser = clap::value_parser!(u64).range(1..=600))]
    pub ai_timeout_secs: u64,

    /// What a job does when the AI server fails: draw with the embedded
    /// generator (and say so), or fail (nothing is charged).
    #[arg(long, env = "MAAS_AI_FALLBACK", value_enum, default_value_t = AiFallback::Embedded)]
    pub ai_fallback: AiFallback,

    /// Extra blocked caption words, one per line, added to the built-in list.
    #[arg(long, env = "MAAS_CAPTION_BLOCKLIST_FILE")]
    pub caption_blocklist_file: Option<PathBuf>,
}

/// What an OpenAI-compatible server is asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub(crate) enum AiMode {
    /// Captions, drawn by the embedded renderer.
    Text,
    /// The image.
    Image,
}

/// What a job does when the AI server fails.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub(crate) enum AiFallback {
    /// Use the embedded generator.
    Embedded,
    /// Fail the job; its hold is released.
    None,
}

fn public_url(text: &str) -> Result<String, String> {
    let url = text.trim_end_matches('/');
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))
        .ok_or("must start with http:// or https://")?;
    if rest.is_empty() || rest.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("must be a URL such as https://memes.example".into());
    }
    Ok(url.to_owned())
}

fn endpoint_url(text: &str) -> Result<String, String> {
    let url = public_url(text)?;
    if url.starts_with("https://") {
        return Err("only http:// endpoints are supported (run a TLS-terminating proxy, or a local server on loopback)".into());
    }
    Ok(url)
}

/// The subcommands.
#[derive(Debug, clap::Subcommand)]
pub(crate) enum Subcommand {
    /// Create the cluster CA (if missing) and node certificates signed by it.
    Certs {
        /// Directory for ca.pem, ca.key and <name>.pem/<name>.key.
        #[arg(long, default_value = "maas-certs")]
        dir: PathBuf,
        /// A node certificate to issue; repeat for several.
        #[arg(long = "name", default_value = "node-1")]
        names: Vec<String>,
    },
    /// Print the `Maas-Signature` header for a billing webhook body, signed now
    /// (what the billing system sends; handy with curl).
    WebhookSign {
        /// The exact request body that will be sent.
        #[arg(long)]
        body: String,
        /// The webhook secret; defaults to the dev secret.
        #[arg(long, env = "MAAS_BILLING_WEBHOOK_SECRET", hide_env_values = true)]
        secret: Option<String>,
    },
    /// Exit 0 if a node answers `GET /ready` with 200 within 2 s, else 1: a
    /// container's health check with no curl in the image.
    Healthcheck {
        /// The node's HTTP address.
        #[arg(long, default_value = "127.0.0.1:8080")]
        addr: std::net::SocketAddr,
    },
    /// Run several regions on loopback, one process each, for a demo.
    Dev {
        /// How many regions.
        #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u16).range(1..=9))]
        regions: u16,
        /// HTTP port of region 1; region N listens on this + N - 1.
        #[arg(long, default_value_t = 8080)]
        http_port: u16,
        /// QUIC port of region 1; region N listens on this + N - 1.
        #[arg(long, default_value_t = 7001)]
        peer_port: u16,
        /// Directory for every region's data and the dev CA.
        #[arg(long, default_value = "maas-dev")]
        dir: PathBuf,
        /// Do not restart a region that dies; the others keep serving.
        #[arg(long)]
        no_restart: bool,
    },
}

/// `ip:port`, or `host:port` resolved now (to its first address): membership
/// names a peer by one socket address for its whole life.
fn peer_addr(text: &str) -> Result<SocketAddr, String> {
    use std::net::ToSocketAddrs;
    if let Ok(addr) = text.parse() {
        return Ok(addr);
    }
    let mut addrs = text
        .to_socket_addrs()
        .map_err(|e| format!("not ip:port, and {text} does not resolve: {e}"))?;
    addrs
        .next()
        .ok_or_else(|| format!("{text} resolves to no address"))
}

fn body_limit(text: &str) -> Result<usize, String> {
    let n: usize = text.parse().map_err(|e| format!("{e}"))?;
    if (256..=16 * 1024 * 1024).contains(&n) {
        Ok(n)
    } else {
        Err("must be from 256 to 16777216 bytes".into())
    }
}

/// How clients and operators are authenticated, resolved from the flags.
pub(crate) enum Credentials {
    /// No credential flag was given: the public dev-only secret and operator
    /// token, announced in the banner.
    Dev,
    /// Real credentials.
    Configured {
        /// Verifies client JWTs.
        jwt: ConfiguredJwt,
        /// The operator credential.
        operator_token: String,
    },
}

/// The JWT key flags, before the key file is read.
pub(crate) enum ConfiguredJwt {
    /// An HS256 secret (already checked for length).
    Secret(String),
    /// A public key file and its algorithm.
    PublicKey(PathBuf, PublicKeyAlgorithm),
}

/// The shortest HS256 secret accepted: the hash's output size (RFC 7518 §3.2).
pub(crate) const MIN_HS256_SECRET_BYTES: usize = 32;
/// The shortest operator credential accepted.
pub(crate) const MIN_OPERATOR_TOKEN_BYTES: usize = 16;

impl Cli {
    /// Which credentials to use. Dev credentials only when *no* credential flag
    /// is given; a half-configured node is refused, naming what is missing, so
    /// the public dev operator token can never sit beside a real JWT key.
    pub(crate) fn credentials(&self) -> Result<Credentials, String> {
        let jwt = match (&self.jwt_secret, &self.jwt_public_key) {
            (Some(secret), _) => Some(ConfiguredJwt::Secret(secret.clone())),
            (None, Some(path)) => Some(ConfiguredJwt::PublicKey(path.clone(), self.jwt_algorithm)),
            (None, None) => None,
        };
        let claims_flags = self.jwt_audience.is_some()
            || self.jwt_issuer.is_some()
            || self.billing_webhook_secret.is_some();
        match (jwt, &self.operator_token) {
            (None, None) if !claims_flags => Ok(Credentials::Dev),
            (None, _) => Err(
                "--jwt-secret or --jwt-public-key is required once any credential flag is set"
                    .into(),
            ),
            (Some(_), None) => Err(
                "--operator-token is required with --jwt-secret or --jwt-public-key \
                 (the dev operator token is never accepted beside a real key)"
                    .into(),
            ),
            (Some(jwt), Some(operator_token)) => {
                if let ConfiguredJwt::Secret(secret) = &jwt
                    && (secret.len() < MIN_HS256_SECRET_BYTES || secret.trim().is_empty())
                {
                    return Err(format!(
                        "--jwt-secret must be at least {MIN_HS256_SECRET_BYTES} bytes \
                         (it is {}); anyone could forge tokens with a short one",
                        secret.len()
                    ));
                }
                if operator_token.trim().len() < MIN_OPERATOR_TOKEN_BYTES {
                    return Err(format!(
                        "--operator-token must be at least {MIN_OPERATOR_TOKEN_BYTES} \
                         characters, not counting surrounding whitespace"
                    ));
                }
                Ok(Credentials::Configured {
                    jwt,
                    operator_token: operator_token.clone(),
                })
            }
        }
    }

    /// The billing webhook's secret: the flag's (checked), the dev one with dev
    /// credentials, or none (the webhook refuses every call).
    pub(crate) fn billing_secret(&self, dev: bool) -> Result<Option<Vec<u8>>, String> {
        match &self.billing_webhook_secret {
            Some(secret) if secret.len() < MIN_HS256_SECRET_BYTES || secret.trim().is_empty() => {
                Err(format!(
                    "--billing-webhook-secret must be at least {MIN_HS256_SECRET_BYTES} bytes \
                     (it is {}); anyone could forge billing events with a short one",
                    secret.len()
                ))
            }
            Some(secret) => Ok(Some(secret.as_bytes().to_vec())),
            None if dev => Ok(Some(DEV_BILLING_WEBHOOK_SECRET.as_bytes().to_vec())),
            None => Ok(None),
        }
    }

    /// Whether the node runs in a cluster (it has a peer endpoint).
    pub(crate) fn clustered(&self) -> bool {
        self.peer_listen.is_some() || !self.join.is_empty()
    }

    /// Settings that parse but cannot be right together.
    pub(crate) fn check(&self) -> Result<(), String> {
        if !self.clustered()
            && !self.genesis_regions.is_empty()
            && !self.genesis_regions.contains(&self.region)
        {
            return Err(format!(
                "--genesis-regions {:?} leaves out this region ({}), and with no \
                 --peer-listen or --join it runs alone: no user could ever spend",
                self.genesis_regions, self.region
            ));
        }
        if self.advertise.is_some() && !self.clustered() {
            return Err("--advertise needs --peer-listen or --join".into());
        }
        if self.notify_url.is_some() {
            if self.notify_secret.as_ref().is_none_or(|s| s.len() < 32) {
                return Err("--notify-secret must be at least 32 bytes".into());
            }
            if self.statement_retention_days == 0 {
                return Err(
                    "--notify-url needs statements (low balances are found in their lines): \
                     --statement-retention-days must not be 0"
                        .into(),
                );
            }
        }
        // A job's server call and its retry must fit in its hold's life, or
        // every slow job would be made and then not charged.
        let job_secs = self
            .memes
            .ai_timeout_secs
            .saturating_mul(2)
            .saturating_add(5);
        if self.memes.ai_endpoint.is_some() && job_secs > self.hold_ttl_secs {
            return Err(format!(
                "--hold-ttl-secs {} is shorter than two --ai-timeout-secs {} calls and a \
                 render: raise the TTL or lower the timeout",
                self.hold_ttl_secs, self.memes.ai_timeout_secs
            ));
        }
        Ok(())
    }
}

/// Algorithms for public-key JWT verification.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub(crate) enum PublicKeyAlgorithm {
    /// Ed25519 (EdDSA).
    Eddsa,
    /// RSA PKCS#1 v1.5 with SHA-256.
    Rs256,
}

/// Log output formats.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub(crate) enum LogFormat {
    /// Human-readable lines; one written while a request is served names it
    /// (`request{request_id=…}:`).
    Text,
    /// One JSON object per line: `timestamp`, `level`, `request_id` (while a
    /// request is served), `fields`, `target`, and `spans` if any.
    Json,
}

#[cfg(test)]
mod tests {
    use super::peer_addr;

    #[test]
    fn peer_addresses_are_ip_port_or_a_name_resolved_at_start() {
        assert_eq!(
            peer_addr("10.0.0.7:7001"),
            Ok("10.0.0.7:7001".parse().unwrap())
        );
        // From /etc/hosts: no resolver is asked.
        assert!(
            peer_addr("localhost:7001").is_ok_and(|a| a.ip().is_loopback() && a.port() == 7001)
        );
        assert!(peer_addr("no-port-here").is_err());
    }
}
