//! The seed design (seed 000's answer), our baseline: the same route and JWT
//! check as maas, with each user's balance in Redis and one atomic
//! check-and-decrement Lua script per request.
//!
//! With Redis beside it this is the single-node baseline; with Redis in another
//! region (behind the delay proxy) it is the single-primary design, where every
//! spend outside the primary's region pays a cross-region round trip.

use std::sync::Arc;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// Environment variable that makes a bench executable serve the seed design.
pub const SEED_ROLE: &str = "MAAS_BENCH_SEED_SERVER";
/// Where that server's Redis is.
pub const REDIS_ENV: &str = "MAAS_BENCH_REDIS";
/// Tokens a user the server has never seen starts with.
pub const GRANT_ENV: &str = "MAAS_BENCH_GRANT";

/// Check-and-decrement in one atomic step: -1 if the balance does not cover it.
const SPEND_SCRIPT: &str = "local b = redis.call('GET', KEYS[1]) \
    if not b then b = tonumber(ARGV[2]) else b = tonumber(b) end \
    if b < tonumber(ARGV[1]) then return -1 end \
    b = b - tonumber(ARGV[1]) redis.call('SET', KEYS[1], b) return b";

struct SeedState {
    pool: RedisPool,
    sha: Vec<u8>,
    grant: String,
    auth: maas_node::Authenticator,
    catalog: maas_node::Catalog,
}

/// Serves the seed design at `addr` until killed.
pub fn seed_server(addr: &str, redis: &str, grant: u64) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let pool = RedisPool::new(redis.to_owned());
        let sha = pool
            .command(&[b"SCRIPT", b"LOAD", SPEND_SCRIPT.as_bytes()])
            .await
            .expect("load the script");
        let RespValue::Bulk(sha) = sha else {
            panic!("SCRIPT LOAD answered {sha:?}")
        };
        let key = maas_node::JwtKey::Secret(super::servers::SECRET.as_bytes().to_vec());
        let rules = maas_node::JwtRules::default();
        let auth =
            maas_node::Authenticator::new(&key, &rules, super::servers::OPERATOR).expect("auth");
        let state = Arc::new(SeedState {
            pool,
            sha,
            grant: grant.to_string(),
            auth,
            catalog: maas_node::Catalog::builtin(0),
        });
        let app = axum::Router::new()
            .route("/memes", axum::routing::get(seed_memes))
            .with_state(state);
        let listener = tokio::net::TcpListener::bind(addr).await.expect("bind");
        axum::serve(listener, app).await.expect("serve");
    });
}

async fn seed_memes(
    axum::extract::State(state): axum::extract::State<Arc<SeedState>>,
    headers: axum::http::HeaderMap,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let header = headers.get("authorization").map(|v| v.as_bytes());
    let Ok(maas_node::Principal::User(user)) = state.auth.identify(header) else {
        return axum::http::StatusCode::UNAUTHORIZED.into_response();
    };
    let key = format!("balance:{user}");
    let reply = state
        .pool
        .command(&[
            b"EVALSHA",
            &state.sha,
            b"1",
            key.as_bytes(),
            b"1",
            state.grant.as_bytes(),
        ])
        .await;
    match reply {
        Ok(RespValue::Integer(balance)) if balance >= 0 => {
            let meme = state.catalog.choose("cats", None);
            axum::Json(serde_json::json!({
                "id": meme.id, "title": meme.title,
                "image": format!("/v1/images/c{}.png", meme.id),
                "source": meme.source, "balance": balance,
            }))
            .into_response()
        }
        Ok(RespValue::Integer(_)) => axum::http::StatusCode::PAYMENT_REQUIRED.into_response(),
        _ => axum::http::StatusCode::SERVICE_UNAVAILABLE.into_response(),
    }
}

/// A RESP reply.
#[derive(Debug)]
enum RespValue {
    Integer(i64),
    Bulk(Vec<u8>),
    Other,
}

/// A minimal pool of Redis connections speaking RESP 2.
struct RedisPool {
    addr: String,
    idle: tokio::sync::Mutex<Vec<BufReader<TcpStream>>>,
}

impl RedisPool {
    fn new(addr: String) -> Self {
        Self {
            addr,
            idle: tokio::sync::Mutex::new(Vec::new()),
        }
    }

    async fn command(&self, args: &[&[u8]]) -> std::io::Result<RespValue> {
        let taken = self.idle.lock().await.pop();
        let mut conn = match taken {
            Some(c) => c,
            None => {
                let stream = TcpStream::connect(&self.addr).await?;
                stream.set_nodelay(true)?;
                BufReader::new(stream)
            }
        };
        let mut request = format!("*{}\r\n", args.len()).into_bytes();
        for arg in args {
            request.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
            request.extend_from_slice(arg);
            request.extend_from_slice(b"\r\n");
        }
        conn.get_mut().write_all(&request).await?;
        let mut line = String::new();
        conn.read_line(&mut line).await?;
        let value = match line.as_bytes().first() {
            Some(b':') => {
                RespValue::Integer(line[1..].trim().parse().map_err(std::io::Error::other)?)
            }
            Some(b'$') => {
                let len: usize = line[1..].trim().parse().map_err(std::io::Error::other)?;
                let mut body = vec![0; len + 2];
                conn.read_exact(&mut body).await?;
                body.truncate(len);
                RespValue::Bulk(body)
            }
            _ => RespValue::Other,
        };
        self.idle.lock().await.push(conn);
        Ok(value)
    }
}
