//! Minting and verifying the registry's JWTs.
//!
//! Minted tokens are what distribution requires (see the protocol reference): header with
//! `kid` (libtrust) and `x5c`, or with `token.header: jwks` only the RFC 7638 `kid` that
//! distribution 3.x finds in its JWKS file, or with `token.header: kid` only the libtrust
//! `kid` that distribution 2.8 finds among its `rootcertbundle`'s keys; claims `iss`, `sub`, `aud` as a plain string,
//! `exp`, `nbf`, `iat`, `jti`, `access`. Verification is strict, with no leeway: the gateway is
//! the issuer, so its own clock is the only clock that matters.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Header, Validation};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::keys::{SigningKey, VerifyingKey};
use super::scope::{Actions, Resource, ResourceAccess};
use super::verdicts::Verdicts;
use crate::config::{TokenHeader, TokenSettings};

/// `nbf` and `iat` are set this far in the past, so a registry whose clock is slightly behind
/// ours still accepts a fresh token (GitLab backdates `nbf` the same way; Zot refuses a token
/// whose `iat` is in its future, with no leeway at all).
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
    /// GitLab's `auth_type` claim (`CRAS#authorized_token`): how the caller authenticated,
    /// in `Gitlab::Auth::Result#type`'s words (`gitlab_or_ldap`, `personal_access_token`,
    /// `deploy_token`, `build`, `none`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth_type: Option<String>,
    /// GitLab's `user` claim (`CRAS#user_info_token`): a JWT signed like this one whose
    /// `user_info` says who acts (null for anonymous callers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
}

/// What GitLab tells the registry about the caller besides `sub` (`CRAS#authorized_token`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallerInfo {
    pub auth_type: &'static str,
    /// None for anonymous callers (`user_info: null`).
    pub user_info: Option<UserInfo>,
}

/// `CRAS#user_info_token`'s `user_info`: `token_type`, `username`, and `user_id` for users
/// or `deploy_token_id` for deploy tokens. The ids are stable numbers made from the name
/// (see [`super::scope::AccessMeta`]): the gateway has no database ids.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserInfo {
    pub token_type: String,
    pub username: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deploy_token_id: Option<u64>,
}

/// The claims of the `user` claim's inner token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserInfoClaims {
    pub user_info: Option<UserInfo>,
    pub iat: u64,
    pub nbf: u64,
    pub exp: u64,
    pub jti: String,
}

impl Claims {
    /// The lifetime the token was issued with (`token.expiry`): `iat` is backdated by
    /// `NOT_BEFORE_SKEW`, `exp` counted from the moment of issue.
    pub fn lifetime(&self) -> Duration {
        Duration::from_secs(
            self.exp
                .saturating_sub(self.iat)
                .saturating_sub(NOT_BEFORE_SKEW)
                .max(1),
        )
    }

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
    /// The credential it was issued for was revoked through the token API.
    #[error("the credential the token was issued for was revoked")]
    Revoked,
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
            VerifyError::Revoked => "revoked",
        }
    }
}

/// The rules a token must pass with one public key.
struct Rules {
    /// Registry tokens: signature, issuer, audience = service, `nbf`, `exp`.
    registry: Validation,
    /// The gateway's own tokens: signature, issuer, `exp` (audience set per purpose).
    internal: Validation,
}

impl Rules {
    fn new(settings: &TokenSettings, key: &VerifyingKey) -> Rules {
        let mut registry = Validation::new(key.algorithm);
        registry.leeway = 0;
        registry.validate_nbf = true;
        registry.set_issuer(&[&settings.issuer]);
        registry.set_audience(&[&settings.service]);
        registry.set_required_spec_claims(&["exp", "nbf", "iss", "aud"]);
        let mut internal = Validation::new(key.algorithm);
        internal.leeway = 0;
        internal.set_issuer(&[&settings.issuer]);
        internal.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        Rules { registry, internal }
    }
}

