//! Who is calling: a client with a JWT, or an operator with the operator credential.

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use crate::NodeError;
use crate::shell::engine::now_ms;
use crate::shell::verified::{Lookup, VerifiedTokens};

/// The longest bearer credential accepted; longer ones are refused before parsing.
pub(crate) const MAX_CREDENTIAL_BYTES: usize = 8 * 1024;

/// The longest user id (a JWT's `sub`) accepted.
pub(crate) const MAX_USER_ID_BYTES: usize = 128;

/// How client JWTs are verified.
pub enum JwtKey {
    /// A shared HS256 secret.
    Secret(Vec<u8>),
    /// An EdDSA public key, PEM.
    EdDsaPem(Vec<u8>),
    /// An RS256 public key, PEM.
    Rs256Pem(Vec<u8>),
}

/// The principal behind a request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Principal {
    /// A client, by user id (the JWT's `sub`).
    User(String),
    /// The billing team or an operator.
    Operator,
}

/// Why a credential was not accepted.
#[derive(Debug, PartialEq, Eq)]
pub enum AuthFailure {
    /// No `Authorization: Bearer` header.
    Missing,
    /// The credential is malformed, expired, wrongly signed or too long.
    Invalid(&'static str),
}

/// What a client JWT must satisfy beyond its signature.
#[derive(Clone, Debug, Default)]
pub struct JwtRules {
    /// Seconds of clock skew allowed on `exp` and `nbf`.
    pub leeway_secs: u64,
    /// The `aud` required, if any.
    pub audience: Option<String>,
    /// The `iss` required, if any.
    pub issuer: Option<String>,
}

/// The claims a client JWT carries.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Claims {
    /// The user id.
    pub sub: String,
    /// Expiry, seconds since the Unix epoch.
    pub exp: u64,
}

/// Verifies credentials.
pub struct Authenticator {
    key: DecodingKey,
    validation: Validation,
    operator: OperatorCredential,
    /// Client tokens that passed, so a client's next call skips verification
    /// and the operator comparison. Never holds the operator credential: a
    /// token is kept only after that comparison failed.
    verified: VerifiedTokens,
}

impl Authenticator {
    /// Builds an authenticator from the JWT key, the claims it requires, and the
    /// operator credential.
    pub fn new(key: &JwtKey, rules: &JwtRules, operator_token: &str) -> Result<Self, NodeError> {
        if let JwtKey::Secret(s) = key
            && s.len() < crate::shell::config::MIN_HS256_SECRET_BYTES
        {
            return Err(NodeError::Config(
                "an HS256 secret must be at least 32 bytes".into(),
            ));
        }
        let bad = |e: jsonwebtoken::errors::Error| NodeError::Config(format!("JWT key: {e}"));
        let (key, algorithm) = match key {
            JwtKey::Secret(s) => (DecodingKey::from_secret(s), Algorithm::HS256),
            JwtKey::EdDsaPem(pem) => (
                DecodingKey::from_ed_pem(pem).map_err(bad)?,
                Algorithm::EdDSA,
            ),
            JwtKey::Rs256Pem(pem) => (
                DecodingKey::from_rsa_pem(pem).map_err(bad)?,
                Algorithm::RS256,
            ),
        };
        if operator_token.trim().len() < crate::shell::config::MIN_OPERATOR_TOKEN_BYTES {
            return Err(NodeError::Config(
                "the operator token must be at least 16 characters, not blank".into(),
            ));
        }
        let mut validation = Validation::new(algorithm);
        validation.leeway = rules.leeway_secs;
        validation.validate_nbf = true;
        let mut required = vec!["exp", "sub"];
        // Without a configured audience a token's `aud` is not checked: an
        // identity provider may set one we were not told about.
        validation.validate_aud = rules.audience.is_some();
        if let Some(aud) = &rules.audience {
            validation.set_audience(&[aud]);
            required.push("aud");
        }
        if let Some(iss) = &rules.issuer {
            validation.set_issuer(&[iss]);
            required.push("iss");
        }
        validation.set_required_spec_claims(&required);
        Ok(Self {
            key,
            validation,
            operator: OperatorCredential::new(operator_token.as_bytes()),
            verified: VerifiedTokens::default(),
        })
    }

