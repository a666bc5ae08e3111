//! Revocations that must reach every replica promptly: refresh tokens today, the token
//! store's tokens when it plugs in (it calls [`Revocations::revoke`] with its token ids and
//! [`Revocations::is_revoked`] on its verify path).
//!
//! A lookup never leaves the process: [`Revocations::is_revoked`] reads a local map, so the
//! request path waits for nothing. With Redis, a revocation is also appended to one stream
//! (`<prefix>revoked`: XADD, trimmed to about [`STREAM_CAPACITY`] entries), and every
//! replica reads the stream from where it stopped every [`POLL_INTERVAL`] (XREAD, no Lua):
//!
//! **the bound**: a revocation made on one replica is in force on every replica within
//! `POLL_INTERVAL` + `shared_state.timeout` (1.1 s by default) while Redis answers; a replica
//! that starts reads the whole stream first. While Redis does not answer, a revocation is in
//! force on the replica that made it, and is written to the stream when Redis answers again.
//!
//! Ids are kept as keyed hashes, with the time their token expires anyway (after which the
//! entry is dropped): at most [`CAPACITY`] of them in process.

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::Redis;
use crate::bounded::BoundedMap;

/// How often each replica reads the revocation stream.
pub const POLL_INTERVAL: Duration = Duration::from_secs(1);
/// Revocations remembered in process, at most.
pub const CAPACITY: usize = 100_000;
/// The stream is trimmed to about this many entries (XADD MAXLEN ~).
pub const STREAM_CAPACITY: usize = 100_000;
/// Revocations made while Redis did not answer, waiting to be written, at most.
const PENDING_CAPACITY: usize = 10_000;

pub struct Revocations {
    inner: Arc<Inner>,
}

struct Inner {
    /// id hash -> until (unix seconds).
    revoked: Mutex<BoundedMap<u64, u64>>,
    /// Made while Redis did not answer: (id, until), written once it does.
    pending: Mutex<Vec<(String, u64)>>,
    hasher: RandomState,
    redis: Option<Arc<Redis>>,
}

fn now_s() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs()
}

impl Revocations {
    /// With Redis, start reading its stream on the current runtime.
    pub fn new(redis: Option<Arc<Redis>>) -> Revocations {
        let inner = Arc::new(Inner {
            revoked: Mutex::new(BoundedMap::new(CAPACITY)),
            pending: Mutex::new(Vec::new()),
            hasher: RandomState::new(),
            redis,
        });
        if inner.redis.is_some() && tokio::runtime::Handle::try_current().is_ok() {
            tokio::spawn(poll(Arc::downgrade(&inner)));
        }
        Revocations { inner }
    }

    /// Revoke `id` (a token's `jti`) until `until` (unix seconds: when it expires anyway).
    pub async fn revoke(&self, id: &str, until: u64) {
        self.inner.remember(id, until);
        if !self.inner.publish(id, until).await {
            let mut pending = self.inner.pending.lock().unwrap_or_else(|e| e.into_inner());
            if pending.len() < PENDING_CAPACITY {
                pending.push((id.to_owned(), until));
            }
        }
    }

    /// Is `id` revoked (here, or on any replica up to the bound above)?
    pub fn is_revoked(&self, id: &str) -> bool {
        let key = self.inner.hasher.hash_one(id);
        let mut revoked = self.inner.revoked.lock().unwrap_or_else(|e| e.into_inner());
        revoked.get(&key).is_some_and(|until| *until > now_s())
    }
}

impl Inner {
    fn remember(&self, id: &str, until: u64) {
        let key = self.hasher.hash_one(id);
        self.revoked
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key, until);
    }

    /// Append to the stream; false when Redis did not take it.
    async fn publish(&self, id: &str, until: u64) -> bool {
        let Some(redis) = self.redis.as_ref() else {
            return true;
        };
        let stream = redis.named("revoked");
        let (id, until) = (id.to_owned(), until.to_string());
        redis
            .run(|mut c| async move {
                redis::cmd("XADD")
                    .arg(&stream)
                    .arg("MAXLEN")
                    .arg("~")
                    .arg(STREAM_CAPACITY)
                    .arg("*")
                    .arg("id")
                    .arg(&id)
                    .arg("until")
                    .arg(&until)
                    .query_async::<String>(&mut c)
                    .await
            })
            .await
            .is_some()
    }
}

type StreamReply = Option<Vec<(String, Vec<(String, Vec<(String, String)>)>)>>;

/// Read the stream from where this replica stopped, every [`POLL_INTERVAL`].
async fn poll(inner: Weak<Inner>) {
    let mut last = "0-0".to_owned();
    loop {
        tokio::time::sleep(POLL_INTERVAL).await;
        let Some(inner) = inner.upgrade() else { return };
        let Some(redis) = inner.redis.clone() else {
            return;
        };
        if !redis.is_up() {
            continue;
        }
        let pending = std::mem::take(&mut *inner.pending.lock().unwrap_or_else(|e| e.into_inner()));
        for (id, until) in pending {
            if !inner.publish(&id, until).await {
                inner
                    .pending
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push((id, until));
            }
        }
        let stream = redis.named("revoked");
        let from = last.clone();
        let reply: Option<StreamReply> = redis
            .run(|mut c| async move {
                redis::cmd("XREAD")
                    .arg("COUNT")
                    .arg(10_000)
                    .arg("STREAMS")
                    .arg(&stream)
                    .arg(&from)
                    .query_async(&mut c)
                    .await
            })
            .await;
        let Some(Some(streams)) = reply else { continue };
        let now = now_s();
        for (_, entries) in streams {
            for (entry_id, fields) in entries {
                let field = |name: &str| {
                    fields
                        .iter()
                        .find(|(k, _)| k == name)
                        .map(|(_, v)| v.as_str())
                };
                if let (Some(id), Some(until)) = (
                    field("id"),
                    field("until").and_then(|u| u.parse::<u64>().ok()),
                ) {
                    if until > now {
                        inner.remember(id, until);
                    }
                }
                last = entry_id;
            }
        }
    }
}