/// Mints tokens with the signing key; verifies them with it and with retired keys.
///
/// During a key rotation the previous certificates stay here: a token is matched to its key
/// by the header's `kid` (every token the gateway signs carries one), so a push that started
/// before the rotation finishes with the token it has.
pub struct Tokens {
    key: SigningKey,
    header: Header,
    internal_header: Header,
    rules: Rules,
    previous: Vec<(VerifyingKey, Rules)>,
    /// Tokens that verified, until they expire: one signature check per token, not per request.
    verdicts: Verdicts,
    issuer: String,
    service: String,
    expiry: Duration,
    refresh_lifetime: Duration,
    /// `ci.signing_key`: when set, the only key CI job tokens are signed and verified with.
    ci: Option<super::ci_key::CiKey>,
    /// `token.header`, for the trust check's advice when the registry refuses the tokens.
    mode: TokenHeader,
}

/// The header of a registry token in `mode` (see [`TokenHeader`]).
fn registry_header(mode: TokenHeader, key: &VerifyingKey) -> Header {
    let mut header = Header::new(key.algorithm);
    match mode {
        TokenHeader::X5c => {
            header.kid = Some(key.kid.clone());
            header.x5c = Some(key.x5c.clone());
        }
        TokenHeader::Jwks => header.kid = Some(key.thumbprint()),
        TokenHeader::Kid => header.kid = Some(key.kid.clone()),
    }
    header
}

impl Tokens {
    pub fn new(settings: &TokenSettings, key: SigningKey, previous: Vec<VerifyingKey>) -> Tokens {
        let header = registry_header(settings.header, &key.public);
        let mut internal_header = Header::new(key.public.algorithm);
        internal_header.kid = Some(key.public.kid.clone());
        let rules = Rules::new(settings, &key.public);
        let previous = previous
            .into_iter()
            // The current key listed again as a previous one would only shadow nothing.
            .filter(|old| old.kid != key.public.kid)
            .map(|old| {
                let rules = Rules::new(settings, &old);
                (old, rules)
            })
            .collect();
        Tokens {
            key,
            header,
            internal_header,
            rules,
            previous,
            verdicts: Verdicts::default(),
            issuer: settings.issuer.clone(),
            service: settings.service.clone(),
            expiry: settings.expiry,
            refresh_lifetime: settings.refresh_lifetime,
            ci: None,
            mode: settings.header,
        }
    }

    /// Sign and verify CI job tokens with `key` only (`ci.signing_key`), never the registry's.
    pub fn with_ci_key(mut self, key: super::ci_key::CiKey) -> Tokens {
        self.ci = Some(key);
        self
    }

    /// How long a refresh token lives at most (`token.refresh_lifetime`).
    pub fn refresh_lifetime(&self) -> Duration {
        self.refresh_lifetime
    }

    pub fn key(&self) -> &SigningKey {
        &self.key
    }

    /// Every key tokens are verified with: the signing key's first, then the retired ones.
    pub fn verifying_keys(&self) -> impl Iterator<Item = &VerifyingKey> {
        std::iter::once(&self.key.public).chain(self.previous.iter().map(|(key, _)| key))
    }

