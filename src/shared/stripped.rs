//! The stripped-header detector's observations, shared by every replica.
//!
//! "A token was issued to this client (address + User-Agent), and no authenticated request has
//! arrived since" must hold across replicas: the token request and the `/v2/` request commonly
//! reach different ones. The in-process [`StrippedDetector`] always runs (it is what a replica
//! answers from while Redis does not). With Redis, per client (a keyed hash) three keys, all
//! expiring after [`WINDOW`]:
//!
//! - `st:i:<hash>`: the token's issue time, written (and `st:a`, `st:r` deleted) before the
//!   token is handed out, so any replica the client reaches next sees it;
//! - `st:a:<hash>`: an authenticated request arrived since. Written once per (client, token)
//!   per replica: a local set of the Authorization values already reported keeps the `/v2/`
//!   path to one hash-map lookup per request;
//! - `st:r:<hash>`: the warning was given for this token (`SET NX`: one replica logs it).

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::{unix_ms, Redis};
use crate::bounded::BoundedMap;
use crate::diagnose::stripped::{StrippedDetector, WINDOW};

/// (client, token) pairs whose authenticated request this replica already wrote.
const WRITTEN_CAPACITY: usize = 50_000;

pub struct Detector {
    local: StrippedDetector,
    redis: Option<Arc<Redis>>,
    written: Mutex<BoundedMap<u64, ()>>,
    hasher: RandomState,
}

struct Keys {
    issued: String,
    authenticated: String,
    reported: String,
}

fn keys(redis: &Redis, ip: IpAddr, user_agent: &str) -> Keys {
    let ip = match ip {
        IpAddr::V4(ip) => ip.to_ipv6_mapped().octets(),
        IpAddr::V6(ip) => ip.octets(),
    };
    let id = redis.key("st", &[&ip, user_agent.as_bytes()]);
    let hash = id.rsplit(':').next().unwrap_or_default();
    let base = &id[..id.len() - hash.len()];
    Keys {
        issued: format!("{base}i:{hash}"),
        authenticated: format!("{base}a:{hash}"),
        reported: format!("{base}r:{hash}"),
    }
}

impl Detector {
    pub fn new(redis: Option<Arc<Redis>>) -> Detector {
        Detector {
            local: StrippedDetector::default(),
            redis,
            written: Mutex::new(BoundedMap::new(WRITTEN_CAPACITY)),
            hasher: RandomState::new(),
        }
    }

    fn redis(&self) -> Option<&Arc<Redis>> {
        self.redis.as_ref().filter(|r| r.is_up())
    }

    /// The token endpoint is about to give this client a token.
    pub async fn token_issued(&self, ip: IpAddr, user_agent: &str) {
        self.local.token_issued(ip, user_agent, Instant::now());
        let Some(redis) = self.redis() else { return };
        let k = keys(redis, ip, user_agent);
        let ttl = WINDOW.as_millis() as u64;
        let mut pipe = redis::pipe();
        pipe.atomic()
            .cmd("SET")
            .arg(&k.issued)
            .arg(unix_ms())
            .arg("PX")
            .arg(ttl)
            .ignore()
            .del(&k.authenticated)
            .ignore()
            .del(&k.reported)
            .ignore();
        redis
            .run(|mut c| async move { pipe.query_async::<()>(&mut c).await })
            .await;
    }

    /// A `/v2/` request arrived (`authorization`: its header, if any). Returns how long ago the
    /// client got its token when this request, arriving without Authorization, means the
    /// header is being stripped (once per token, over all replicas).
    pub async fn request(
        &self,
        ip: IpAddr,
        user_agent: &str,
        authorization: Option<&[u8]>,
    ) -> Option<Duration> {
        let local = self
            .local
            .request(ip, user_agent, authorization.is_some(), Instant::now());
        let Some(redis) = self.redis() else {
            return local;
        };
        let k = match authorization {
            Some(value) => {
                let pair = self.hasher.hash_one((ip, user_agent, value));
                {
                    let mut written = self.written.lock().unwrap_or_else(|e| e.into_inner());
                    if written.get(&pair).is_some() {
                        return None;
                    }
                    written.insert(pair, ());
                }
                let k = keys(redis, ip, user_agent);
                let ttl = WINDOW.as_millis() as u64;
                redis
                    .run(|mut c| async move {
                        redis::cmd("SET")
                            .arg(&k.authenticated)
                            .arg(1)
                            .arg("PX")
                            .arg(ttl)
                            .query_async::<()>(&mut c)
                            .await
                    })
                    .await;
                return None;
            }
            None => keys(redis, ip, user_agent),
        };
        let ttl = WINDOW.as_millis() as u64;
        redis
            .run(|mut c| async move {
                let (issued, authenticated): (Option<u64>, Option<u8>) = redis::pipe()
                    .get(&k.issued)
                    .get(&k.authenticated)
                    .query_async(&mut c)
                    .await?;
                let Some(issued) = issued else {
                    return Ok(None);
                };
                let since = Duration::from_millis(unix_ms().saturating_sub(issued));
                if authenticated.is_some() || since >= WINDOW {
                    return Ok(None);
                }
                let first: Option<String> = redis::cmd("SET")
                    .arg(&k.reported)
                    .arg(1)
                    .arg("NX")
                    .arg("PX")
                    .arg(ttl)
                    .query_async(&mut c)
                    .await?;
                Ok(first.map(|_| since))
            })
            .await
            // Redis failed just now: what this replica saw.
            .unwrap_or(local)
    }
}
