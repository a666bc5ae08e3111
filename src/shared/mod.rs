//! State several replicas share (`shared_state:` in gateway.yaml): brute-force counts and bans,
//! upload sessions and push records, the stripped-header detector's observations, revocations.
//!
//! Each piece has one small interface with two implementations: the in-process one (what a
//! single replica has always used, and what unit tests use) and a Redis one. Which runs is
//! chosen at start-up (`shared_state.redis` present or not) and, with Redis, per call: while
//! Redis is unreachable every piece falls back to its in-process form, so an outage of Redis
//! is never an outage of logins or pushes. Every Redis call waits at most
//! `shared_state.timeout`; once a call fails, the replica stops calling Redis (the request
//! path then waits for nothing) until the background probe reaches it again. The outage is
//! logged once when it starts (ERROR) and once when it ends (INFO), shown by `/readyz` (still
//! 200) and by the `portcullis_shared_state_degraded` gauge.
//!
//! Nothing secret or client-chosen is stored raw: keys are fixed-size keyed hashes (HMAC-SHA256
//! under a key derived from the token signing key, which every replica holds and Redis does
//! not), so a username, a User-Agent or an upload UUID of any length becomes 32 hex digits.
//! Password and token verdict caches are NOT here: they stay per process (keyed by the secret
//! and the stored hash, they are correct without sharing).

pub mod brute_force;
pub mod revocations;
pub mod stripped;
pub mod uploads;

use std::future::Future;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_lc_rs::hmac;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use crate::telemetry::metrics::metrics;

/// `shared_state.timeout` by default: about one slow hash less than anyone notices.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_millis(100);

/// How often each replica checks that Redis answers (PING), up or down: an outage that starts
/// while nobody logs in is noticed within this, and so is its end.
pub const PROBE_INTERVAL: Duration = Duration::from_secs(1);

/// `shared_state:`, validated. Its `Debug` leaves the URL out (it may hold a password).
#[derive(Clone, PartialEq, Eq)]
pub struct Settings {
    /// The Redis URL (may hold a password: never logged whole).
    pub redis: String,
    pub key_prefix: String,
    pub timeout: Duration,
}

impl std::fmt::Debug for Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Settings")
            .field("redis", &"(redacted)")
            .field("key_prefix", &self.key_prefix)
            .field("timeout", &self.timeout)
            .finish()
    }
}

const STARTING: u8 = 0;
const UP: u8 = 1;
const DOWN: u8 = 2;

/// One Redis, as every shared piece sees it: a multiplexed, self-reconnecting connection, the
/// key prefix and hash key, the timeout, and whether Redis answers now.
pub struct Redis {
    connection: ConnectionManager,
    prefix: String,
    timeout: Duration,
    state: AtomicU8,
    /// host:port, for log lines (the URL may carry a password).
    address: String,
    key: hmac::Key,
}

impl std::fmt::Debug for Redis {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Redis")
            .field("address", &self.address)
            .finish_non_exhaustive()
    }
}

