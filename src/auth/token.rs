//! Minting and verifying the registry's JWTs.
//!
//! Minted tokens are what distribution requires (see the protocol reference): header with
//! `kid` (libtrust) and `x5c`; claims `iss`, `sub`, `aud` as a plain string, `exp`, `nbf`,
//! `iat`, `jti`, `access`. Verification is strict, with no leeway: the gateway is the issuer,
//! so its own clock is the only clock that matters.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Header, Validation};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::keys::SigningKey;
use super::scope::{Actions, Resource, ResourceAccess};
use crate::config::TokenSettings;

/// `nbf` is set this far in the past, so a registry whose clock is slightly behind ours
/// still accepts a fresh token (GitLab does the same).
const NOT_BEFORE_SKEW: u64 = 5;

/// The claims of a registry token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    pub iss: String,
    pub sub: String,
    /// A plain string: distribution 2.8 refuses an array here.
    pub aud: String,
    pub exp: u64,
    pub nbf: u64,
    pub iat: u64,
    pub jti: String,
    #[serde(default)]
    pub access: Vec<ResourceAccess>,
    /// The fingerprint of the credential the token was issued for (registries ignore it):
    /// push grace re-checks that credential before extending an upload past `exp`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cred: Option<String>,
}

impl Claims {
    /// The actions this token grants on `resource` (entries for the same resource add up).
    pub fn actions_on(&self, resource: &Resource) -> Actions {
        self.access
            .iter()
            .filter(|a| a.kind == resource.kind() && a.name == resource.name())
            .fold(Actions::NONE, |set, a| set.union(a.actions()))
    }
}

/// What a token the gateway issues for itself is for. Each purpose has its own audience, never
/// the registry's service: such a token can never pass as a registry token, and a registry
/// token can never pass as one of these.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// A CI job token: the password of `gitlab-ci-token`.
    CiJob,
    /// An OAuth2 refresh token (docker's stored identity token).
    Refresh,
}

impl Purpose {
    pub fn audience(self) -> &'static str {
        match self {
            Purpose::CiJob => "portcullis-ci-job",
            Purpose::Refresh => "portcullis-refresh",
        }
    }
}

/// The claims of a CI job token or a refresh token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InternalClaims {
    pub iss: String,
    /// The user (or deploy token / bot username) it was issued to.
    pub sub: String,
    pub aud: String,
    pub exp: u64,
    pub iat: u64,
    pub jti: String,
    /// CI job tokens: the job's project.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub project: Option<String>,
    /// Refresh tokens: which credential they came from (see `credentials::binding`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub binding: Option<String>,
}

/// A freshly minted token and what the client is told about it.
#[derive(Debug, Clone)]
pub struct IssuedToken {
    pub token: String,
    pub expires_in: u64,
    pub issued_at: OffsetDateTime,
}

/// Why a presented token was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error("the token is not a well-formed JWT")]
    Malformed,
    #[error("the token's signature does not verify with the gateway's key")]
    BadSignature,
    #[error("the token has expired")]
    Expired,
    #[error("the token is not valid yet")]
    NotYetValid,
    #[error("the token was issued by someone else")]
    WrongIssuer,
    #[error("the token is for another service")]
    WrongAudience,
    #[error("the token uses another signing algorithm")]
    WrongAlgorithm,
}

impl VerifyError {
    /// A short, stable reason for log lines.
    pub fn reason(self) -> &'static str {
        match self {
            VerifyError::Malformed => "malformed",
            VerifyError::BadSignature => "bad_signature",
            VerifyError::Expired => "expired",
            VerifyError::NotYetValid => "not_yet_valid",
            VerifyError::WrongIssuer => "wrong_issuer",
            VerifyError::WrongAudience => "wrong_audience",
            VerifyError::WrongAlgorithm => "wrong_algorithm",
        }
    }
}

/// Mints and verifies tokens with one signing key.
pub struct Tokens {
    key: SigningKey,
    header: Header,
    validation: Validation,
    internal_validation: Validation,
    issuer: String,
    service: String,
    expiry: Duration,
}

impl Tokens {
    pub fn new(settings: &TokenSettings, key: SigningKey) -> Tokens {
        let mut header = Header::new(key.algorithm);
        header.kid = Some(key.kid.clone());
        header.x5c = Some(key.x5c.clone());
        let mut validation = Validation::new(key.algorithm);
        validation.leeway = 0;
        validation.validate_nbf = true;
        validation.set_issuer(&[&settings.issuer]);
        validation.set_audience(&[&settings.service]);
        validation.set_required_spec_claims(&["exp", "nbf", "iss", "aud"]);
        let mut internal_validation = Validation::new(key.algorithm);
        internal_validation.leeway = 0;
        internal_validation.set_issuer(&[&settings.issuer]);
        internal_validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        Tokens {
            key,
            header,
            validation,
            internal_validation,
            issuer: settings.issuer.clone(),
            service: settings.service.clone(),
            expiry: settings.expiry,
        }
    }

