//! Billing webhook signatures, Stripe-style: the header
//! `Maas-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<raw body>")>`.
//! The timestamp is signed too, so an old call replayed later is refused by
//! the tolerance window, and the check is constant-time.

use ring::hmac;
use std::fmt::Write;

/// The header carrying the signature.
pub(crate) const SIGNATURE_HEADER: &str = "maas-signature";

/// Why a webhook call was refused (the problem's detail).
pub(crate) type Refused = &'static str;

/// Checks billing webhook signatures.
pub(crate) struct WebhookVerifier {
    key: Option<hmac::Key>,
    tolerance_secs: u64,
}

impl WebhookVerifier {
    /// A verifier for `secret`; with none, every call is refused.
    pub(crate) fn new(secret: Option<&[u8]>, tolerance_secs: u64) -> Self {
        Self {
            key: secret.map(|s| hmac::Key::new(hmac::HMAC_SHA256, s)),
            tolerance_secs,
        }
    }

    /// Whether `header` signs `body` with our secret, within the tolerance of
    /// `now_secs`.
    pub(crate) fn verify(
        &self,
        header: Option<&str>,
        body: &[u8],
        now_secs: u64,
    ) -> Result<(), Refused> {
        let Some(key) = &self.key else {
            return Err(
                "billing webhooks are not configured on this node (--billing-webhook-secret)",
            );
        };
        let header = header.ok_or("the Maas-Signature header is missing")?;
        let mut timestamp = None;
        let mut signatures = Vec::new();
        for part in header.split(',') {
            match part.trim().split_once('=') {
                Some(("t", t)) => timestamp = t.parse::<u64>().ok(),
                Some(("v1", hex)) => signatures.extend(decode_hex(hex)),
                _ => {}
            }
        }
        let t = timestamp.ok_or("Maas-Signature has no valid t=<unix seconds>")?;
        if t.abs_diff(now_secs) > self.tolerance_secs {
            return Err("the signature's timestamp is outside the tolerance window");
        }
        let signed = signed_payload(t, body);
        if signatures
            .iter()
            .any(|s| hmac::verify(key, &signed, s).is_ok())
        {
            Ok(())
        } else {
            Err("no v1 signature matches the body")
        }
    }
}

/// The `Maas-Signature` value for `body` at `t`: what the billing system
/// sends (and what `maas webhook sign` and the tests produce).
pub fn sign(secret: &[u8], t: u64, body: &[u8]) -> String {
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret);
    let tag = hmac::sign(&key, &signed_payload(t, body));
    let mut hex = String::with_capacity(64);
    for b in tag.as_ref() {
        let _ = write!(hex, "{b:02x}");
    }
    format!("t={t},v1={hex}")
}

fn signed_payload(t: u64, body: &[u8]) -> Vec<u8> {
    let mut signed = format!("{t}.").into_bytes();
    signed.extend_from_slice(body);
    signed
}

fn decode_hex(hex: &str) -> Option<Vec<u8>> {
    if hex.len() != 64 {
        return None;
    }
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";

    #[test]
    fn a_signature_checks_out_only_for_its_body_secret_and_time() {
        let v = WebhookVerifier::new(Some(SECRET), 300);
        let body = br#"{"id":"evt_1"}"#;
        let header = sign(SECRET, 1_000, body);
        assert_eq!(v.verify(Some(&header), body, 1_100), Ok(()));
        assert!(
            v.verify(Some(&header), b"{}", 1_100).is_err(),
            "another body"
        );
        assert!(v.verify(Some(&header), body, 1_301).is_err(), "too old");
        assert!(
            v.verify(Some(&header), body, 699).is_err(),
            "from the future"
        );
        let forged = sign(b"another-secret-another-secret-xx", 1_000, body);
        assert!(v.verify(Some(&forged), body, 1_000).is_err());
        for junk in ["", "t=1000", "v1=00", "t=x,v1=zz", "t=1000,v1=abc"] {
            assert!(v.verify(Some(junk), body, 1_000).is_err(), "{junk}");
        }
        assert!(v.verify(None, body, 1_000).is_err());
        // A rotated secret: any matching v1 will do.
        let both = format!("{header},v1={}", "0".repeat(64));
        assert_eq!(v.verify(Some(&both), body, 1_000), Ok(()));
        assert!(
            WebhookVerifier::new(None, 300)
                .verify(Some(&header), body, 1_000)
                .is_err()
        );
    }
}
