//! The OpenAI-compatible backend: captions from `/v1/chat/completions` drawn
//! by the embedded renderer (text mode), or the picture itself from
//! `/v1/images/generations` (image mode). Any server speaking the API will do:
//! a hosted one behind a TLS-terminating proxy, or llama.cpp, vLLM or Ollama
//! on loopback.
//!
//! Every call has a timeout and one retry. Three failures in a row open a
//! circuit breaker for [`BREAKER_OPEN`]: jobs go straight to the fallback
//! (the embedded generator, unless `--ai-fallback none`), and every fallback
//! says so in the job's answer and in `maas_ai_fallbacks_total`.

use crate::CaptionFilter;
use crate::shell::config::{AiFallback, AiMode};
use crate::shell::generator::{
    Artwork, BoxFuture, Embedded, GenRequest, GenerateError, Generated, MemeGenerator, title_of,
};
use crate::shell::metrics::Metrics;
use base64::Engine as _;
use bytes::Bytes;
use serde_json::{Value, json};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The largest response body read from the server.
const MAX_RESPONSE_BYTES: usize = 12 * 1024 * 1024;
/// The largest PNG accepted from the server.
pub(crate) const MAX_PNG_BYTES: usize = 8 * 1024 * 1024;
/// The largest side of an accepted PNG, px.
const MAX_PNG_SIDE: u32 = 2048;
/// Failures in a row that open the breaker.
const BREAKER_FAILURES: u32 = 3;
/// How long the breaker stays open before one call may try again.
const BREAKER_OPEN: Duration = Duration::from_secs(30);
/// The longest caption taken from the server, in characters.
const MAX_CAPTION_CHARS: usize = 90;

/// Where and how to call the server.
pub(crate) struct OpenAiConfig {
    /// `http://host:port` with an optional base path (a trailing `/v1` is
    /// dropped: the API paths carry it).
    pub endpoint: String,
    pub api_key: Option<String>,
    pub model: String,
    pub mode: AiMode,
    pub timeout: Duration,
    pub fallback: AiFallback,
}

/// The backend.
pub(crate) struct OpenAi {
    authority: String,
    base_path: String,
    config: OpenAiConfig,
    filter: Arc<CaptionFilter>,
    embedded: Embedded,
    breaker: Mutex<Breaker>,
    metrics: Arc<Metrics>,
}

/// Consecutive failures, and until when calls are skipped.
#[derive(Debug, Default)]
struct Breaker {
    failures: u32,
    open_until: Option<Instant>,
}

impl Breaker {
    fn allows(&mut self, now: Instant) -> bool {
        match self.open_until {
            Some(until) if now < until => false,
            Some(_) => {
                // Half-open: this call tries; one more failure re-opens it.
                self.open_until = None;
                self.failures = BREAKER_FAILURES - 1;
                true
            }
            None => true,
        }
    }

    fn record(&mut self, ok: bool, now: Instant) {
        if ok {
            self.failures = 0;
        } else {
            self.failures += 1;
            if self.failures >= BREAKER_FAILURES {
                self.open_until = Some(now + BREAKER_OPEN);
            }
        }
    }
}

