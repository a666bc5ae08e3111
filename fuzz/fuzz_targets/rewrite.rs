//! The registry's `WWW-Authenticate` challenge and `Location` headers, rewritten on the way to
//! the client (src/proxy/rewrite.rs).
//!
//! Never panics. A rewritten challenge names the gateway's realm first and rewriting it again
//! changes nothing; a rewritten Location points at the public origin's `/v2/` and is not
//! rewritten again.
#![no_main]

use http::HeaderValue;
use libfuzzer_sys::fuzz_target;
use portcullis::proxy::rewrite::{rewrite_challenge, rewrite_location};

const ORIGINS: [&str; 3] = [
    "https://registry.example.com:4567",
    "http://127.0.0.1:8080",
    "https://gw.example",
];

fuzz_target!(|data: &[u8]| {
    let Some((&which, header)) = data.split_first() else {
        return;
    };
    let Ok(value) = HeaderValue::from_bytes(header) else {
        return;
    };
    let origin = ORIGINS[usize::from(which) % ORIGINS.len()];
    let realm = format!("{origin}/jwt/auth");

    if let Some(out) = rewrite_challenge(&value, &realm) {
        let text = out
            .to_str()
            .expect("a rewritten challenge is visible ASCII");
        assert!(
            text.starts_with(&format!("Bearer realm=\"{realm}\"")),
            "{value:?} became {text:?}"
        );
        let twice = rewrite_challenge(&out, &realm).expect("a rewritten challenge has a realm");
        assert_eq!(twice, out, "rewriting {value:?} twice differs");
    }

    if let Some(out) = rewrite_location(&value, origin) {
        let text = out.to_str().expect("a rewritten Location is visible ASCII");
        assert!(
            text.starts_with(&format!("{origin}/v2/")),
            "{value:?} became {text:?}"
        );
        assert_eq!(
            rewrite_location(&out, origin),
            None,
            "{text:?} rewritten again"
        );
    }
});
