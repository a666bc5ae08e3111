//! Checking one ID token: its size and shape before anything is parsed, its algorithm
//! against the issuer key it names, its signature, then `iss`, `aud`, `exp`, `nbf`, `iat`
//! (with [`LEEWAY`]) and its age.

use base64::Engine;
use jsonwebtoken::{Algorithm, Validation};
use serde_json::{Map, Value};

use super::keys::IssuerKey;

/// The longest ID token read (GitHub's are about 1.5 KiB, GitLab's and Kubernetes' under 2).
pub const MAX_ID_TOKEN_BYTES: usize = 16 * 1024;
/// Clock difference allowed between the issuer and the gateway, in seconds.
pub const LEEWAY: u64 = 30;

/// Why an ID token was refused. The reason words go in the log; the client hears only that
/// its ID token was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdTokenError {
    #[error("the ID token is {0} bytes, more than {MAX_ID_TOKEN_BYTES}")]
    Oversized(usize),
    #[error("not a signed JWT ({0})")]
    Malformed(&'static str),
    #[error("its header names algorithm {0:?}; only asymmetric signatures (RS*, PS*, ES256, ES384, EdDSA) are accepted")]
    AlgorithmNotAllowed(String),
    #[error("no federation has issuer {0:?} (and this audience)")]
    UnknownIssuer(String),
    #[error("its header names no key (kid)")]
    MissingKid,
    #[error("the issuer publishes no key {0:?}")]
    UnknownKey(String),
    #[error("the key {kid:?} signs with {key:?}, the token says {token:?}")]
    KeyAlgorithm {
        kid: String,
        key: Algorithm,
        token: Algorithm,
    },
    #[error("the signature does not verify")]
    BadSignature,
    #[error("it has expired (exp)")]
    Expired,
    #[error("it is not valid yet (nbf)")]
    NotYetValid,
    #[error("it is for another audience (aud)")]
    WrongAudience,
    #[error("it is from another issuer (iss)")]
    WrongIssuer,
    #[error("its iat is in the future")]
    IssuedInFuture,
    #[error("it was issued {age}s ago, more than max_token_age ({max}s)")]
    TooOld { age: u64, max: u64 },
    #[error("the claim {0} is missing or not of the right type")]
    MissingClaim(String),
}

impl IdTokenError {
    /// A short stable word for log lines.
    pub fn reason(&self) -> &'static str {
        match self {
            IdTokenError::Oversized(_) => "oversized",
            IdTokenError::Malformed(_) => "malformed",
            IdTokenError::AlgorithmNotAllowed(_) => "algorithm_not_allowed",
            IdTokenError::UnknownIssuer(_) => "unknown_issuer",
            IdTokenError::MissingKid => "missing_kid",
            IdTokenError::UnknownKey(_) => "unknown_key",
            IdTokenError::KeyAlgorithm { .. } => "key_algorithm_mismatch",
            IdTokenError::BadSignature => "bad_signature",
            IdTokenError::Expired => "expired",
            IdTokenError::NotYetValid => "not_yet_valid",
            IdTokenError::WrongAudience => "wrong_audience",
            IdTokenError::WrongIssuer => "wrong_issuer",
            IdTokenError::IssuedInFuture => "issued_in_future",
            IdTokenError::TooOld { .. } => "too_old",
            IdTokenError::MissingClaim(_) => "missing_claim",
        }
    }
}

/// What the token says before its signature is checked: only used to pick the federation and
/// the key, never trusted.
pub struct Unverified {
    pub algorithm: Algorithm,
    pub kid: String,
    pub issuer: String,
    pub audiences: Vec<String>,
}

fn b64(part: &str) -> Result<Vec<u8>, IdTokenError> {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(part)
        .map_err(|_| IdTokenError::Malformed("a part is not base64url"))
}

