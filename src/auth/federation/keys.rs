//! An issuer's signing keys: discovered, fetched, cached, refreshed.
//!
//! - The keys are fetched on first use (discovery, then the JWKS), kept, and refreshed when
//!   older than [`REFRESH_AFTER`].
//! - A token naming a `kid` the cache does not hold triggers one refetch, and such refetches
//!   happen at most once per [`REFETCH_INTERVAL`]: a stream of tokens with made-up `kid`s
//!   costs the issuer one request a minute. A failed fetch waits as long before the next.
//! - The issuer unreachable: the cached keys keep working until [`KEYS_EXPIRE`] after the
//!   last successful fetch; one ERROR when the outage starts, one INFO when it ends.
//! - Only asymmetric keys are kept, each with the one algorithm it allows (its `alg`, or the
//!   one its type implies): symmetric (`oct`) keys never verify anything, so a token cannot
//!   turn a public key into an HMAC secret.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, KeyAlgorithm};
use jsonwebtoken::{Algorithm, DecodingKey};

use super::fetch::{FetchError, Fetcher};

pub const REFRESH_AFTER: Duration = Duration::from_secs(3600);
pub const REFETCH_INTERVAL: Duration = Duration::from_secs(60);
pub const KEYS_EXPIRE: Duration = Duration::from_secs(24 * 3600);
/// More keys than this in one JWKS is not an issuer's key set.
const MAX_KEYS: usize = 64;

/// One verification key and the algorithm it allows.
pub struct IssuerKey {
    pub algorithm: Algorithm,
    pub decoding: DecodingKey,
}

/// Why no key could be had for a token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyLookup {
    /// The issuer's current keys (fetched within the bounds above) have no such `kid`.
    Unknown,
    /// No usable keys: the issuer cannot be reached and nothing usable is cached.
    Unavailable(String),
}

struct KeySet {
    keys: HashMap<String, Arc<IssuerKey>>,
    fetched: Instant,
}

#[derive(Default)]
struct State {
    set: Option<Arc<KeySet>>,
    /// No refetch (for an unknown kid, or after a failure) before this.
    quiet_until: Option<Instant>,
    /// The outage under way, if any (logged when it started).
    outage: Option<String>,
    /// Fetches started: a request that waited for another's fetch uses its result.
    attempts: u64,
}

pub struct IssuerKeys {
    federation: String,
    issuer: String,
    jwks_uri: Option<String>,
    fetcher: Fetcher,
    state: Mutex<State>,
    /// One fetch at a time per issuer; the others wait for its result.
    fetching: tokio::sync::Mutex<()>,
}

