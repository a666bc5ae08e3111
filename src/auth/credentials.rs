//! Who is asking: a Basic `Authorization` header turned into a [`Principal`].
//!
//! Access tokens are matched by the SHA-256 of the secret, compared in constant time; only a
//! password costs a slow hash, and that runs on a blocking thread so it never stalls the
//! runtime. Nothing here logs or returns a secret.

use std::fmt;

use aws_lc_rs::digest;
use base64::Engine;
use subtle::ConstantTimeEq;
use time::OffsetDateTime;

use super::directory::{Directory, PasswordHash, RegistryScopes};

/// How a principal proved who it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credential {
    Password,
    PersonalAccessToken { name: String },
}

impl Credential {
    /// The credential's kind, for logs.
    pub fn kind(&self) -> &'static str {
        match self {
            Credential::Password => "password",
            Credential::PersonalAccessToken { .. } => "personal_access_token",
        }
    }
}

/// The authenticated caller of the token endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    /// No credentials: may pull public projects.
    Anonymous,
    User {
        username: String,
        admin: bool,
        /// What the credential allows (a password allows both registry scopes).
        scopes: RegistryScopes,
        credential: Credential,
    },
}

impl Principal {
    /// The token's `sub`: the username, empty for anonymous (as GitLab does).
    pub fn subject(&self) -> &str {
        match self {
            Principal::Anonymous => "",
            Principal::User { username, .. } => username,
        }
    }
}

/// Basic credentials as the client sent them. `Debug` never shows the secret.
pub struct BasicCredentials {
    pub username: String,
    pub secret: String,
}

impl fmt::Debug for BasicCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BasicCredentials")
            .field("username", &self.username)
            .field("secret", &"<redacted>")
            .finish()
    }
}

/// What was wrong with an `Authorization` header, before any credential was looked at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum HeaderError {
    #[error("the Authorization header uses a scheme other than Basic")]
    NotBasic,
    #[error("the Authorization header is not valid Basic credentials (base64 of username:secret)")]
    Malformed,
}

impl BasicCredentials {
    /// Parse `Basic base64(username:secret)`.
    pub fn parse(header: &[u8]) -> Result<BasicCredentials, HeaderError> {
        let text = std::str::from_utf8(header).map_err(|_| HeaderError::Malformed)?;
        let (scheme, encoded) = text.trim().split_once(' ').ok_or(HeaderError::Malformed)?;
        if !scheme.eq_ignore_ascii_case("basic") {
            return Err(HeaderError::NotBasic);
        }
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(encoded.trim())
            .map_err(|_| HeaderError::Malformed)?;
        let decoded = String::from_utf8(decoded).map_err(|_| HeaderError::Malformed)?;
        let (username, secret) = decoded.split_once(':').ok_or(HeaderError::Malformed)?;
        if username.is_empty() {
            return Err(HeaderError::Malformed);
        }
        Ok(BasicCredentials {
            username: username.to_owned(),
            secret: secret.to_owned(),
        })
    }
}

/// Why credentials were refused. The log reason tells them all apart; the client message
/// does not tell an unknown user from a wrong secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthFailure {
    #[error("unknown user")]
    UnknownUser,
    #[error("wrong password or token")]
    WrongSecret,
    #[error("personal access token {name:?} expired at {expired_at}")]
    TokenExpired { name: String, expired_at: String },
}

impl AuthFailure {
    /// A short, stable reason for log lines and metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            AuthFailure::UnknownUser => "unknown_user",
            AuthFailure::WrongSecret => "wrong_secret",
            AuthFailure::TokenExpired { .. } => "token_expired",
        }
    }

    /// The message the client sees in the 401 body.
    pub fn client_message(&self) -> &'static str {
        match self {
            AuthFailure::UnknownUser | AuthFailure::WrongSecret => {
                "HTTP Basic: Access denied. The username, password or access token is incorrect."
            }
            AuthFailure::TokenExpired { .. } => {
                "HTTP Basic: Access denied. The access token has expired: create a new one."
            }
        }
    }
}

/// SHA-256 of a token secret, the form tokens are stored in.
pub fn token_digest(secret: &str) -> [u8; 32] {
    let digest = digest::digest(&digest::SHA256, secret.as_bytes());
    let mut out = [0u8; 32];
    out.copy_from_slice(digest.as_ref());
    out
}

/// Check Basic credentials against the directory.
pub async fn authenticate(
    directory: &Directory,
    credentials: &BasicCredentials,
    now: OffsetDateTime,
) -> Result<Principal, AuthFailure> {
    let user = directory
        .user(&credentials.username)
        .ok_or(AuthFailure::UnknownUser)?;

    let digest = token_digest(&credentials.secret);
    let matched = user
        .personal_access_tokens
        .iter()
        .find(|t| bool::from(t.digest.ct_eq(&digest)));
    if let Some(token) = matched {
        if let Some(expires_at) = token.expires_at {
            if now >= expires_at {
                return Err(AuthFailure::TokenExpired {
                    name: token.name.clone(),
                    expired_at: expires_at.date().to_string(),
                });
            }
        }
        return Ok(Principal::User {
            username: user.username.clone(),
            admin: user.admin,
            scopes: token.scopes,
            credential: Credential::PersonalAccessToken {
                name: token.name.clone(),
            },
        });
    }

    let Some(hash) = user.password_hash.clone() else {
        return Err(AuthFailure::WrongSecret);
    };
    if !verify_password(hash, credentials.secret.clone()).await {
        return Err(AuthFailure::WrongSecret);
    }
    Ok(Principal::User {
        username: user.username.clone(),
        admin: user.admin,
        scopes: RegistryScopes::ALL,
        credential: Credential::Password,
    })
}

/// Run the slow hash on a blocking thread.
async fn verify_password(hash: PasswordHash, password: String) -> bool {
    tokio::task::spawn_blocking(move || hash.verify(&password))
        .await
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn basic(text: &str) -> String {
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(text)
        )
    }

    #[test]
    fn basic_credentials_split_at_the_first_colon() {
        let c = BasicCredentials::parse(basic("alice:pa:ss").as_bytes()).unwrap();
        assert_eq!((c.username.as_str(), c.secret.as_str()), ("alice", "pa:ss"));
        let c = BasicCredentials::parse(b"basic YWxpY2U6").unwrap();
        assert_eq!(c.secret, "");
    }

    #[test]
    fn malformed_headers_are_told_apart_from_other_schemes() {
        assert_eq!(
            BasicCredentials::parse(b"Bearer abc").unwrap_err(),
            HeaderError::NotBasic
        );
        for bad in [
            &b"Basic"[..],
            b"Basic !!!",
            b"Basic YWxpY2U=",
            b"Basic OnNlY3JldA==",
            b"\xff\xfe",
        ] {
            assert_eq!(
                BasicCredentials::parse(bad).unwrap_err(),
                HeaderError::Malformed,
                "{bad:?}"
            );
        }
    }

    #[test]
    fn debug_output_never_shows_the_secret() {
        let c = BasicCredentials::parse(basic("alice:hunter2").as_bytes()).unwrap();
        assert!(!format!("{c:?}").contains("hunter2"));
    }

    #[test]
    fn token_digests_are_sha256() {
        let hex: String = token_digest("abc")
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(
            hex,
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
