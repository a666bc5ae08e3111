//! Bearer tokens: arbitrary bytes verified as a registry token and as the gateway's own tokens
//! (CI job, refresh) with real keys (src/auth/token.rs). Never panics.
//!
//! The first byte picks what the rest is:
//! - `0`, and anything above `2`: the token itself, as the Authorization header's bytes (it
//!   must fail unless it is a real token: the corpus has real ones, signed with `fuzz/keys/`).
//! - `1` / `2`: `HEADER_JSON \n CLAIMS_JSON`, which this target signs with the current key
//!   (ES256) / the retired one (RS256), so the fuzzer reaches the claims checks behind the
//!   signature. Whatever verifies must carry the issuer, audience and time window the rules
//!   demand, under the algorithm of the key that verified it.
//!
//! `fuzz/keys/` holds throwaway keys made for this target only (`portcullis init`), never used
//! anywhere else: committing them is what makes the corpus's signed seeds stay valid.
#![no_main]

use std::path::Path;
use std::sync::OnceLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use libfuzzer_sys::fuzz_target;
use portcullis::auth::keys::{SigningKey, VerifyingKey};
use portcullis::auth::token::{Purpose, Tokens};
use portcullis::config::TokenSettings;

const ISSUER: &str = "portcullis";
const SERVICE: &str = "container_registry";

struct Fixture {
    tokens: Tokens,
    /// The retired key: it signs mode-2 inputs, and `tokens` still accepts its certificate.
    previous: SigningKey,
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let keys = Path::new(env!("CARGO_MANIFEST_DIR")).join("keys");
        let load = |name: &str| {
            SigningKey::load(
                &keys.join(format!("{name}.key")),
                &keys.join(format!("{name}.crt")),
            )
            .unwrap_or_else(|e| panic!("fuzz/keys/{name}: {e}"))
        };
        let settings = TokenSettings {
            issuer: ISSUER.into(),
            service: SERVICE.into(),
            expiry: Duration::from_secs(300),
            signing_key: keys.join("current.key"),
            certificate: keys.join("current.crt"),
            previous_certificates: vec![keys.join("previous.crt")],
            header: Default::default(),
            refresh_lifetime: Duration::from_secs(90 * 86_400),
        };
        let previous_public = VerifyingKey::load(&keys.join("previous.crt")).expect("previous.crt");
        Fixture {
            tokens: Tokens::new(&settings, load("current"), vec![previous_public]),
            previous: load("previous"),
        }
    })
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs()
}

/// `header.claims.signature` with `key`, whatever the header says its algorithm is.
fn sign(header: &[u8], claims: &[u8], key: &SigningKey) -> Option<String> {
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let message = format!("{}.{}", b64.encode(header), b64.encode(claims));
    let signature =
        jsonwebtoken::crypto::sign(message.as_bytes(), key.encoding_key(), key.public.algorithm)
            .ok()?;
    Some(format!("{message}.{signature}"))
}

fn check(token: &str) {
    let fixture = fixture();
    let tokens = &fixture.tokens;
    let registry = tokens.verify(token.as_bytes());
    let ignoring_expiry = tokens.verify_ignoring_expiry(token);
    if let Ok(claims) = &registry {
        let at = now();
        assert_eq!(claims.iss, ISSUER);
        assert_eq!(claims.aud, SERVICE);
        assert!(claims.nbf <= at + 1, "nbf {} in the future", claims.nbf);
        assert!(
            claims.exp.saturating_add(1) >= at,
            "exp {} in the past",
            claims.exp
        );
        assert_eq!(ignoring_expiry.as_ref(), Ok(&**claims));
        let header = jsonwebtoken::decode_header(token).expect("a verified token has a header");
        assert!(
            tokens.verifying_keys().any(|k| k.algorithm == header.alg),
            "verified under {:?}, which no key uses",
            header.alg
        );
    }
    if let Ok(claims) = &ignoring_expiry {
        assert_eq!(claims.iss, ISSUER);
        assert_eq!(claims.aud, SERVICE);
    }
    for purpose in [Purpose::CiJob, Purpose::Refresh] {
        if let Ok(claims) = tokens.verify_internal(purpose, token) {
            assert_eq!(claims.iss, ISSUER);
            assert_eq!(claims.aud, purpose.audience());
            assert!(
                claims.exp.saturating_add(1) >= now(),
                "exp {} in the past",
                claims.exp
            );
            assert!(
                registry.is_err(),
                "one token passed as a registry and a {purpose:?} token"
            );
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    match mode {
        1 | 2 => {
            let (header, claims) = match rest.iter().position(|&b| b == b'\n') {
                Some(at) => (&rest[..at], &rest[at + 1..]),
                None => (rest, &[][..]),
            };
            let fixture = fixture();
            let key = if mode == 1 {
                fixture.tokens.key()
            } else {
                &fixture.previous
            };
            if let Some(token) = sign(header, claims, key) {
                check(&token);
            }
        }
        // The registry token path takes the header's bytes as they came: bytes that are not
        // UTF-8 are never a token.
        _ => match std::str::from_utf8(rest) {
            Ok(token) => check(token),
            Err(_) => assert!(
                fixture().tokens.verify(rest).is_err(),
                "bytes that are not UTF-8 verified"
            ),
        },
    }
});
