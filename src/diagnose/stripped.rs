//! Noticing an `Authorization` header removed between the client and the gateway.
//!
//! A client that was just given a token and then calls `/v2/` without any Authorization is not
//! behaving like any registry client: its header is being stripped on the way in (a proxy that
//! clears it, or a redirect that drops it). Per client (address + User-Agent) the gateway
//! remembers "a token was issued, and no authenticated request has arrived since". An
//! unauthenticated `/v2/` request in that state is reported once per issued token. A normal
//! login never trips it: its first unauthenticated ping comes before any token, and a client
//! that logged in and pushes again (`docker login && docker push`) sent authenticated requests
//! in between.

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::bounded::BoundedMap;

/// How long after a token an unauthenticated request still counts as suspicious.
pub const WINDOW: Duration = Duration::from_secs(300);
const CAPACITY: usize = 50_000;

#[derive(Debug)]
struct Client {
    token_issued: Instant,
    authenticated_since: bool,
    reported: bool,
}

/// Clients recently given a token, keyed by a hash of (address, User-Agent): looking a client
/// up on the `/v2/` path allocates nothing, and no User-Agent is stored. The hasher is seeded
/// per process, so clients cannot aim collisions; a collision would at worst misattribute one
/// warning line. At most [`CAPACITY`] clients are remembered, O(1) per insert (a flood of new
/// clients pushes out idle ones: they are then not diagnosed, nothing else).
pub struct StrippedDetector {
    clients: Mutex<BoundedMap<u64, Client>>,
    hasher: RandomState,
}

impl Default for StrippedDetector {
    fn default() -> Self {
        StrippedDetector {
            clients: Mutex::new(BoundedMap::new(CAPACITY)),
            hasher: RandomState::new(),
        }
    }
}

impl StrippedDetector {
    fn clients(&self) -> std::sync::MutexGuard<'_, BoundedMap<u64, Client>> {
        self.clients.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn key(&self, ip: IpAddr, user_agent: &str) -> u64 {
        self.hasher.hash_one((ip, user_agent))
    }

    /// The token endpoint gave this client a token.
    pub fn token_issued(&self, ip: IpAddr, user_agent: &str, now: Instant) {
        let mut clients = self.clients();
        clients.insert(
            self.key(ip, user_agent),
            Client {
                token_issued: now,
                authenticated_since: false,
                reported: false,
            },
        );
    }

    /// A `/v2/` request arrived. Returns how long ago the client got its token when this
    /// request, arriving without Authorization, means the header is being stripped (once per
    /// token).
    pub fn request(
        &self,
        ip: IpAddr,
        user_agent: &str,
        authenticated: bool,
        now: Instant,
    ) -> Option<Duration> {
        let key = self.key(ip, user_agent);
        let mut clients = self.clients();
        let client = clients.get_mut(&key)?;
        if authenticated {
            client.authenticated_since = true;
            return None;
        }
        let since = now.duration_since(client.token_issued);
        if client.authenticated_since || client.reported || since >= WINDOW {
            return None;
        }
        client.reported = true;
        Some(since)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const IP: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 1));

    #[test]
    fn a_normal_login_and_a_second_command_are_not_reported() {
        let d = StrippedDetector::default();
        let t0 = Instant::now();
        assert_eq!(d.request(IP, "docker", false, t0), None, "the first ping");
        d.token_issued(IP, "docker", t0);
        assert_eq!(
            d.request(IP, "docker", true, t0),
            None,
            "the ping with the token"
        );
        assert_eq!(
            d.request(IP, "docker", false, t0 + Duration::from_secs(2)),
            None,
            "the next command's ping"
        );
    }

    #[test]
    fn a_request_without_the_token_just_issued_is_reported_once() {
        let d = StrippedDetector::default();
        let t0 = Instant::now();
        d.token_issued(IP, "docker", t0);
        assert_eq!(d.request(IP, "podman", false, t0), None, "another client");
        assert_eq!(
            d.request(IP, "docker", false, t0 + Duration::from_secs(1)),
            Some(Duration::from_secs(1))
        );
        assert_eq!(
            d.request(IP, "docker", false, t0 + Duration::from_secs(2)),
            None,
            "once per token"
        );
        d.token_issued(IP, "docker", t0 + Duration::from_secs(3));
        assert!(
            d.request(IP, "docker", false, t0 + Duration::from_secs(4))
                .is_some(),
            "again for a new token"
        );
        assert_eq!(
            d.request(IP, "docker", false, t0 + WINDOW + Duration::from_secs(10)),
            None
        );
    }

    #[test]
    fn a_flood_of_user_agents_stays_at_the_cap() {
        let d = StrippedDetector::default();
        let t0 = Instant::now();
        for i in 0..1_000_000 {
            d.token_issued(IP, &format!("agent-{i}"), t0);
        }
        assert_eq!(d.clients().len(), CAPACITY);
        d.token_issued(IP, "docker", t0);
        assert!(d.request(IP, "docker", false, t0).is_some());
    }
}