    pub fn key(&self) -> &SigningKey {
        &self.key
    }

    pub fn service(&self) -> &str {
        &self.service
    }

    /// Mint a token for `subject` granting `access`.
    pub fn issue(
        &self,
        subject: &str,
        access: Vec<ResourceAccess>,
        credential: Option<String>,
        now: SystemTime,
    ) -> Result<IssuedToken, jsonwebtoken::errors::Error> {
        let iat = now.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
        let expires_in = self.expiry.as_secs().max(1);
        let claims = Claims {
            iss: self.issuer.clone(),
            sub: subject.to_owned(),
            aud: self.service.clone(),
            exp: iat + expires_in,
            nbf: iat.saturating_sub(NOT_BEFORE_SKEW),
            iat,
            jti: random_id(),
            access,
            cred: credential,
        };
        let token = jsonwebtoken::encode(&self.header, &claims, self.key.encoding_key())?;
        Ok(IssuedToken {
            token,
            expires_in,
            issued_at: OffsetDateTime::from_unix_timestamp(iat as i64)
                .unwrap_or(OffsetDateTime::UNIX_EPOCH),
        })
    }

    /// Mint a token for the gateway itself, expiring at `exp` (Unix seconds).
    pub fn issue_internal(
        &self,
        purpose: Purpose,
        subject: &str,
        project: Option<&str>,
        binding: Option<String>,
        exp: u64,
        now: SystemTime,
    ) -> Result<String, jsonwebtoken::errors::Error> {
        let iat = now.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
        let claims = InternalClaims {
            iss: self.issuer.clone(),
            sub: subject.to_owned(),
            aud: purpose.audience().to_owned(),
            exp: exp.max(iat + 1),
            iat,
            jti: random_id(),
            project: project.map(str::to_owned),
            binding,
        };
        jsonwebtoken::encode(
            &Header::new(self.key.algorithm),
            &claims,
            self.key.encoding_key(),
        )
    }

    /// Verify a token the gateway issued for `purpose`: signature, issuer, audience, `exp`.
    pub fn verify_internal(
        &self,
        purpose: Purpose,
        token: &str,
    ) -> Result<InternalClaims, VerifyError> {
        let mut validation = self.internal_validation.clone();
        validation.set_audience(&[purpose.audience()]);
        jsonwebtoken::decode::<InternalClaims>(token, self.key.decoding_key(), &validation)
            .map(|data| data.claims)
            .map_err(|e| verify_error(&e))
    }

    /// Verify everything but `exp`: for telling an expired token of ours (whose claims can be
    /// trusted) from a forged one, when diagnosing and extending uploads.
    pub fn verify_ignoring_expiry(&self, token: &str) -> Result<Claims, VerifyError> {
        let mut validation = self.validation.clone();
        validation.validate_exp = false;
        jsonwebtoken::decode::<Claims>(token, self.key.decoding_key(), &validation)
            .map(|data| data.claims)
            .map_err(|e| verify_error(&e))
    }

    /// Verify signature, issuer, audience, `nbf` and `exp` (no leeway).
    pub fn verify(&self, token: &str) -> Result<Claims, VerifyError> {
        jsonwebtoken::decode::<Claims>(token, self.key.decoding_key(), &self.validation)
            .map(|data| data.claims)
            .map_err(|e| verify_error(&e))
    }
}

fn verify_error(error: &jsonwebtoken::errors::Error) -> VerifyError {
    match error.kind() {
        ErrorKind::ExpiredSignature => VerifyError::Expired,
        ErrorKind::ImmatureSignature => VerifyError::NotYetValid,
        ErrorKind::InvalidIssuer => VerifyError::WrongIssuer,
        ErrorKind::InvalidAudience => VerifyError::WrongAudience,
        ErrorKind::InvalidSignature => VerifyError::BadSignature,
        ErrorKind::InvalidAlgorithm => VerifyError::WrongAlgorithm,
        _ => VerifyError::Malformed,
    }
}

/// 128 random bits as hex, for `jti`.
fn random_id() -> String {
    use aws_lc_rs::rand::SecureRandom;
    let mut bytes = [0u8; 16];
    // The system RNG failing is not recoverable in any meaningful way; an all-zero jti is
    // still a valid (if unhelpful) id, and the registry does not check it.
    let _ = aws_lc_rs::rand::SystemRandom::new().fill(&mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
