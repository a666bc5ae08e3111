//! Bans for clients and usernames that fail to log in too often.
//!
//! GitLab's limiter (`Gitlab::Auth::IpRateLimiter`, Rack::Attack's `git_basic_auth`, used by
//! `lib/gitlab/auth.rb` `find_for_git_client` / `rate_limit!`) is OFF by default; when an
//! operator enables it, it counts per IP only, bans an address for 1 hour after 30 failures
//! within 3 minutes, and a success resets the address's count. Ours uses the same numbers but
//! is ON by default and also counts per username, which is safer against a password spray;
//! like GitLab's, a success resets the count of the address and of the username. Failures are
//! counted in a fixed window that starts at the first failure. Reaching the limit bans that key; a banned client or username is
//! refused before any credential is checked. Banning by username lets a stranger lock a user
//! out for the ban's length: that is the price of stopping a password spray from many
//! addresses, and why the limits are configurable (`max_failures: 0` turns the limiter off).
//! Logins whose secret is a signed token (CI job tokens) are never counted by username: they
//! cannot be guessed, and a stranger could otherwise lock every CI job out.
//!
//! An attempt is counted BEFORE its credential is checked ([`BruteForce::begin`] reserves it):
//! the failures so far plus the checks still running may not exceed the limit, so a burst of
//! simultaneous guesses gets no more slow hashes than sequential ones would. At most
//! [`MAX_IN_FLIGHT`] checks run at once per client and per username.
//!
//! The records are kept in a [`BoundedMap`] keyed by a keyed hash of the subject (the
//! username itself is never stored), so memory stays bounded whatever clients send.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hash};
use std::net::IpAddr;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::bounded::BoundedMap;

/// The limits, from `brute_force:` in gateway.yaml.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub max_failures: u32,
    pub window: Duration,
    pub ban: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_failures: 30,
            window: Duration::from_secs(180),
            ban: Duration::from_secs(3600),
        }
    }
}

/// What is counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Subject<'a> {
    Client(IpAddr),
    Username(&'a str),
}

impl Subject<'_> {
    fn kind(&self) -> SubjectKind {
        match self {
            Subject::Client(_) => SubjectKind::Client,
            Subject::Username(_) => SubjectKind::Username,
        }
    }
}

/// Which kind of subject a ban or refusal is about (what the client is told).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubjectKind {
    Client,
    Username,
}

impl SubjectKind {
    /// "client" or "user", for messages.
    pub fn noun(self) -> &'static str {
        match self {
            SubjectKind::Client => "client",
            SubjectKind::Username => "user",
        }
    }
}

#[derive(Debug)]
struct Record {
    window_start: Instant,
    /// Failures settled within the window.
    failures: u32,
    /// Checks begun and not yet settled.
    in_flight: u32,
    banned_until: Option<Instant>,
}

impl Record {
    fn new(now: Instant) -> Record {
        Record {
            window_start: now,
            failures: 0,
            in_flight: 0,
            banned_until: None,
        }
    }

    fn banned(&self, now: Instant) -> Option<Duration> {
        self.banned_until.filter(|u| now < *u).map(|u| u - now)
    }

    fn roll_window(&mut self, now: Instant, window: Duration) {
        if now.duration_since(self.window_start) >= window {
            self.window_start = now;
            self.failures = 0;
        }
    }
}

/// Why a login is refused before its credential is checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// A ban is in force.
    Banned {
        subject: SubjectKind,
        remaining: Duration,
    },
    /// The failures so far and the checks running would reach the limit, or too many checks
    /// run at once: this one might be the attempt past the limit.
    Busy { subject: SubjectKind },
}

/// A ban just started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ban {
    pub subject: SubjectKind,
    pub remaining: Duration,
}

/// Checks running at once per client and per username, at most. A legitimate client runs a
/// few logins at once (parallel layer pulls share one token); a guesser wants many.
pub const MAX_IN_FLIGHT: u32 = 8;

/// Records kept at most: about 70 bytes each.
const CAPACITY: usize = 100_000;

pub struct BruteForce {
    limits: Limits,
    records: Mutex<BoundedMap<u64, Record>>,
    /// Seeded per process: clients cannot aim two subjects at one record.
    hasher: RandomState,
}

/// One login under way: settle it with [`Attempt::succeeded`] or [`Attempt::failed`]. Dropped
/// unsettled (the client went away mid-check), it counts as a failure: the check ran anyway.
#[must_use = "settle the attempt with succeeded() or failed()"]
pub struct Attempt<'a> {
    limiter: &'a BruteForce,
    keys: Vec<(SubjectKind, u64)>,
}

