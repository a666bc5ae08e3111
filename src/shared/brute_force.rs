//! Brute-force counts and bans shared by every replica.
//!
//! The interface is [`crate::auth::brute_force`]'s: [`Limiter::begin`] reserves one attempt
//! BEFORE the credential is checked (a burst of simultaneous guesses, spread over replicas,
//! gets no more slow hashes than sequential ones would), the attempt is settled after it.
//! Two implementations: the in-process [`BruteForce`] (one replica, and every replica while
//! Redis does not answer), and Redis, where per subject (client address or username, as a
//! keyed hash: the username is never stored) three keys live, all with TTLs:
//!
//! - `bf:f:<hash>`: failures settled, INCR, expiring `brute_force.window` after the first
//!   (a fixed window, as in process);
//! - `bf:i:<hash>`: checks in flight, INCR at begin and DECR at settle, expiring after
//!   [`IN_FLIGHT_TTL`] so a replica killed mid-check leaves nothing stuck;
//! - `bf:b:<hash>`: the ban, `SET NX PX brute_force.ban`: the replica whose SET wins logs it.
//!
//! `begin` is one MULTI (PTTL of the bans, INCR of in-flight, GET of failures) read as one
//! snapshot; a refused reservation is given back with DECR. No Lua.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use redis::AsyncCommands;

use super::Redis;
use crate::auth::brute_force::{
    self, Ban, BruteForce, Limits, Refusal, Subject, SubjectKind, MAX_IN_FLIGHT,
};

/// An in-flight count outlives no check by more than this (a whole `/jwt/auth` request is cut
/// at `server.token_request_timeout`, 30s by default).
pub const IN_FLIGHT_TTL: Duration = Duration::from_secs(120);

/// The brute-force limiter: Redis when configured and answering, else in process.
pub struct Limiter {
    local: BruteForce,
    limits: Limits,
    redis: Option<Arc<Redis>>,
}

/// One login under way, on whichever store reserved it.
#[must_use = "settle the attempt with succeeded() or failed()"]
pub enum Attempt<'a> {
    Local(brute_force::Attempt<'a>),
    Shared(SharedAttempt),
}

/// An attempt reserved in Redis. Dropped unsettled (the client went away mid-check), it is
/// settled as a failure in the background, as the in-process one is.
pub struct SharedAttempt {
    redis: Arc<Redis>,
    limits: Limits,
    keys: Vec<(SubjectKind, Keys)>,
}

#[derive(Clone)]
struct Keys {
    failures: String,
    in_flight: String,
    ban: String,
}

impl Limiter {
    pub fn new(limits: Limits, redis: Option<Arc<Redis>>) -> Limiter {
        Limiter {
            local: BruteForce::new(limits),
            limits,
            redis,
        }
    }

    /// The in-process limiter (what a replica uses while Redis does not answer).
    pub fn local(&self) -> &BruteForce {
        &self.local
    }

