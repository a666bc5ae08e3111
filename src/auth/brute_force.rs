//! Bans for clients and usernames that fail to log in too often (GitLab's default: 30
//! failures within 60 s ban for 1 hour).
//!
//! Failures are counted per client IP and per username in a fixed window that starts at the
//! first failure. Reaching the limit bans that key; a banned client or username is refused
//! before any credential is checked. Banning by username lets a stranger lock a user out for
//! the ban's length: that is the price of stopping a password spray from many addresses, and
//! why both limits are configurable (`max_failures: 0` turns the limiter off).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

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
            window: Duration::from_secs(60),
            ban: Duration::from_secs(3600),
        }
    }
}

/// What is counted.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Subject {
    Client(IpAddr),
    Username(String),
}

#[derive(Debug)]
struct Record {
    window_start: Instant,
    failures: u32,
    banned_until: Option<Instant>,
}

/// A ban in force.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ban {
    pub subject: Subject,
    pub remaining: Duration,
}

/// Bounded bookkeeping: at most this many records; stale ones go first.
const CAPACITY: usize = 100_000;

pub struct BruteForce {
    limits: Limits,
    records: Mutex<HashMap<Subject, Record>>,
}

impl BruteForce {
    pub fn new(limits: Limits) -> BruteForce {
        BruteForce {
            limits,
            records: Mutex::new(HashMap::new()),
        }
    }

    fn enabled(&self) -> bool {
        self.limits.max_failures > 0
    }

    /// The first ban in force among `subjects`, if any.
    pub fn banned(&self, subjects: &[Subject], now: Instant) -> Option<Ban> {
        if !self.enabled() {
            return None;
        }
        let records = self.records.lock().unwrap_or_else(|e| e.into_inner());
        subjects.iter().find_map(|subject| {
            let until = records.get(subject)?.banned_until?;
            (now < until).then(|| Ban {
                subject: subject.clone(),
                remaining: until - now,
            })
        })
    }

    /// Count a failed login; returns the bans it started.
    pub fn failure(&self, subjects: &[Subject], now: Instant) -> Vec<Ban> {
        if !self.enabled() {
            return Vec::new();
        }
        let mut records = self.records.lock().unwrap_or_else(|e| e.into_inner());
        if records.len() >= CAPACITY {
            let window = self.limits.window;
            records.retain(|_, r| {
                r.banned_until.is_some_and(|u| now < u)
                    || now.duration_since(r.window_start) < window
            });
        }
        let mut started = Vec::new();
        for subject in subjects {
            let record = records.entry(subject.clone()).or_insert(Record {
                window_start: now,
                failures: 0,
                banned_until: None,
            });
            if now.duration_since(record.window_start) >= self.limits.window {
                record.window_start = now;
                record.failures = 0;
            }
            record.failures += 1;
            if record.failures >= self.limits.max_failures
                && record.banned_until.is_none_or(|u| now >= u)
            {
                record.banned_until = Some(now + self.limits.ban);
                record.failures = 0;
                record.window_start = now;
                started.push(Ban {
                    subject: subject.clone(),
                    remaining: self.limits.ban,
                });
            }
        }
        started
    }

    /// A successful login clears the username's count (not the client's).
    pub fn success(&self, username: &str) {
        let mut records = self.records.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(record) = records.get_mut(&Subject::Username(username.to_owned())) {
            record.failures = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limiter() -> BruteForce {
        BruteForce::new(Limits {
            max_failures: 3,
            window: Duration::from_secs(60),
            ban: Duration::from_secs(3600),
        })
    }

    fn subjects(ip: [u8; 4], user: &str) -> Vec<Subject> {
        vec![
            Subject::Client(IpAddr::from(ip)),
            Subject::Username(user.into()),
        ]
    }

    #[test]
    fn the_limit_within_the_window_bans_client_and_username_for_the_ban_time() {
        let b = limiter();
        let t0 = Instant::now();
        let s = subjects([10, 0, 0, 1], "alice");
        assert!(b.failure(&s, t0).is_empty());
        assert!(b.failure(&s, t0 + Duration::from_secs(10)).is_empty());
        let started = b.failure(&s, t0 + Duration::from_secs(20));
        assert_eq!(
            started.len(),
            2,
            "both the client and the username are banned"
        );
        let later = t0 + Duration::from_secs(21);
        assert_eq!(
            b.banned(&subjects([10, 0, 0, 1], "bob"), later)
                .unwrap()
                .subject,
            s[0]
        );
        assert_eq!(
            b.banned(&subjects([10, 0, 0, 2], "alice"), later)
                .unwrap()
                .subject,
            s[1]
        );
        assert!(b.banned(&subjects([10, 0, 0, 2], "bob"), later).is_none());
        assert!(
            b.banned(&s, t0 + Duration::from_secs(20 + 3600)).is_none(),
            "the ban ends"
        );
    }

    #[test]
    fn failures_outside_the_window_start_over() {
        let b = limiter();
        let t0 = Instant::now();
        let s = subjects([10, 0, 0, 1], "alice");
        b.failure(&s, t0);
        b.failure(&s, t0 + Duration::from_secs(1));
        assert!(b.failure(&s, t0 + Duration::from_secs(61)).is_empty());
        assert!(b.banned(&s, t0 + Duration::from_secs(62)).is_none());
    }

    #[test]
    fn success_clears_the_usernames_count_and_zero_disables() {
        let b = limiter();
        let t0 = Instant::now();
        let s = subjects([10, 0, 0, 1], "alice");
        b.failure(&s, t0);
        b.failure(&s, t0);
        b.success("alice");
        let started = b.failure(&s, t0);
        assert_eq!(started.len(), 1, "only the client reached the limit");
        let off = BruteForce::new(Limits {
            max_failures: 0,
            ..Limits::default()
        });
        for _ in 0..100 {
            assert!(off.failure(&s, t0).is_empty());
        }
        assert!(off.banned(&s, t0).is_none());
    }
}