impl BruteForce {
    pub fn new(limits: Limits) -> BruteForce {
        BruteForce {
            limits,
            records: Mutex::new(BoundedMap::new(CAPACITY)),
            hasher: RandomState::new(),
        }
    }

    fn enabled(&self) -> bool {
        self.limits.max_failures > 0
    }

    fn records(&self) -> MutexGuard<'_, BoundedMap<u64, Record>> {
        self.records.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn key(&self, subject: &Subject<'_>) -> u64 {
        self.hasher.hash_one(subject)
    }

    /// Reserve one attempt for `subjects`, or say why none may run now.
    pub fn begin(&self, subjects: &[Subject<'_>], now: Instant) -> Result<Attempt<'_>, Refusal> {
        if !self.enabled() {
            return Ok(Attempt {
                limiter: self,
                keys: Vec::new(),
            });
        }
        let keys: Vec<(SubjectKind, u64)> =
            subjects.iter().map(|s| (s.kind(), self.key(s))).collect();
        let mut records = self.records();
        for (subject, key) in &keys {
            if let Some(remaining) = records.get(key).and_then(|r| r.banned(now)) {
                return Err(Refusal::Banned {
                    subject: *subject,
                    remaining,
                });
            }
        }
        for (subject, key) in &keys {
            if let Some(record) = records.get_mut(key) {
                record.roll_window(now, self.limits.window);
                if record.failures + record.in_flight >= self.limits.max_failures
                    || record.in_flight >= MAX_IN_FLIGHT
                {
                    return Err(Refusal::Busy { subject: *subject });
                }
            }
        }
        for (_, key) in &keys {
            records
                .get_or_insert_with(*key, || Record::new(now))
                .in_flight += 1;
        }
        Ok(Attempt {
            limiter: self,
            keys,
        })
    }

    fn settle(&self, keys: &[(SubjectKind, u64)], success: bool, now: Instant) -> Vec<Ban> {
        let mut records = self.records();
        let mut started = Vec::new();
        for (subject, key) in keys {
            // Evicted meanwhile: start over (the bound's price, see crate::bounded).
            let record = records.get_or_insert_with(*key, || Record::new(now));
            record.in_flight = record.in_flight.saturating_sub(1);
            record.roll_window(now, self.limits.window);
            if success {
                // A success clears the count of the username and of the address, as GitLab's
                // `rate_limit!` resets the IP's (`rate_limiter.reset!`: clients routinely fail
                // once before sending the right secret). Someone with one good account can
                // thus keep an address's count low; every username's own count still bounds
                // the guesses at it.
                record.failures = 0;
                continue;
            }
            record.failures += 1;
            if record.failures >= self.limits.max_failures && record.banned(now).is_none() {
                record.banned_until = Some(now + self.limits.ban);
                record.failures = 0;
                record.window_start = now;
                started.push(Ban {
                    subject: *subject,
                    remaining: self.limits.ban,
                });
            }
        }
        started
    }
}

impl Attempt<'_> {
    /// The credential was good.
    pub fn succeeded(mut self, now: Instant) {
        let keys = std::mem::take(&mut self.keys);
        self.limiter.settle(&keys, true, now);
    }

    /// Nothing could be checked (an identity source down): neither a success nor a failure,
    /// so an outage bans nobody.
    pub fn abandoned(mut self) {
        let keys = std::mem::take(&mut self.keys);
        let mut records = self.limiter.records();
        for (_, key) in &keys {
            if let Some(record) = records.get_mut(key) {
                record.in_flight = record.in_flight.saturating_sub(1);
            }
        }
    }

    /// The credential was refused; returns the bans this failure started.
    pub fn failed(mut self, now: Instant) -> Vec<Ban> {
        let keys = std::mem::take(&mut self.keys);
        self.limiter.settle(&keys, false, now)
    }
}

impl Drop for Attempt<'_> {
    fn drop(&mut self) {
        if !self.keys.is_empty() {
            let keys = std::mem::take(&mut self.keys);
            self.limiter.settle(&keys, false, Instant::now());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limiter(max_failures: u32) -> BruteForce {
        BruteForce::new(Limits {
            max_failures,
            window: Duration::from_secs(60),
            ban: Duration::from_secs(3600),
        })
    }

    fn subjects(ip: [u8; 4], user: &str) -> [Subject<'_>; 2] {
        [Subject::Client(IpAddr::from(ip)), Subject::Username(user)]
    }

    fn fail(b: &BruteForce, s: &[Subject<'_>], at: Instant) -> Vec<Ban> {
        b.begin(s, at).expect("not refused").failed(at)
    }

    #[test]
    fn the_limit_within_the_window_bans_client_and_username_for_the_ban_time() {
        let b = limiter(3);
        let t0 = Instant::now();
        let s = subjects([10, 0, 0, 1], "alice");
        assert!(fail(&b, &s, t0).is_empty());
        assert!(fail(&b, &s, t0 + Duration::from_secs(10)).is_empty());
        let started = fail(&b, &s, t0 + Duration::from_secs(20));
        assert_eq!(
            started.len(),
            2,
            "both the client and the username are banned"
        );
        let later = t0 + Duration::from_secs(21);
        let refused = |s: &[Subject<'_>]| match b.begin(s, later) {
            Err(Refusal::Banned { subject, .. }) => Some(subject),
            Err(other) => panic!("{other:?}"),
            Ok(attempt) => {
                attempt.succeeded(later);
                None
            }
        };
        assert_eq!(
            refused(&subjects([10, 0, 0, 1], "bob")),
            Some(SubjectKind::Client)
        );
        assert_eq!(
            refused(&subjects([10, 0, 0, 2], "alice")),
            Some(SubjectKind::Username)
        );
        assert_eq!(refused(&subjects([10, 0, 0, 2], "bob")), None);
        assert!(
            b.begin(&s, t0 + Duration::from_secs(20 + 3600)).is_ok(),
            "the ban ends"
        );
    }

    #[test]
    fn failures_outside_the_window_start_over() {
        let b = limiter(3);
        let t0 = Instant::now();
        let s = subjects([10, 0, 0, 1], "alice");
        fail(&b, &s, t0);
        fail(&b, &s, t0 + Duration::from_secs(1));
        assert!(fail(&b, &s, t0 + Duration::from_secs(61)).is_empty());
        assert!(b.begin(&s, t0 + Duration::from_secs(62)).is_ok());
    }

    #[test]
    fn success_clears_the_address_and_username_counts_and_zero_disables() {
        // GitLab lib/gitlab/auth.rb `rate_limit!`: a success resets the IP's count.
        let b = limiter(3);
        let t0 = Instant::now();
        let s = subjects([10, 0, 0, 1], "alice");
        fail(&b, &s, t0);
        fail(&b, &s, t0);
        b.begin(&s, t0).unwrap().succeeded(t0);
        assert!(fail(&b, &s, t0).is_empty(), "both counts started over");
        assert!(fail(&b, &s, t0).is_empty());
        let started = fail(&b, &s, t0);
        assert_eq!(started.len(), 2, "the third failure since the success bans");
        let off = limiter(0);
        for _ in 0..100 {
            assert!(fail(&off, &s, t0).is_empty());
        }
    }

    #[test]
    fn attempts_in_flight_count_against_the_limit_before_they_fail() {
        let b = limiter(3);
        let t0 = Instant::now();
        let s = subjects([10, 0, 0, 1], "alice");
        // Three simultaneous checks reserve the three allowed; a fourth is refused before
        // any credential is looked at.
        let running: Vec<_> = (0..3).map(|_| b.begin(&s, t0).unwrap()).collect();
        assert_eq!(
            b.begin(&s, t0).err(),
            Some(Refusal::Busy {
                subject: SubjectKind::Client
            })
        );
        let bans: Vec<Ban> = running.into_iter().flat_map(|a| a.failed(t0)).collect();
        assert_eq!(bans.len(), 2);
        assert!(matches!(b.begin(&s, t0), Err(Refusal::Banned { .. })));
    }

    #[test]
    fn checks_in_flight_are_capped_even_below_the_limit_and_a_dropped_one_counts() {
        let b = limiter(100);
        let t0 = Instant::now();
        let s = subjects([10, 0, 0, 1], "alice");
        let running: Vec<_> = (0..MAX_IN_FLIGHT)
            .map(|_| b.begin(&s, t0).unwrap())
            .collect();
        assert!(matches!(b.begin(&s, t0), Err(Refusal::Busy { .. })));
        drop(running);
        // The dropped ones were counted as failures for the client.
        let key = b.key(&s[0]);
        {
            let mut records = b.records();
            let client = records.get_mut(&key).unwrap();
            assert_eq!((client.failures, client.in_flight), (MAX_IN_FLIGHT, 0));
        }
        let attempt = b.begin(&s, t0).expect("the slots are free again");
        attempt.succeeded(t0);
        let mut records = b.records();
        let client = records.get_mut(&key).unwrap();
        assert_eq!((client.failures, client.in_flight), (0, 0));
    }

    #[test]
    fn a_million_distinct_usernames_keep_the_records_at_their_cap() {
        let b = limiter(30);
        let t0 = Instant::now();
        let started = Instant::now();
        for i in 0..1_000_000u32 {
            let name = format!("user{i}");
            fail(&b, &[Subject::Username(&name)], t0);
        }
        assert_eq!(b.records().len(), CAPACITY);
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "{:?}",
            started.elapsed()
        );
    }
}