impl IssuerKeys {
    pub fn new(
        federation: &str,
        issuer: &str,
        jwks_uri: Option<String>,
        fetcher: Fetcher,
    ) -> IssuerKeys {
        IssuerKeys {
            federation: federation.to_owned(),
            issuer: issuer.to_owned(),
            jwks_uri,
            fetcher,
            state: Mutex::new(State::default()),
            fetching: tokio::sync::Mutex::new(()),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The outage under way, for the source's health.
    pub fn outage(&self) -> Option<String> {
        self.state().outage.clone()
    }

    /// The key a token names by `kid`.
    pub async fn key(&self, kid: &str) -> Result<Arc<IssuerKey>, KeyLookup> {
        let now = Instant::now();
        let (set, quiet, attempts) = {
            let state = self.state();
            (
                state.set.clone(),
                state.quiet_until.is_some_and(|until| now < until),
                state.attempts,
            )
        };
        match &set {
            Some(set) if now.duration_since(set.fetched) < REFRESH_AFTER => {
                if let Some(key) = set.keys.get(kid) {
                    return Ok(key.clone());
                }
                if quiet {
                    // Unknown unless the issuer is down (then nobody can tell: 503).
                    return self.cached(Some(set), kid, now);
                }
                // An unknown kid: perhaps the issuer rotated. One refetch, then quiet.
                self.state().quiet_until = Some(now + REFETCH_INTERVAL);
            }
            _ if quiet => return self.cached(set.as_deref(), kid, now),
            _ => {}
        }
        let _one = self.fetching.lock().await;
        {
            // Someone else may have fetched while we waited: use what they got.
            let mut state = self.state();
            if state.attempts != attempts {
                let current = state.set.clone();
                drop(state);
                return self.cached(current.as_deref(), kid, Instant::now());
            }
            state.attempts += 1;
        }
        match self.fetch().await {
            Ok(keys) => {
                let set = Arc::new(KeySet {
                    keys,
                    fetched: Instant::now(),
                });
                let ended = {
                    let mut state = self.state();
                    state.set = Some(set.clone());
                    state.outage.take()
                };
                if let Some(was) = ended {
                    tracing::info!(federation = ?self.federation, issuer = ?self.issuer, was = %was, "the issuer's keys can be fetched again");
                }
                set.keys.get(kid).cloned().ok_or(KeyLookup::Unknown)
            }
            Err(error) => {
                let (started, set) = {
                    let mut state = self.state();
                    state.quiet_until = Some(Instant::now() + REFETCH_INTERVAL);
                    let started = state.outage.is_none();
                    state.outage = Some(error.to_string());
                    (started, state.set.clone())
                };
                if started {
                    let cached = set.as_ref().map(|s| s.keys.len()).unwrap_or(0);
                    tracing::error!(federation = ?self.federation, issuer = ?self.issuer, error = %error, cached_keys = cached, "cannot fetch the issuer's signing keys: ID tokens signed with cached keys keep working for up to {}h after the last fetch; others are refused until the issuer answers again (retried at most once a minute)", KEYS_EXPIRE.as_secs() / 3600);
                }
                self.cached(set.as_deref(), kid, Instant::now())
            }
        }
    }

    /// A key of the cached set, while that set has not expired.
    fn cached(
        &self,
        set: Option<&KeySet>,
        kid: &str,
        now: Instant,
    ) -> Result<Arc<IssuerKey>, KeyLookup> {
        let outage = || {
            self.outage()
                .unwrap_or_else(|| "the issuer's keys were not fetched yet".into())
        };
        match set {
            Some(set) if now.duration_since(set.fetched) < KEYS_EXPIRE => match set.keys.get(kid) {
                Some(key) => Ok(key.clone()),
                None if self.outage().is_some() => Err(KeyLookup::Unavailable(outage())),
                None => Err(KeyLookup::Unknown),
            },
            _ => Err(KeyLookup::Unavailable(outage())),
        }
    }

    /// Discovery (unless `jwks_uri` is configured), then the JWKS.
    async fn fetch(&self) -> Result<HashMap<String, Arc<IssuerKey>>, FetchError> {
        let jwks_uri = match &self.jwks_uri {
            Some(uri) => uri.clone(),
            None => {
                let url = format!(
                    "{}/.well-known/openid-configuration",
                    self.issuer.trim_end_matches('/')
                );
                let document = self.fetcher.json(&url).await?;
                // OpenID Connect Discovery 1.0, 4.3: the document's issuer must be ours.
                if document.get("issuer").and_then(|i| i.as_str()) != Some(self.issuer.as_str()) {
                    return Err(FetchError::NotJson {
                        url,
                        message: format!(
                            "its issuer is {:?}, not {:?}",
                            document.get("issuer"),
                            self.issuer
                        ),
                    });
                }
                document
                    .get("jwks_uri")
                    .and_then(|u| u.as_str())
                    .ok_or_else(|| FetchError::NotJson {
                        url: url.clone(),
                        message: "it has no jwks_uri".into(),
                    })?
                    .to_owned()
            }
        };
        let jwks = self.fetcher.json(&jwks_uri).await?;
        let entries =
            jwks.get("keys")
                .and_then(|k| k.as_array())
                .ok_or_else(|| FetchError::NotJson {
                    url: jwks_uri.clone(),
                    message: "it has no keys list".into(),
                })?;
        let mut keys = HashMap::new();
        for entry in entries.iter().take(MAX_KEYS) {
            let Ok(jwk) = serde_json::from_value::<Jwk>(entry.clone()) else {
                continue;
            };
            let Some(kid) = jwk.common.key_id.clone() else {
                continue;
            };
            if let Some(key) = usable(&jwk) {
                keys.insert(kid, Arc::new(key));
            }
        }
        tracing::debug!(federation = ?self.federation, keys = keys.len(), "fetched the issuer's signing keys");
        Ok(keys)
    }
}

/// An asymmetric signing key and the one algorithm it allows, or None.
fn usable(jwk: &Jwk) -> Option<IssuerKey> {
    use jsonwebtoken::jwk::PublicKeyUse;
    if matches!(&jwk.common.public_key_use, Some(u) if *u != PublicKeyUse::Signature) {
        return None;
    }
    let implied = match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => Algorithm::RS256,
        AlgorithmParameters::EllipticCurve(ec) => match ec.curve {
            EllipticCurve::P256 => Algorithm::ES256,
            EllipticCurve::P384 => Algorithm::ES384,
            _ => return None,
        },
        AlgorithmParameters::OctetKeyPair(_) => Algorithm::EdDSA,
        // A symmetric key is never a published verification key.
        AlgorithmParameters::OctetKey(_) => return None,
    };
    let algorithm = match jwk.common.key_algorithm {
        None => implied,
        Some(alg) => {
            let named = match alg {
                KeyAlgorithm::RS256 => Algorithm::RS256,
                KeyAlgorithm::RS384 => Algorithm::RS384,
                KeyAlgorithm::RS512 => Algorithm::RS512,
                KeyAlgorithm::PS256 => Algorithm::PS256,
                KeyAlgorithm::PS384 => Algorithm::PS384,
                KeyAlgorithm::PS512 => Algorithm::PS512,
                KeyAlgorithm::ES256 => Algorithm::ES256,
                KeyAlgorithm::ES384 => Algorithm::ES384,
                KeyAlgorithm::EdDSA => Algorithm::EdDSA,
                _ => return None,
            };
            // The named algorithm must fit the key's type.
            let fits = match &jwk.algorithm {
                AlgorithmParameters::RSA(_) => matches!(
                    named,
                    Algorithm::RS256
                        | Algorithm::RS384
                        | Algorithm::RS512
                        | Algorithm::PS256
                        | Algorithm::PS384
                        | Algorithm::PS512
                ),
                _ => named == implied,
            };
            if !fits {
                return None;
            }
            named
        }
    };
    let decoding = DecodingKey::from_jwk(jwk).ok()?;
    Some(IssuerKey {
        algorithm,
        decoding,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_asymmetric_keys_with_a_fitting_algorithm_are_kept() {
        let ec = r#"{"kty":"EC","crv":"P-256","kid":"a","x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU","y":"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"}"#;
        let key = usable(&serde_json::from_str(ec).unwrap()).unwrap();
        assert_eq!(key.algorithm, Algorithm::ES256);
        let ec_rs = ec.replace(r#""kid":"a""#, r#""kid":"a","alg":"RS256""#);
        assert!(usable(&serde_json::from_str(&ec_rs).unwrap()).is_none());
        let ec_hs = ec.replace(r#""kid":"a""#, r#""kid":"a","alg":"HS256""#);
        assert!(usable(&serde_json::from_str(&ec_hs).unwrap()).is_none());
        let oct = r#"{"kty":"oct","kid":"s","k":"c2VjcmV0"}"#;
        assert!(usable(&serde_json::from_str(oct).unwrap()).is_none());
        let enc = ec.replace(r#""kid":"a""#, r#""kid":"a","use":"enc""#);
        assert!(usable(&serde_json::from_str(&enc).unwrap()).is_none());
    }
}