impl OpenAi {
    /// The backend for `config`; `Err` if the endpoint is not `http://host[:port][/path]`.
    pub(crate) fn new(
        config: OpenAiConfig,
        filter: Arc<CaptionFilter>,
        metrics: Arc<Metrics>,
    ) -> Result<Self, String> {
        let rest = config
            .endpoint
            .strip_prefix("http://")
            .ok_or("the AI endpoint must start with http://")?;
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, ""),
        };
        if authority.is_empty() {
            return Err("the AI endpoint has no host".into());
        }
        let authority = if authority.contains(':') {
            authority.to_owned()
        } else {
            format!("{authority}:80")
        };
        let base_path = path
            .trim_end_matches('/')
            .trim_end_matches("/v1")
            .to_owned();
        Ok(Self {
            authority,
            base_path,
            embedded: Embedded::new(filter.clone()),
            filter,
            config,
            breaker: Mutex::new(Breaker::default()),
            metrics,
        })
    }

    async fn generate_or_fall_back(
        &self,
        request: &GenRequest,
    ) -> Result<Generated, GenerateError> {
        let allowed = self.breaker().allows(Instant::now());
        let failure = if allowed {
            let mut result = self.call(request).await;
            if matches!(result, Err(Failure::Transient(_))) {
                result = self.call(request).await;
            }
            // A filtered answer is the server working; anything else failing
            // counts against it.
            let worked = matches!(result, Ok(_) | Err(Failure::Filtered));
            self.breaker().record(worked, Instant::now());
            match result {
                Ok(generated) => return Ok(generated),
                Err(failure) => failure,
            }
        } else {
            Failure::CircuitOpen
        };
        self.metrics.ai_fallback(failure.label());
        match self.config.fallback {
            AiFallback::Embedded => {
                tracing::warn!(reason = %failure, "AI server failed; the embedded generator made the meme");
                let mut generated = self.embedded.make(request);
                generated.fallback = Some(failure.to_string());
                Ok(generated)
            }
            AiFallback::None => Err(GenerateError::Upstream(failure.to_string())),
        }
    }

    fn breaker(&self) -> std::sync::MutexGuard<'_, Breaker> {
        self.breaker.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// One call, within the timeout.
    async fn call(&self, request: &GenRequest) -> Result<Generated, Failure> {
        let call = async {
            match self.config.mode {
                AiMode::Text => self.captions(request).await,
                AiMode::Image => self.picture(request).await,
            }
        };
        tokio::time::timeout(self.config.timeout, call)
            .await
            .unwrap_or_else(|_| {
                Err(Failure::Transient(format!(
                    "no answer within {:?}",
                    self.config.timeout
                )))
            })
    }

    async fn captions(&self, request: &GenRequest) -> Result<Generated, Failure> {
        let body = json!({
            "model": self.config.model,
            "messages": [
                {"role": "system", "content": "You write short, funny, safe-for-work meme captions. \
                    Answer with exactly two lines: the top caption, then the bottom caption, \
                    each under 60 characters, without quotes."},
                {"role": "user", "content": format!("Topic: {}. Audience locale: {}.", request.query, request.locale)},
            ],
            "max_tokens": 80,
            "temperature": 1.0,
            "seed": request.seed,
        });
        let answer = self.post("/v1/chat/completions", &body).await?;
        let content = answer
            .pointer("/choices/0/message/content")
            .and_then(Value::as_str)
            .ok_or_else(|| Failure::Invalid("no choices[0].message.content".into()))?;
        let captions: Vec<String> = content
            .lines()
            .map(|l| l.trim().trim_matches(|c| c == '"' || c == '\'').trim())
            .filter(|l| !l.is_empty())
            .take(2)
            .map(|l| {
                l.chars()
                    .filter(|c| !c.is_control())
                    .take(MAX_CAPTION_CHARS)
                    .collect()
            })
            .collect();
        if captions.is_empty() {
            return Err(Failure::Invalid("empty captions".into()));
        }
        if captions.iter().any(|c| !self.filter.allows(c)) {
            return Err(Failure::Filtered);
        }
        // The server's words over the embedded generator's picture.
        let mut generated = self.embedded.make(request);
        let Artwork::Spec(spec) = &mut generated.art else {
            return Err(Failure::Invalid("unexpected artwork".into()));
        };
        spec.layout = crate::Layout::TopBottom;
        spec.captions = captions;
        generated.title = title_of(&spec.captions);
        generated.generator = "openai";
        Ok(generated)
    }

    async fn picture(&self, request: &GenRequest) -> Result<Generated, Failure> {
        if !self.filter.allows(&request.query) {
            return Err(Failure::Filtered);
        }
        let body = json!({
            "model": self.config.model,
            "prompt": format!("A funny, safe-for-work meme about {} for an audience in {}, with no text.", request.query, request.locale),
            "n": 1,
            "size": "512x512",
            "response_format": "b64_json",
        });
        let answer = self.post("/v1/images/generations", &body).await?;
        let b64 = answer
            .pointer("/data/0/b64_json")
            .and_then(Value::as_str)
            .ok_or_else(|| Failure::Invalid("no data[0].b64_json".into()))?;
        if b64.len() > MAX_PNG_BYTES / 3 * 4 + 4 {
            return Err(Failure::Invalid("the image is larger than 8 MiB".into()));
        }
        let png = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .map_err(|_| Failure::Invalid("b64_json is not base64".into()))?;
        check_png(&png)?;
        Ok(Generated {
            art: Artwork::Png(Bytes::from(png)),
            title: request.query.clone(),
            generator: "openai",
            fallback: None,
        })
    }

    /// POSTs `body` as JSON to `path` and returns the JSON answer.
    async fn post(&self, path: &str, body: &Value) -> Result<Value, Failure> {
        let transient =
            |what: &str, e: &dyn std::fmt::Display| Failure::Transient(format!("{what}: {e}"));
        let stream = tokio::net::TcpStream::connect(&self.authority)
            .await
            .map_err(|e| transient("connecting", &e))?;
        let (mut sender, connection) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                .await
                .map_err(|e| transient("handshake", &e))?;
        tokio::spawn(async move {
            let _ = connection.await;
        });
        let mut builder = hyper::Request::post(format!("{}{path}", self.base_path))
            .header(hyper::header::HOST, &self.authority)
            .header(hyper::header::CONTENT_TYPE, "application/json");
        if let Some(key) = &self.config.api_key {
            builder = builder.header(hyper::header::AUTHORIZATION, format!("Bearer {key}"));
        }
        let request = builder
            .body(axum::body::Body::from(body.to_string()))
            .map_err(|e| Failure::Invalid(format!("building the request: {e}")))?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| transient("sending", &e))?;
        let status = response.status();
        let bytes = axum::body::to_bytes(
            axum::body::Body::new(response.into_body()),
            MAX_RESPONSE_BYTES,
        )
        .await
        .map_err(|e| transient("reading the answer", &e))?;
        if status.is_server_error() || status.as_u16() == 429 {
            return Err(Failure::Transient(format!("the server answered {status}")));
        }
        if !status.is_success() {
            return Err(Failure::Invalid(format!("the server answered {status}")));
        }
        serde_json::from_slice(&bytes)
            .map_err(|_| Failure::Invalid("the answer is not JSON".into()))
    }
}

