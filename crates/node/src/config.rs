//! Command-line flags; every flag also reads an environment variable.

use clap::{Parser, ValueEnum};
use std::net::SocketAddr;
use std::path::PathBuf;

/// HS256 secret used when none is configured. Dev only: printed in the banner.
pub const DEV_JWT_SECRET: &str = "maas-DEV-ONLY-jwt-secret-never-deploy";
/// Operator credential used when none is configured. Dev only: printed in the banner.
pub const DEV_OPERATOR_TOKEN: &str = "maas-DEV-ONLY-operator-token";

/// A regional node of MaaS, the escrowed token ledger behind "Memes as a Service".
///
/// With no flags it runs a single-region node on 127.0.0.1:8080 with an embedded
/// sled directory, the built-in meme catalog and dev-only credentials.
#[derive(Debug, Parser)]
#[command(name = "maas", version)]
pub struct Cli {
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

    /// Tokens one `GET /memes` costs.
    #[arg(long, env = "MAAS_MEME_COST", default_value_t = 1)]
    pub meme_cost: u64,

    /// HS256 secret that verifies client JWTs. Without it (and without
    /// --jwt-public-key) a dev-only secret is used.
    #[arg(long, env = "MAAS_JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<String>,

    /// PEM public key that verifies client JWTs, instead of a shared secret.
    #[arg(long, env = "MAAS_JWT_PUBLIC_KEY", conflicts_with = "jwt_secret")]
    pub jwt_public_key: Option<PathBuf>,

    /// Signature algorithm of --jwt-public-key.
    #[arg(long, env = "MAAS_JWT_ALGORITHM", value_enum, default_value_t = PublicKeyAlgorithm::Eddsa)]
    pub jwt_algorithm: PublicKeyAlgorithm,

    /// Bearer credential of operators and the billing team (16+ characters).
    /// Without it a dev-only credential is used.
    #[arg(long, env = "MAAS_OPERATOR_TOKEN", hide_env_values = true)]
    pub operator_token: Option<String>,

    /// Requests per second one user may make; 0 disables the limit.
    #[arg(long, env = "MAAS_RATE_LIMIT", default_value_t = 1000)]
    pub rate_limit: u32,

    /// How long an Idempotency-Key is remembered, in seconds.
    #[arg(long, env = "MAAS_IDEMPOTENCY_TTL_SECS", default_value_t = 24 * 3600)]
    pub idempotency_ttl_secs: u64,

    /// Largest request body accepted, in bytes.
    #[arg(long, env = "MAAS_MAX_BODY_BYTES", default_value_t = 16 * 1024)]
    pub max_body_bytes: usize,

    /// Microseconds the group commit waits after a write before flushing, so
    /// that more writes share one flush. Adds at most this much latency.
    #[arg(long, env = "MAAS_COMMIT_LINGER_US", default_value_t = 500)]
    pub commit_linger_us: u64,

    /// sled's page cache, in bytes.
    #[arg(long, env = "MAAS_CACHE_BYTES", default_value_t = 64 * 1024 * 1024)]
    pub cache_bytes: u64,

    /// Varies which meme a given query gets.
    #[arg(long, env = "MAAS_CATALOG_SEED", default_value_t = 0)]
    pub catalog_seed: u64,

    /// Log format.
    #[arg(long, env = "MAAS_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// Log level: error, warn, info, debug or trace.
    #[arg(long, env = "MAAS_LOG_LEVEL", default_value = "info")]
    pub log_level: tracing::Level,
}

/// Algorithms for public-key JWT verification.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum PublicKeyAlgorithm {
    /// Ed25519 (EdDSA).
    Eddsa,
    /// RSA PKCS#1 v1.5 with SHA-256.
    Rs256,
}

/// Log output formats.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}
