//! Running the slow password hash: bounded, and the same work whether the user exists or not.
//!
//! Every verification runs on a blocking thread, and at most [`concurrency`] run at once in
//! the whole process (the others wait their turn): guesses from many addresses queue up
//! instead of taking every blocking thread the runtime has.
//!
//! A login that fails without having run a slow hash (an unknown user, a user without a
//! password, a wrong deploy-token secret) verifies against a [`DummyHash`] instead, so the
//! answer takes as long as a wrong password for a real user and nobody can tell by timing
//! which usernames exist. The dummy has the algorithm and cost most of the directory's
//! password hashes have, and matches no password (its password is random and forgotten).

use std::sync::{Arc, LazyLock, Mutex, Weak};

use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use tokio::sync::Semaphore;

use super::directory::{Directory, PasswordHash};
use crate::telemetry::metrics::metrics;

/// Slow hashes run at once, process-wide: twice the cores (one waits while one runs).
pub fn concurrency() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get() * 2)
}

static SLOTS: LazyLock<Semaphore> = LazyLock::new(|| Semaphore::new(concurrency()));

/// Verify `password` against `hash` on a blocking thread, waiting for a slot first.
pub async fn verify(hash: PasswordHash, password: String) -> bool {
    run(hash, password, "stored").await
}

async fn run(hash: PasswordHash, password: String, kind: &'static str) -> bool {
    // The semaphore is never closed: acquire only fails on close.
    let Ok(_slot) = SLOTS.acquire().await else {
        return false;
    };
    metrics().password_hash(kind);
    tokio::task::spawn_blocking(move || hash.verify(&password))
        .await
        .unwrap_or(false)
}

/// What makes two hashes cost the same: the algorithm and its parameters, not the salt.
fn profile(hash: &PasswordHash) -> Option<String> {
    match hash {
        // $2a$, $2b$, $2y$ differ in a bug fix, not in cost.
        PasswordHash::Bcrypt(text) => text.get(4..6).map(|cost| format!("bcrypt cost {cost}")),
        PasswordHash::Argon2(text) => {
            let parsed = argon2::PasswordHash::new(text).ok()?;
            Some(format!(
                "{} v={:?} {} len={:?}",
                parsed.algorithm,
                parsed.version,
                parsed.params,
                parsed.hash.map(|h| h.len())
            ))
        }
    }
}

/// A hash of a random password, with the same algorithm and parameters as `like`.
fn make_like(like: &PasswordHash) -> Option<PasswordHash> {
    let mut bytes = [0u8; 32];
    SystemRandom::new().fill(&mut bytes).ok()?;
    let password: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    match like {
        PasswordHash::Bcrypt(text) => {
            let cost: u32 = text.get(4..6)?.parse().ok()?;
            bcrypt::hash(&password, cost).ok().map(PasswordHash::Bcrypt)
        }
        PasswordHash::Argon2(text) => {
            use argon2::password_hash::{PasswordHasher, SaltString};
            let parsed = argon2::PasswordHash::new(text).ok()?;
            let algorithm = argon2::Algorithm::try_from(parsed.algorithm).ok()?;
            let version = argon2::Version::try_from(parsed.version.unwrap_or(0x13)).ok()?;
            let params = argon2::Params::try_from(&parsed).ok()?;
            let salt = SaltString::encode_b64(&bytes[..16]).ok()?;
            argon2::Argon2::new(algorithm, version, params)
                .hash_password(password.as_bytes(), &salt)
                .ok()
                .map(|h| PasswordHash::Argon2(h.to_string()))
        }
    }
}

/// The directory's most common hash profile, and one hash that has it.
fn most_common(directory: &Directory) -> Option<(String, PasswordHash)> {
    let mut counts: std::collections::HashMap<String, (usize, &PasswordHash)> =
        std::collections::HashMap::new();
    for hash in directory.users().filter_map(|u| u.password_hash.as_ref()) {
        if let Some(profile) = profile(hash) {
            counts.entry(profile).or_insert((0, hash)).0 += 1;
        }
    }
    counts
        .into_iter()
        .max_by(|a, b| a.1 .0.cmp(&b.1 .0).then_with(|| b.0.cmp(&a.0)))
        .map(|(profile, (_, hash))| (profile, hash.clone()))
}

struct Current {
    /// The directory this was chosen for (a `Weak` so that a freed directory's address,
    /// reused by a new one, cannot be mistaken for it).
    directory: Weak<Directory>,
    profile: Option<String>,
    hash: Option<PasswordHash>,
}

/// The hash that a failed login without a slow hash of its own is verified against.
pub struct DummyHash {
    current: Mutex<Current>,
}

impl DummyHash {
    /// Made once at start-up for the directory in force (a bcrypt or argon2 hash: as slow as
    /// one login).
    pub fn new(directory: &Arc<Directory>) -> DummyHash {
        let (profile, hash) = match most_common(directory) {
            Some((profile, like)) => (Some(profile), make_like(&like)),
            None => (None, None),
        };
        DummyHash {
            current: Mutex::new(Current {
                directory: Arc::downgrade(directory),
                profile,
                hash,
            }),
        }
    }

    /// The dummy for `directory`: the one in hand, or (after a reload changed the most common
    /// profile) a new one made on a blocking thread. `None` when no user has a password: then
    /// no login costs a slow hash, and none is needed to look alike.
    async fn for_directory(&self, directory: &Arc<Directory>) -> Option<PasswordHash> {
        let wanted = {
            let mut current = self.current.lock().unwrap_or_else(|e| e.into_inner());
            if Weak::ptr_eq(&current.directory, &Arc::downgrade(directory)) {
                return current.hash.clone();
            }
            let wanted = most_common(directory);
            if wanted.as_ref().map(|w| &w.0) == current.profile.as_ref() {
                current.directory = Arc::downgrade(directory);
                return current.hash.clone();
            }
            wanted
        };
        let (profile, like) = match wanted {
            Some((profile, like)) => (Some(profile), Some(like)),
            None => (None, None),
        };
        let hash = match like {
            Some(like) => tokio::task::spawn_blocking(move || make_like(&like))
                .await
                .ok()
                .flatten(),
            None => None,
        };
        let mut current = self.current.lock().unwrap_or_else(|e| e.into_inner());
        *current = Current {
            directory: Arc::downgrade(directory),
            profile,
            hash: hash.clone(),
        };
        hash
    }

    /// Spend one slow hash for nothing (the result is ignored).
    pub async fn spend(&self, directory: &Arc<Directory>) {
        if let Some(hash) = self.for_directory(directory).await {
            run(hash, String::from("portcullis dummy"), "dummy").await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_dummy_has_the_profile_of_the_hash_it_copies() {
        let bcrypt = PasswordHash::parse(&bcrypt::hash("x", 5).unwrap()).unwrap();
        let made = make_like(&bcrypt).unwrap();
        assert_eq!(profile(&made), profile(&bcrypt));
        assert_eq!(profile(&made).unwrap(), "bcrypt cost 05");
        assert!(!made.verify("x"));

        use argon2::password_hash::{PasswordHasher, SaltString};
        let params = argon2::Params::new(4096, 1, 1, Some(32)).unwrap();
        let argon =
            argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params)
                .hash_password(b"x", &SaltString::encode_b64(b"0123456789abcdef").unwrap())
                .unwrap()
                .to_string();
        let argon = PasswordHash::parse(&argon).unwrap();
        let made = make_like(&argon).unwrap();
        assert_eq!(profile(&made), profile(&argon));
        assert_ne!(made.as_str(), argon.as_str(), "another salt and password");
    }
}
