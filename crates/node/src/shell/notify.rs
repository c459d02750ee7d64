//! Low-balance notifications: when a user's balance crosses
//! `--low-balance-threshold` downward, or recovers to it, a signed event is
//! POSTed to `--notify-url`, at least once.
//!
//! Events are found in the statement lines a group commit writes, and go into
//! a durable outbox in the same log record: a crossing that is durable has
//! its event, whatever crashes after. A delivery task sends the outbox in
//! order, retries with backoff (a failing, slow or absent receiver holds
//! nothing else up), and deletes an event only once the receiver answered
//! 2xx. Receivers de-duplicate by the event's `id`.
//!
//! One event per crossing, not one per spend: a line crosses when the balance
//! before it and after it lie on two sides of the threshold. The region whose
//! own write crossed (in its view) sends it; a crossing made of spends in two
//! regions at once may be seen by neither, or by both (two events with their
//! own ids). Outbox keys: `n` + time (8 bytes, big-endian ms) + region (2
//! bytes) + user + `0x00` + `d`/`u` → the event's JSON.

use crate::StatementLine;
use crate::shell::engine::{Engine, now_ms};
use crate::shell::keys;
use crate::shell::store::Write;
use crate::shell::webhook;
use ledger_crdt::RegionId;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;

/// Events sent per pass.
const BATCH: usize = 64;
/// How long one delivery may take.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(5);
/// Backoff after a failed delivery: doubles from the first to the last.
const BACKOFF_FIRST_MS: u64 = 250;
const BACKOFF_MAX_MS: u64 = 60_000;
/// The most bytes read of a receiver's answer.
const MAX_ANSWER_BYTES: usize = 16 * 1024;

/// Where events go, and what crosses.
#[derive(Clone, Debug)]
pub(crate) struct NotifyConfig {
    /// `host:port` of the receiver.
    pub authority: String,
    /// The path, with any query.
    pub path: String,
    /// Signs every event (`Maas-Signature`, as billing webhooks are signed).
    pub secret: Vec<u8>,
    /// Below this the balance is low.
    pub threshold: u64,
}

impl NotifyConfig {
    /// From an `http://host:port/path` URL.
    pub(crate) fn new(url: &str, secret: Vec<u8>, threshold: u64) -> Result<Self, String> {
        let rest = url
            .strip_prefix("http://")
            .ok_or("--notify-url must be http://host:port/path")?;
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        if authority.is_empty() {
            return Err("--notify-url has no host".into());
        }
        Ok(Self {
            authority: authority.to_owned(),
            path: path.to_owned(),
            secret,
            threshold,
        })
    }
}

/// The outbox and its delivery.
pub(crate) struct Notifier {
    config: NotifyConfig,
    region: RegionId,
    wake: Notify,
}

impl Notifier {
    pub(crate) fn new(config: NotifyConfig, region: RegionId) -> Self {
        Self {
            config,
            region,
            wake: Notify::new(),
        }
    }

    /// The outbox entries for the crossings among `lines`: written with them.
    pub(crate) fn writes(&self, lines: &[StatementLine]) -> Vec<Write> {
        let threshold = i128::from(self.config.threshold);
        let mut writes = Vec::new();
        for line in lines.iter().filter(|l| l.region == self.region) {
            let after = i128::from(line.balance_after);
            let before = after - i128::from(line.amount);
            let (kind, tag) = if before >= threshold && after < threshold {
                ("balance.low", b'd')
            } else if before < threshold && after >= threshold {
                ("balance.recovered", b'u')
            } else {
                continue;
            };
            let key = keys::outbox(line.at.0, self.region, &line.user, tag);
            let event = serde_json::json!({
                "id": format!("{}-{}-{}-{}", self.region.0, line.at.0, hex(line.user.as_bytes()), tag as char),
                "type": kind,
                "user_id": line.user,
                "balance": line.balance_after,
                "threshold": self.config.threshold,
                "region": self.region.0,
                "at": crate::shell::rfc3339::format(line.at.0),
            });
            writes.push((key, Some(event.to_string().into_bytes())));
        }
        writes
    }

    /// New events are durable: deliver them.
    pub(crate) fn wake(&self) {
        self.wake.notify_one();
    }