/// Read the header and the claims that select the federation and its key.
pub fn peek(token: &str) -> Result<Unverified, IdTokenError> {
    if token.len() > MAX_ID_TOKEN_BYTES {
        return Err(IdTokenError::Oversized(token.len()));
    }
    let mut parts = token.split('.');
    let (Some(header), Some(payload), Some(_signature), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(IdTokenError::Malformed("not three dot-separated parts"));
    };
    let header: Map<String, Value> = serde_json::from_slice(&b64(header)?)
        .map_err(|_| IdTokenError::Malformed("the header is not a JSON object"))?;
    let alg = header
        .get("alg")
        .and_then(Value::as_str)
        .ok_or(IdTokenError::Malformed("the header has no alg"))?;
    let algorithm = match alg {
        "RS256" => Algorithm::RS256,
        "RS384" => Algorithm::RS384,
        "RS512" => Algorithm::RS512,
        "PS256" => Algorithm::PS256,
        "PS384" => Algorithm::PS384,
        "PS512" => Algorithm::PS512,
        "ES256" => Algorithm::ES256,
        "ES384" => Algorithm::ES384,
        "EdDSA" => Algorithm::EdDSA,
        other => {
            return Err(IdTokenError::AlgorithmNotAllowed(
                other.chars().take(32).collect(),
            ))
        }
    };
    let kid = header
        .get("kid")
        .and_then(Value::as_str)
        .ok_or(IdTokenError::MissingKid)?
        .to_owned();
    let claims: Map<String, Value> = serde_json::from_slice(&b64(payload)?)
        .map_err(|_| IdTokenError::Malformed("the payload is not a JSON object"))?;
    let issuer = claims
        .get("iss")
        .and_then(Value::as_str)
        .ok_or_else(|| IdTokenError::MissingClaim("iss".into()))?
        .to_owned();
    let audiences = match claims.get("aud") {
        Some(Value::String(a)) => vec![a.clone()],
        Some(Value::Array(list)) => list
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_owned)
            .collect(),
        _ => Vec::new(),
    };
    Ok(Unverified {
        algorithm,
        kid,
        issuer,
        audiences,
    })
}

/// Check the signature with `key` and every time claim; the verified claims.
pub fn verify(
    token: &str,
    peeked: &Unverified,
    key: &IssuerKey,
    issuer: &str,
    audience: &str,
    max_age: std::time::Duration,
    now: u64,
) -> Result<Map<String, Value>, IdTokenError> {
    if key.algorithm != peeked.algorithm {
        return Err(IdTokenError::KeyAlgorithm {
            kid: peeked.kid.clone(),
            key: key.algorithm,
            token: peeked.algorithm,
        });
    }
    let mut validation = Validation::new(key.algorithm);
    validation.algorithms = vec![key.algorithm];
    validation.leeway = LEEWAY;
    validation.validate_nbf = true;
    validation.set_issuer(&[issuer]);
    validation.set_audience(&[audience]);
    validation.set_required_spec_claims(&["exp", "iat", "iss", "aud", "sub"]);
    let data = jsonwebtoken::decode::<Map<String, Value>>(token, &key.decoding, &validation)
        .map_err(|e| {
            use jsonwebtoken::errors::ErrorKind;
            match e.kind() {
                ErrorKind::InvalidSignature => IdTokenError::BadSignature,
                ErrorKind::ExpiredSignature => IdTokenError::Expired,
                ErrorKind::ImmatureSignature => IdTokenError::NotYetValid,
                ErrorKind::InvalidAudience => IdTokenError::WrongAudience,
                ErrorKind::InvalidIssuer => IdTokenError::WrongIssuer,
                ErrorKind::MissingRequiredClaim(claim) => IdTokenError::MissingClaim(claim.clone()),
                ErrorKind::InvalidAlgorithm => IdTokenError::KeyAlgorithm {
                    kid: peeked.kid.clone(),
                    key: key.algorithm,
                    token: peeked.algorithm,
                },
                _ => IdTokenError::Malformed("the signature or a claim cannot be read"),
            }
        })?;
    let claims = data.claims;
    let iat = claims
        .get("iat")
        .and_then(Value::as_u64)
        .ok_or_else(|| IdTokenError::MissingClaim("iat".into()))?;
    if iat > now + LEEWAY {
        return Err(IdTokenError::IssuedInFuture);
    }
    let age = now.saturating_sub(iat);
    if age > max_age.as_secs() + LEEWAY {
        return Err(IdTokenError::TooOld {
            age,
            max: max_age.as_secs(),
        });
    }
    match claims.get("sub").and_then(Value::as_str) {
        Some(sub) if !sub.is_empty() && sub.len() <= 255 => Ok(claims),
        _ => Err(IdTokenError::MissingClaim("sub".into())),
    }
}