    /// Identifies the caller from an `Authorization` header value, if any.
    pub fn identify(&self, authorization: Option<&[u8]>) -> Result<Principal, AuthFailure> {
        self.identify_at(authorization, now_ms() / 1000)
    }

    /// [`Authenticator::identify`] at `now`, seconds since the Unix epoch:
    /// the clock a token verified before is checked against (a fresh
    /// verification reads the system clock itself).
    fn identify_at(
        &self,
        authorization: Option<&[u8]>,
        now: u64,
    ) -> Result<Principal, AuthFailure> {
        let header = authorization.ok_or(AuthFailure::Missing)?;
        if header.len() > MAX_CREDENTIAL_BYTES + 7 {
            return Err(AuthFailure::Invalid("credential too long"));
        }
        let credential = header
            .strip_prefix(b"Bearer ")
            .ok_or(AuthFailure::Invalid("expected a Bearer credential"))?;
        const REFUSED: &str = "token is malformed, expired or wrongly signed";
        // The cache first: a client's every call would otherwise pay the
        // operator comparison's SHA-256 of its token (a tenth of a spend's
        // user-space instructions). A hit is never the operator credential.
        match self.verified.lookup(credential, now) {
            Lookup::User(sub) => return Ok(Principal::User(sub)),
            Lookup::Expired => return Err(AuthFailure::Invalid(REFUSED)),
            Lookup::Unknown => {}
        }
        if self.operator.matches(credential) {
            return Ok(Principal::Operator);
        }
        let token = std::str::from_utf8(credential)
            .map_err(|_| AuthFailure::Invalid("credential is not UTF-8"))?;
        let data = jsonwebtoken::decode::<Claims>(token, &self.key, &self.validation)
            .map_err(|_| AuthFailure::Invalid(REFUSED))?;
        let sub = data.claims.sub;
        if !valid_user_id(&sub) {
            return Err(AuthFailure::Invalid("token subject is not a valid user id"));
        }
        let usable_until = data.claims.exp.saturating_add(self.validation.leeway);
        self.verified.insert(credential, &sub, usable_until);
        Ok(Principal::User(sub))
    }
}

/// Signs an HS256 client token: the dev banner's demo token, tests and benchmarks.
pub fn sign_hs256(secret: &[u8], user: &str, exp: u64) -> Result<String, NodeError> {
    let claims = Claims {
        sub: user.to_owned(),
        exp,
    };
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(secret),
    )
    .map_err(|e| NodeError::Config(format!("signing: {e}")))
}

/// Signs an HS256 client token for `user` that expires `valid_for` from now.
pub fn sign_hs256_valid_for(
    secret: &[u8],
    user: &str,
    valid_for: std::time::Duration,
) -> Result<String, NodeError> {
    let now = now_ms() / 1000;
    sign_hs256(secret, user, now.saturating_add(valid_for.as_secs()))
}

/// Whether a user id is acceptable in a path or body (same rule as a JWT `sub`).
pub(crate) fn valid_user_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= MAX_USER_ID_BYTES && !id.chars().any(char::is_control)
}

/// The operator credential, kept as its SHA-256 digest: a presented
/// credential is digested and compared in constant time (`subtle`), so that
/// not even the credential's length shows in the timing.
struct OperatorCredential {
    digest: ring::digest::Digest,
}

impl OperatorCredential {
    fn new(token: &[u8]) -> Self {
        Self {
            digest: sha256(token),
        }
    }

    fn matches(&self, credential: &[u8]) -> bool {
        use subtle::ConstantTimeEq;
        bool::from(sha256(credential).as_ref().ct_eq(self.digest.as_ref()))
    }
}