    /// Reserve one attempt for `subjects`, or say why none may run now.
    pub async fn begin(&self, subjects: &[Subject<'_>]) -> Result<Attempt<'_>, Refusal> {
        if let Some(redis) = self.redis.as_ref().filter(|r| r.is_up()) {
            if self.limits.max_failures > 0 {
                let keys: Vec<(SubjectKind, Keys)> = subjects
                    .iter()
                    .map(|s| (kind(s), keys_of(redis, s)))
                    .collect();
                if let Some(answer) = self.begin_shared(redis, keys).await {
                    return answer.map(Attempt::Shared);
                }
            }
        }
        self.local
            .begin(subjects, Instant::now())
            .map(Attempt::Local)
    }

    /// `None`: Redis did not answer; the caller counts in process instead.
    async fn begin_shared(
        &self,
        redis: &Arc<Redis>,
        keys: Vec<(SubjectKind, Keys)>,
    ) -> Option<Result<SharedAttempt, Refusal>> {
        let mut pipe = redis::pipe();
        pipe.atomic();
        for (_, k) in &keys {
            pipe.cmd("PTTL").arg(&k.ban);
            pipe.incr(&k.in_flight, 1);
            pipe.pexpire(&k.in_flight, IN_FLIGHT_TTL.as_millis() as i64)
                .ignore();
            pipe.get(&k.failures);
        }
        let answers: Vec<(i64, u32, Option<u32>)> = redis
            .run(|mut c| async move { pipe.query_async(&mut c).await })
            .await?;
        let mut refusal = None;
        for ((subject, _), (ban_ms, _, _)) in keys.iter().zip(&answers) {
            if *ban_ms > 0 {
                refusal = Some(Refusal::Banned {
                    subject: *subject,
                    remaining: Duration::from_millis(*ban_ms as u64),
                });
                break;
            }
        }
        if refusal.is_none() {
            for ((subject, _), (_, in_flight, failures)) in keys.iter().zip(&answers) {
                if failures.unwrap_or(0) + in_flight > self.limits.max_failures
                    || *in_flight > MAX_IN_FLIGHT
                {
                    refusal = Some(Refusal::Busy { subject: *subject });
                    break;
                }
            }
        }
        let Some(refusal) = refusal else {
            return Some(Ok(SharedAttempt {
                redis: redis.clone(),
                limits: self.limits,
                keys,
            }));
        };
        // Give the reservations back.
        let mut undo = redis::pipe();
        for (_, k) in &keys {
            undo.decr(&k.in_flight, 1).ignore();
        }
        redis
            .run(|mut c| async move { undo.query_async::<()>(&mut c).await })
            .await;
        Some(Err(refusal))
    }
}

fn kind(subject: &Subject<'_>) -> SubjectKind {
    match subject {
        Subject::Client(_) => SubjectKind::Client,
        Subject::Username(_) => SubjectKind::Username,
    }
}

fn keys_of(redis: &Redis, subject: &Subject<'_>) -> Keys {
    let id = match subject {
        Subject::Client(IpAddr::V4(ip)) => redis.key("bf:c", &[&ip.octets()]),
        Subject::Client(IpAddr::V6(ip)) => redis.key("bf:c", &[&ip.octets()]),
        Subject::Username(name) => redis.key("bf:u", &[name.as_bytes()]),
    };
    // id is prefix + "bf:c:" + hash; the three keys differ in one letter after "bf:".
    let hash = id.rsplit(':').next().unwrap_or_default();
    let base = &id[..id.len() - hash.len()];
    Keys {
        failures: format!("{base}f:{hash}"),
        in_flight: format!("{base}i:{hash}"),
        ban: format!("{base}b:{hash}"),
    }
}

impl Attempt<'_> {
    /// The credential was good: the counts of the address and the username start over.
    pub async fn succeeded(self) {
        match self {
            Attempt::Local(attempt) => attempt.succeeded(Instant::now()),
            Attempt::Shared(mut attempt) => {
                let keys = std::mem::take(&mut attempt.keys);
                let mut pipe = redis::pipe();
                for (_, k) in &keys {
                    pipe.decr(&k.in_flight, 1).ignore();
                    pipe.del(&k.failures).ignore();
                }
                attempt
                    .redis
                    .run(|mut c| async move { pipe.query_async::<()>(&mut c).await })
                    .await;
            }
        }
    }

    /// Nothing could be checked (an identity source down): neither a success nor a failure,
    /// so an outage bans nobody. The reservation is given back.
    pub async fn abandoned(self) {
        match self {
            Attempt::Local(attempt) => attempt.abandoned(),
            Attempt::Shared(mut attempt) => {
                let keys = std::mem::take(&mut attempt.keys);
                let mut pipe = redis::pipe();
                for (_, k) in &keys {
                    pipe.decr(&k.in_flight, 1).ignore();
                }
                attempt
                    .redis
                    .run(|mut c| async move { pipe.query_async::<()>(&mut c).await })
                    .await;
            }
        }
    }

    /// The credential was refused; returns the bans this failure started.
    pub async fn failed(self) -> Vec<Ban> {
        match self {
            Attempt::Local(attempt) => attempt.failed(Instant::now()),
            Attempt::Shared(mut attempt) => {
                let keys = std::mem::take(&mut attempt.keys);
                settle_failure(&attempt.redis, attempt.limits, &keys).await
            }
        }
    }
}

async fn settle_failure(redis: &Redis, limits: Limits, keys: &[(SubjectKind, Keys)]) -> Vec<Ban> {
    let mut pipe = redis::pipe();
    pipe.atomic();
    for (_, k) in keys {
        pipe.decr(&k.in_flight, 1).ignore();
        pipe.incr(&k.failures, 1);
        // The window starts at the first failure (NX: later ones do not move it).
        pipe.cmd("PEXPIRE")
            .arg(&k.failures)
            .arg(limits.window.as_millis() as u64)
            .arg("NX")
            .ignore();
    }
    let Some(failures) = redis
        .run(|mut c| async move { pipe.query_async::<Vec<u32>>(&mut c).await })
        .await
    else {
        return Vec::new();
    };
    let mut started = Vec::new();
    for ((subject, k), count) in keys.iter().zip(failures) {
        if count < limits.max_failures {
            continue;
        }
        let ban = k.ban.clone();
        let failures = k.failures.clone();
        let ms = limits.ban.as_millis() as u64;
        let set: Option<Option<String>> = redis
            .run(|mut c| async move {
                let set: Option<String> = redis::cmd("SET")
                    .arg(&ban)
                    .arg(1)
                    .arg("NX")
                    .arg("PX")
                    .arg(ms)
                    .query_async(&mut c)
                    .await?;
                let _: () = c.del(&failures).await?;
                Ok(set)
            })
            .await;
        if let Some(Some(_)) = set {
            started.push(Ban {
                subject: *subject,
                remaining: limits.ban,
            });
        }
    }
    started
}

impl Drop for SharedAttempt {
    fn drop(&mut self) {
        if self.keys.is_empty() {
            return;
        }
        let keys = std::mem::take(&mut self.keys);
        let (redis, limits) = (self.redis.clone(), self.limits);
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            handle.spawn(async move {
                settle_failure(&redis, limits, &keys).await;
            });
        }
    }
}