    /// The signing algorithm's name, for metrics.
    pub fn algorithm(&self) -> &'static str {
        self.key.public.algorithm_name()
    }

    /// The key (and rules) a token names by `kid`; the signing key when it names no other.
    fn select(&self, token: &str) -> (&VerifyingKey, &Rules) {
        if !self.previous.is_empty() {
            if let Ok(Some(kid)) = jsonwebtoken::decode_header(token).map(|h| h.kid) {
                // A libtrust `kid` (x5c mode) or a thumbprint (jwks mode, or before a switch).
                if let Some((key, rules)) = self
                    .previous
                    .iter()
                    .find(|(key, _)| key.kid == kid || key.thumbprint() == kid)
                {
                    return (key, rules);
                }
            }
        }
        (&self.key.public, &self.rules)
    }

    pub fn service(&self) -> &str {
        &self.service
    }

    /// How registry tokens name their key (`token.header`).
    pub fn header_mode(&self) -> TokenHeader {
        self.mode
    }

    /// Mint a token for `subject` granting `access`, without GitLab's caller claims (push
    /// grace and the trust probe re-issue tokens for a caller already checked).
    pub fn issue(
        &self,
        subject: &str,
        access: Vec<ResourceAccess>,
        credential: Option<String>,
        now: SystemTime,
    ) -> Result<IssuedToken, jsonwebtoken::errors::Error> {
        self.mint(subject, access, credential, None, now)
    }

    /// Mint a token for `subject` granting `access`, with GitLab's `auth_type` and `user`
    /// claims for `caller` (`CRAS#authorized_token`).
    pub fn issue_for(
        &self,
        subject: &str,
        access: Vec<ResourceAccess>,
        credential: Option<String>,
        caller: CallerInfo,
        now: SystemTime,
    ) -> Result<IssuedToken, jsonwebtoken::errors::Error> {
        self.mint(subject, access, credential, Some(caller), now)
    }

    fn mint(
        &self,
        subject: &str,
        access: Vec<ResourceAccess>,
        credential: Option<String>,
        caller: Option<CallerInfo>,
        now: SystemTime,
    ) -> Result<IssuedToken, jsonwebtoken::errors::Error> {
        let issued = now.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
        // `exp` counts from now; `iat` and `nbf` are backdated (see NOT_BEFORE_SKEW).
        let iat = issued.saturating_sub(NOT_BEFORE_SKEW);
        let expires_in = self.expiry.as_secs().max(1);
        let (auth_type, user) = match caller {
            Some(caller) => {
                let user = UserInfoClaims {
                    user_info: caller.user_info,
                    iat,
                    nbf: iat,
                    exp: issued + expires_in,
                    jti: random_id(),
                };
                let user =
                    jsonwebtoken::encode(&self.internal_header, &user, self.key.encoding_key())?;
                (Some(caller.auth_type.to_owned()), Some(user))
            }
            None => (None, None),
        };
        let claims = Claims {
            auth_type,
            user,
            iss: self.issuer.clone(),
            sub: subject.to_owned(),
            aud: self.service.clone(),
            exp: issued + expires_in,
            nbf: iat,
            iat,
            jti: random_id(),
            access,
            cred: credential,
        };
        let token = jsonwebtoken::encode(&self.header, &claims, self.key.encoding_key())?;
        Ok(IssuedToken {
            token,
            expires_in,
            issued_at: OffsetDateTime::from_unix_timestamp(issued as i64)
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
        if let (Purpose::CiJob, Some(ci)) = (purpose, &self.ci) {
            return ci.sign(&claims);
        }
        jsonwebtoken::encode(&self.internal_header, &claims, self.key.encoding_key())
    }

    /// Verify a token the gateway issued for `purpose`: signature, issuer, audience, `exp`.
    pub fn verify_internal(
        &self,
        purpose: Purpose,
        token: &str,
    ) -> Result<InternalClaims, VerifyError> {
        let (key, rules) = self.select(token);
        let mut validation = rules.internal.clone();
        validation.set_audience(&[purpose.audience()]);
        if let (Purpose::CiJob, Some(ci)) = (purpose, &self.ci) {
            return ci
                .verify::<InternalClaims>(token, &validation)
                .map_err(|e| verify_error(&e));
        }
        jsonwebtoken::decode::<InternalClaims>(token, key.decoding_key(), &validation)
            .map(|data| data.claims)
            .map_err(|e| verify_error(&e))
    }

    /// Verify everything but `exp`: for telling an expired token of ours (whose claims can be
    /// trusted) from a forged one, when diagnosing and extending uploads.
    pub fn verify_ignoring_expiry(&self, token: &str) -> Result<Claims, VerifyError> {
        let (key, rules) = self.select(token);
        let mut validation = rules.registry.clone();
        validation.validate_exp = false;
        jsonwebtoken::decode::<Claims>(token, key.decoding_key(), &validation)
            .map(|data| data.claims)
            .map_err(|e| verify_error(&e))
    }

    /// Verify signature, issuer, audience, `nbf` and `exp` (no leeway). A token seen before
    /// is answered from [`Verdicts`] with only its time window checked again. The bytes as
    /// the request carried them: a token seen before is matched byte for byte before any
    /// scan of its ~2 KB for UTF-8 (1.5% of a small request's instructions); any other must
    /// be UTF-8 to be a JWT at all.
    pub fn verify(&self, token: &[u8]) -> Result<Arc<Claims>, VerifyError> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        if let Some(claims) = self.verdicts.get(token, now) {
            if self.verdicts.is_revoked(&claims) {
                return Err(VerifyError::Revoked);
            }
            return Ok(claims);
        }
        let token = std::str::from_utf8(token).map_err(|_| VerifyError::Malformed)?;
        let (key, rules) = self.select(token);
        let claims = jsonwebtoken::decode::<Claims>(token, key.decoding_key(), &rules.registry)
            .map(|data| Arc::new(data.claims))
            .map_err(|e| verify_error(&e))?;
        if self.verdicts.is_revoked(&claims) {
            return Err(VerifyError::Revoked);
        }
        self.verdicts.insert(token, &claims);
        Ok(claims)
    }

    /// A credential with this binding was revoked: every registry token bound to it stops
    /// now, cached verdicts included, until the last one could have expired anyway.
    pub fn revoke_binding(&self, binding: &str) {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        self.verdicts
            .revoke(binding, now + self.expiry.as_secs() + 60, now);
    }
}