fn sha256(bytes: &[u8]) -> ring::digest::Digest {
    ring::digest::digest(&ring::digest::SHA256, bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"a-secret-of-at-least-32-bytes-for-hs256";

    fn authenticator() -> Authenticator {
        let rules = JwtRules {
            leeway_secs: 5,
            ..JwtRules::default()
        };
        Authenticator::new(&JwtKey::Secret(SECRET.to_vec()), &rules, "operator-token-1")
            .expect("authenticator")
    }

    fn bearer(token: &str) -> Vec<u8> {
        format!("Bearer {token}").into_bytes()
    }

    fn now() -> u64 {
        now_ms() / 1000
    }

    #[test]
    fn a_token_verified_before_expires_on_time() {
        let auth = authenticator();
        let now = now();
        let token = sign_hs256(SECRET, "alice", now + 60).expect("sign");
        let header = bearer(&token);
        for at in [now, now + 65] {
            assert_eq!(
                auth.identify_at(Some(&header), at),
                Ok(Principal::User("alice".into())),
                "at +{}",
                at - now
            );
        }
        // Past exp plus the leeway: refused, though the system clock (which
        // a fresh verification reads) would still accept it.
        assert!(matches!(
            auth.identify_at(Some(&header), now + 66),
            Err(AuthFailure::Invalid(_))
        ));
    }

    #[test]
    fn only_the_same_bytes_hit_the_cache() {
        let auth = authenticator();
        let token = sign_hs256(SECRET, "alice", now() + 60).expect("sign");
        assert!(auth.identify(Some(&bearer(&token))).is_ok());
        // The same claims, signed with another key: not the cached token.
        let forged =
            sign_hs256(b"another-secret-of-at-least-32-bytes", "alice", now() + 60).expect("sign");
        assert!(matches!(
            auth.identify(Some(&bearer(&forged))),
            Err(AuthFailure::Invalid(_))
        ));
        let mut tampered = bearer(&token);
        if let Some(last) = tampered.last_mut() {
            *last = if *last == b'A' { b'B' } else { b'A' };
        }
        assert!(matches!(
            auth.identify(Some(&tampered)),
            Err(AuthFailure::Invalid(_))
        ));
        // An expired token is refused the first time too.
        let expired = sign_hs256(SECRET, "alice", now() - 3_600).expect("sign");
        assert!(matches!(
            auth.identify(Some(&bearer(&expired))),
            Err(AuthFailure::Invalid(_))
        ));
    }

    #[test]
    fn the_operator_credential_compares_whole() {
        let operator = OperatorCredential::new(b"operator-token-1");
        assert!(operator.matches(b"operator-token-1"));
        assert!(!operator.matches(b"operator-token-2"));
        assert!(!operator.matches(b"operator-token"));
        assert!(!operator.matches(b"operator-token-11"));
        assert!(!OperatorCredential::new(b"x").matches(b""));
    }

    #[test]
    fn the_operator_credential_wins_even_when_it_is_a_valid_client_token() {
        // The cache is asked before the operator comparison, so it must
        // never hold the operator credential, even one that would pass as a
        // client token.
        let token = sign_hs256(SECRET, "alice", now() + 60).expect("sign");
        let rules = JwtRules::default();
        let auth =
            Authenticator::new(&JwtKey::Secret(SECRET.to_vec()), &rules, &token).expect("auth");
        for _ in 0..2 {
            assert_eq!(
                auth.identify(Some(&bearer(&token))),
                Ok(Principal::Operator)
            );
        }
        // A client token still works beside it, from the cache the second time.
        let client = sign_hs256(SECRET, "bob", now() + 60).expect("sign");
        for _ in 0..2 {
            assert_eq!(
                auth.identify(Some(&bearer(&client))),
                Ok(Principal::User("bob".into()))
            );
        }
        assert_eq!(
            auth.identify(Some(b"Bearer operator-token-1")),
            Err(AuthFailure::Invalid(
                "token is malformed, expired or wrongly signed"
            ))
        );
    }
}