    /// Delivers the outbox for ever: oldest first, each event until the
    /// receiver takes it.
    pub(crate) async fn run(self: Arc<Self>, engine: Arc<Engine>) {
        // Per event key: failed attempts, and when to try again.
        let mut backoff: HashMap<Vec<u8>, (u32, u64)> = HashMap::new();
        loop {
            let (outbox, past_outbox) = keys::all_of(keys::OUTBOX);
            let pending = engine
                .with_store(move |store| store.scan_first(&outbox, &past_outbox, BATCH))
                .await;
            let pending = match pending {
                Ok(p) => p,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot read the notification outbox");
                    Vec::new()
                }
            };
            let now = now_ms();
            let mut next_wake = now + BACKOFF_MAX_MS;
            for (key, body) in pending {
                let (failures, not_before) = backoff.get(&key).copied().unwrap_or((0, 0));
                if not_before > now {
                    next_wake = next_wake.min(not_before);
                    continue;
                }
                match self.deliver(&body).await {
                    Ok(()) => {
                        backoff.remove(&key);
                        let gone = key.clone();
                        let _ = engine
                            .with_store(move |store| store.write_now(vec![(gone, None)], false))
                            .await;
                        engine.metrics().notification("delivered");
                    }
                    Err(why) => {
                        let failures = failures.saturating_add(1);
                        let wait = BACKOFF_FIRST_MS
                            .saturating_mul(1 << failures.min(16).saturating_sub(1))
                            .min(BACKOFF_MAX_MS);
                        backoff.insert(key, (failures, now_ms() + wait));
                        next_wake = next_wake.min(now_ms() + wait);
                        engine.metrics().notification("failed");
                        tracing::warn!(reason = %why, failures, retry_in_ms = wait, "a low-balance notification was not taken; it will be retried");
                    }
                }
            }
            let sleep = Duration::from_millis(next_wake.saturating_sub(now_ms()));
            let _ = tokio::time::timeout(sleep, self.wake.notified()).await;
        }
    }

    /// One POST of `body`, signed now; `Ok` only on a 2xx.
    async fn deliver(&self, body: &[u8]) -> Result<(), String> {
        let attempt = async {
            let stream = tokio::net::TcpStream::connect(&self.config.authority)
                .await
                .map_err(|e| format!("connecting: {e}"))?;
            let (mut sender, connection) =
                hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                    .await
                    .map_err(|e| format!("handshake: {e}"))?;
            tokio::spawn(async move {
                let _ = connection.await;
            });
            let signature = webhook::sign(&self.config.secret, now_ms() / 1000, body);
            let request = hyper::Request::post(&self.config.path)
                .header(hyper::header::HOST, &self.config.authority)
                .header(hyper::header::CONTENT_TYPE, "application/json")
                .header(webhook::SIGNATURE_HEADER, signature)
                .body(axum::body::Body::from(body.to_vec()))
                .map_err(|e| format!("building the request: {e}"))?;
            let response = sender
                .send_request(request)
                .await
                .map_err(|e| format!("sending: {e}"))?;
            let status = response.status();
            let _ = axum::body::to_bytes(
                axum::body::Body::new(response.into_body()),
                MAX_ANSWER_BYTES,
            )
            .await;
            if status.is_success() {
                Ok(())
            } else {
                Err(format!("the receiver answered {status}"))
            }
        };
        tokio::time::timeout(ATTEMPT_TIMEOUT, attempt)
            .await
            .map_err(|_| format!("no answer within {ATTEMPT_TIMEOUT:?}"))?
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{LineKind, Millis};

    fn line(region: u16, amount: i64, balance_after: u64) -> StatementLine {
        StatementLine {
            user: "u".into(),
            at: Millis(1_000 + balance_after),
            region: RegionId(region),
            kind: if amount < 0 {
                LineKind::Spend
            } else {
                LineKind::Credit
            },
            amount,
            calls: 1,
            held: 0,
            balance_after,
            reference: None,
        }
    }

    #[test]
    fn one_event_per_crossing_and_only_for_our_own_writes() {
        let config = NotifyConfig::new("http://127.0.0.1:9/hook", b"s".to_vec(), 10).unwrap();
        let notifier = Notifier::new(config, RegionId(1));
        let kinds = |lines: &[StatementLine]| -> Vec<String> {
            notifier
                .writes(lines)
                .iter()
                .map(|(_, v)| {
                    let v: serde_json::Value = serde_json::from_slice(v.as_ref().unwrap()).unwrap();
                    v["type"].as_str().unwrap().to_owned()
                })
                .collect()
        };
        // 12 → 11 → 10 → 9 → 8: one crossing, at 10 → 9.
        let down: Vec<_> = [11, 10, 9, 8].iter().map(|&b| line(1, -1, b)).collect();
        assert_eq!(kinds(&down), ["balance.low"]);
        // A credit from 8 to 30 recovers; one from 30 to 40 does not.
        assert_eq!(
            kinds(&[line(1, 22, 30), line(1, 10, 40)]),
            ["balance.recovered"]
        );
        // Another region's line is its own to announce.
        assert!(kinds(&[line(2, -5, 5)]).is_empty());
        assert!(NotifyConfig::new("https://x/hook", Vec::new(), 1).is_err());
    }
}