impl Redis {
    /// Set up the connection (lazily: nothing waits for Redis here) and start the probe on the
    /// current tokio runtime. `secret` is what the key hash is derived from: the same on every
    /// replica. `None` outside a runtime (`portcullis check`) or for a URL the client refuses.
    pub fn connect(settings: &Settings, secret: &[u8]) -> Option<Arc<Redis>> {
        tokio::runtime::Handle::try_current().ok()?;
        let client = match redis::Client::open(settings.redis.as_str()) {
            Ok(client) => client,
            Err(error) => {
                tracing::error!(
                    "shared_state.redis: {}; running on in-process state",
                    error.category()
                );
                return None;
            }
        };
        let address = client.get_connection_info().addr().to_string();
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(settings.timeout.max(Duration::from_millis(500))))
            .set_response_timeout(Some(settings.timeout))
            .set_max_delay(Duration::from_secs(1))
            .set_number_of_retries(2);
        let connection = match client.get_connection_manager_lazy(config) {
            Ok(connection) => connection,
            Err(error) => {
                tracing::error!(
                    address,
                    "shared state: cannot set up the Redis client: {}; running on in-process state",
                    error.category()
                );
                return None;
            }
        };
        let derived = hmac::sign(
            &hmac::Key::new(hmac::HMAC_SHA256, b"portcullis shared state key\0"),
            secret,
        );
        let redis = Arc::new(Redis {
            connection,
            prefix: settings.key_prefix.clone(),
            timeout: settings.timeout,
            state: AtomicU8::new(STARTING),
            address,
            key: hmac::Key::new(hmac::HMAC_SHA256, derived.as_ref()),
        });
        metrics().shared_state_degraded(true);
        tokio::spawn(probe(Arc::downgrade(&redis)));
        Some(redis)
    }

    /// Does Redis answer now? While not, callers use their in-process state.
    pub fn is_up(&self) -> bool {
        self.state.load(Ordering::Relaxed) == UP
    }

    /// What `/readyz` says while Redis does not answer.
    pub fn degraded(&self) -> Option<String> {
        (!self.is_up()).then(|| {
            format!(
                "shared state degraded: Redis at {} does not answer; bans, upload sessions and detector observations are kept per replica until it does",
                self.address
            )
        })
    }

    /// Run one Redis exchange under the timeout. `None`: Redis is down (the call was not even
    /// made), or this call failed or took too long (Redis is then down from now on, until the
    /// probe reaches it again).
    pub async fn run<T, F>(&self, call: impl FnOnce(ConnectionManager) -> F) -> Option<T>
    where
        F: Future<Output = redis::RedisResult<T>>,
    {
        if !self.is_up() {
            return None;
        }
        match tokio::time::timeout(self.timeout, call(self.connection.clone())).await {
            Ok(Ok(value)) => Some(value),
            Ok(Err(error)) => {
                self.went_down(&error.to_string());
                None
            }
            Err(_) => {
                self.went_down(&format!(
                    "no answer within {:?} (shared_state.timeout)",
                    self.timeout
                ));
                None
            }
        }
    }

    fn went_down(&self, why: &str) {
        if self.state.swap(DOWN, Ordering::Relaxed) != DOWN {
            metrics().shared_state_degraded(true);
            tracing::error!(
                address = %self.address,
                "shared state: Redis does not answer ({why}); until it does, this replica keeps bans, upload sessions and detector observations in process (logins and pushes go on)"
            );
        }
    }

    fn came_up(&self) {
        let before = self.state.swap(UP, Ordering::Relaxed);
        if before != UP {
            metrics().shared_state_degraded(false);
            if before == DOWN {
                tracing::info!(address = %self.address, "shared state: Redis answers again; bans, upload sessions and detector observations are shared from now on (what was kept in process meanwhile stays on this replica)");
            } else {
                tracing::info!(address = %self.address, "shared state: Redis answers; bans, upload sessions and detector observations are shared");
            }
        }
    }

    /// A key: prefix, kind, and the 128-bit keyed hash of `parts` in hex.
    pub fn key(&self, kind: &str, parts: &[&[u8]]) -> String {
        let mut context = hmac::Context::with_key(&self.key);
        context.update(kind.as_bytes());
        for part in parts {
            // Length-prefixed, so ("ab", "c") and ("a", "bc") differ.
            context.update(&(part.len() as u64).to_be_bytes());
            context.update(part);
        }
        let tag = context.sign();
        let mut key = String::with_capacity(self.prefix.len() + kind.len() + 33);
        key.push_str(&self.prefix);
        key.push_str(kind);
        key.push(':');
        key.push_str(&hex(&tag.as_ref()[..16]));
        key
    }

    /// A key named by the prefix alone (a stream every replica reads).
    pub fn named(&self, name: &str) -> String {
        format!("{}{name}", self.prefix)
    }

    pub fn timeout(&self) -> Duration {
        self.timeout
    }
}

/// Check Redis every [`PROBE_INTERVAL`] while the gateway lives.
async fn probe(redis: Weak<Redis>) {
    loop {
        let Some(redis) = redis.upgrade() else { return };
        let mut connection = redis.connection.clone();
        let command = redis::cmd("PING");
        let ping = command.query_async::<String>(&mut connection);
        match tokio::time::timeout(redis.timeout.max(Duration::from_millis(200)), ping).await {
            Ok(Ok(_)) => redis.came_up(),
            Ok(Err(error)) => redis.went_down(&error.to_string()),
            Err(_) => redis.went_down("no answer to PING"),
        }
        drop(redis);
        tokio::time::sleep(PROBE_INTERVAL).await;
    }
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Milliseconds since the epoch: what Redis records hold (replicas share wall clocks, not
/// `Instant`s).
pub(crate) fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis() as u64
}

/// The `Instant` of a wall-clock time in milliseconds (now, if it lies in the future).
pub(crate) fn instant_of(ms: u64) -> std::time::Instant {
    let now = std::time::Instant::now();
    now.checked_sub(Duration::from_millis(unix_ms().saturating_sub(ms)))
        .unwrap_or(now)
}

/// Wall-clock milliseconds of an `Instant`.
pub(crate) fn ms_of(at: std::time::Instant) -> u64 {
    unix_ms().saturating_sub(at.elapsed().as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_never_show_the_url_and_wall_clock_round_trips() {
        let settings = Settings {
            redis: "redis://:s3cret@10.0.0.5:6379/0".into(),
            key_prefix: "portcullis:".into(),
            timeout: DEFAULT_TIMEOUT,
        };
        assert!(!format!("{settings:?}").contains("s3cret"));
        let earlier = std::time::Instant::now() - Duration::from_secs(5);
        let back = instant_of(ms_of(earlier));
        let drift = back.max(earlier) - back.min(earlier);
        assert!(drift < Duration::from_millis(50), "{drift:?}");
        // A time in the future (another replica's clock ahead) is now, never later.
        assert!(instant_of(unix_ms() + 60_000) <= std::time::Instant::now());
    }
}