/// A CI job token signed with `ci.signing_key` alone, for `portcullis ci-token` on the CI
/// side, which holds no registry key: the claims [`Tokens::issue_internal`] makes.
pub fn issue_job_token(
    ci: &super::ci_key::CiKey,
    issuer: &str,
    subject: &str,
    project: &str,
    exp: u64,
    now: SystemTime,
) -> Result<String, jsonwebtoken::errors::Error> {
    let iat = now.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
    ci.sign(&InternalClaims {
        iss: issuer.to_owned(),
        sub: subject.to_owned(),
        aud: Purpose::CiJob.audience().to_owned(),
        exp: exp.max(iat + 1),
        iat,
        jti: random_id(),
        project: Some(project.to_owned()),
        binding: None,
    })
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    /// A new EC signing key with a self-signed certificate valid for a day.
    fn signing_key() -> SigningKey {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        let now = OffsetDateTime::now_utc();
        params.not_before = now - time::Duration::hours(1);
        params.not_after = now + time::Duration::days(1);
        let cert = params.self_signed(&key).unwrap();
        SigningKey::from_pem(
            key.serialize_pem().as_bytes(),
            cert.pem().as_bytes(),
            Path::new("token.key"),
            Path::new("token.crt"),
        )
        .unwrap()
    }

    fn settings(header: TokenHeader) -> TokenSettings {
        TokenSettings {
            issuer: "portcullis".into(),
            service: "container_registry".into(),
            expiry: Duration::from_secs(300),
            signing_key: "token.key".into(),
            certificate: "token.crt".into(),
            previous_certificates: Vec::new(),
            header,
            refresh_lifetime: Duration::from_secs(86_400),
        }
    }

    fn now() -> (SystemTime, u64) {
        let now = SystemTime::now();
        (now, now.duration_since(UNIX_EPOCH).unwrap().as_secs())
    }

    #[test]
    fn x5c_mode_names_the_libtrust_kid_and_carries_the_certificate() {
        let tokens = Tokens::new(&settings(TokenHeader::X5c), signing_key(), Vec::new());
        let (at, _) = now();
        let issued = tokens.issue("alice", Vec::new(), None, at).unwrap();
        let header = jsonwebtoken::decode_header(&issued.token).unwrap();
        assert_eq!(
            header.kid.as_deref(),
            Some(tokens.key().public.kid.as_str())
        );
        assert_eq!(header.x5c.as_ref(), Some(&tokens.key().public.x5c));
        assert!(tokens.verify(issued.token.as_bytes()).is_ok());
    }

    #[test]
    fn jwks_mode_names_the_jwks_kid_and_carries_no_certificate() {
        let tokens = Tokens::new(&settings(TokenHeader::Jwks), signing_key(), Vec::new());
        let (at, _) = now();
        let issued = tokens.issue("alice", Vec::new(), None, at).unwrap();
        let header = jsonwebtoken::decode_header(&issued.token).unwrap();
        // The very kid `/jwt/jwks.json` publishes for the key.
        let published = tokens.key().public.jwk()["kid"]
            .as_str()
            .unwrap()
            .to_owned();
        assert_eq!(header.kid.as_deref(), Some(published.as_str()));
        assert_ne!(published, tokens.key().public.kid, "not the libtrust id");
        assert_eq!(header.x5c, None);
        assert_eq!(header.jwk, None);
        assert!(tokens.verify(issued.token.as_bytes()).is_ok());
    }

    #[test]
    fn kid_mode_names_the_libtrust_kid_and_carries_no_certificate() {
        let tokens = Tokens::new(&settings(TokenHeader::Kid), signing_key(), Vec::new());
        let x5c = Tokens::new(&settings(TokenHeader::X5c), signing_key(), Vec::new());
        let (at, _) = now();
        let access = || {
            vec![ResourceAccess {
                kind: "repository".into(),
                name: "mygroup/myproject".into(),
                actions: vec!["pull".into(), "push".into()],
                meta: None,
            }]
        };
        let issued = tokens.issue("alice", access(), None, at).unwrap();
        let header = decoded_header(&issued.token);
        assert_eq!(
            header.kid.as_deref(),
            Some(tokens.key().public.kid.as_str())
        );
        assert_eq!((header.x5c, header.jwk), (None, None));
        assert_eq!(tokens.header_mode(), TokenHeader::Kid);
        assert!(tokens.verify(issued.token.as_bytes()).is_ok());
        // The whole certificate is what kid mode leaves out.
        let long = x5c.issue("alice", access(), None, at).unwrap().token;
        let certificate = x5c.key().public.x5c.iter().map(String::len).sum::<usize>();
        assert!(
            long.len() - issued.token.len() > certificate,
            "{} against {}",
            long.len(),
            issued.token.len()
        );
    }

    fn decoded_header(token: &str) -> Header {
        jsonwebtoken::decode_header(token).unwrap()
    }

    #[test]
    fn a_retired_key_is_found_by_its_libtrust_kid_in_kid_mode() {
        let old = signing_key();
        let old_public = old.public.clone();
        let old_tokens = Tokens::new(&settings(TokenHeader::Kid), old, Vec::new());
        let (at, _) = now();
        let token = old_tokens
            .issue("alice", Vec::new(), None, at)
            .unwrap()
            .token;
        let tokens = Tokens::new(&settings(TokenHeader::Kid), signing_key(), vec![old_public]);
        assert!(tokens.verify(token.as_bytes()).is_ok());
    }

    #[test]
    fn a_retired_key_is_found_by_its_thumbprint_in_jwks_mode() {
        let old = signing_key();
        let old_public = old.public.clone();
        let old_tokens = Tokens::new(&settings(TokenHeader::Jwks), old, Vec::new());
        let (at, _) = now();
        let token = old_tokens
            .issue("alice", Vec::new(), None, at)
            .unwrap()
            .token;
        let tokens = Tokens::new(
            &settings(TokenHeader::Jwks),
            signing_key(),
            vec![old_public],
        );
        assert!(tokens.verify(token.as_bytes()).is_ok());
    }

    #[test]
    fn iat_and_nbf_are_backdated_and_exp_counts_from_now() {
        for header in [TokenHeader::X5c, TokenHeader::Jwks, TokenHeader::Kid] {
            let tokens = Tokens::new(&settings(header), signing_key(), Vec::new());
            let (at, secs) = now();
            let caller = CallerInfo {
                auth_type: "personal_access_token",
                user_info: None,
            };
            let issued = tokens
                .issue_for("alice", Vec::new(), None, caller, at)
                .unwrap();
            let claims = tokens.verify(issued.token.as_bytes()).unwrap();
            assert_eq!(claims.iat, secs - NOT_BEFORE_SKEW);
            assert_eq!(claims.nbf, secs - NOT_BEFORE_SKEW);
            assert_eq!(claims.exp, secs + 300);
            assert_eq!(claims.lifetime(), Duration::from_secs(300));
            assert_eq!(issued.expires_in, 300);
            assert_eq!(issued.issued_at.unix_timestamp() as u64, secs);
            // The inner `user` token too.
            let user = claims.user.as_deref().unwrap();
            let payload = user.split('.').nth(1).unwrap();
            use base64::Engine as _;
            let inner: UserInfoClaims = serde_json::from_slice(
                &base64::engine::general_purpose::URL_SAFE_NO_PAD
                    .decode(payload)
                    .unwrap(),
            )
            .unwrap();
            assert_eq!((inner.iat, inner.nbf), (secs - 5, secs - 5));
        }
    }
}