/// Checks that `png` is a PNG of a sensible size (reads only the header).
fn check_png(png: &[u8]) -> Result<(), Failure> {
    if png.len() > MAX_PNG_BYTES {
        return Err(Failure::Invalid("the image is larger than 8 MiB".into()));
    }
    let reader =
        image::ImageReader::with_format(std::io::Cursor::new(png), image::ImageFormat::Png);
    let (w, h) = reader
        .into_dimensions()
        .map_err(|_| Failure::Invalid("the image is not a PNG".into()))?;
    if w == 0 || h == 0 || w > MAX_PNG_SIDE || h > MAX_PNG_SIDE {
        return Err(Failure::Invalid(format!("the image is {w}×{h}")));
    }
    Ok(())
}

/// Why a call to the server did not give a meme.
#[derive(Debug, thiserror::Error)]
enum Failure {
    /// Worth one retry, and counts against the breaker.
    #[error("{0}")]
    Transient(String),
    /// The server answered, but not with a usable meme.
    #[error("unusable answer: {0}")]
    Invalid(String),
    /// The captions or prompt were blocked by the content filter.
    #[error("blocked by the caption filter")]
    Filtered,
    /// The breaker is open: recent calls failed.
    #[error("the AI server failed repeatedly; calls paused")]
    CircuitOpen,
}

impl Failure {
    fn label(&self) -> &'static str {
        match self {
            Failure::Transient(_) => "error",
            Failure::Invalid(_) => "invalid",
            Failure::Filtered => "filtered",
            Failure::CircuitOpen => "circuit_open",
        }
    }
}

impl MemeGenerator for OpenAi {
    fn generate<'a>(
        &'a self,
        request: &'a GenRequest,
    ) -> BoxFuture<'a, Result<Generated, GenerateError>> {
        Box::pin(self.generate_or_fall_back(request))
    }

    fn name(&self) -> &'static str {
        "openai"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_breaker_opens_after_three_failures_and_lets_one_call_try_later() {
        let mut breaker = Breaker::default();
        let t0 = Instant::now();
        for _ in 0..2 {
            assert!(breaker.allows(t0));
            breaker.record(false, t0);
        }
        assert!(breaker.allows(t0));
        breaker.record(false, t0);
        assert!(!breaker.allows(t0 + Duration::from_secs(1)));
        let later = t0 + BREAKER_OPEN + Duration::from_secs(1);
        assert!(breaker.allows(later));
        breaker.record(false, later);
        assert!(!breaker.allows(later));
        let much_later = later + BREAKER_OPEN + Duration::from_secs(1);
        assert!(breaker.allows(much_later));
        breaker.record(true, much_later);
        assert_eq!(breaker.failures, 0);
    }
}
