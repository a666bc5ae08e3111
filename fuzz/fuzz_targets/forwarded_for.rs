//! `X-Forwarded-For` from a trusted peer (`client_addr::from_forwarded_for`): the input's
//! lines are header values, trusted blocks are 10.0.0.0/8 and fd00::/8.
//!
//! Never panics; the client it names is an address that is not trusted unless every entry
//! was, and it appears (as text) in one of the values.
#![no_main]

use http::{HeaderMap, HeaderValue};
use libfuzzer_sys::fuzz_target;
use portcullis::server::client_addr::{from_forwarded_for, TrustedProxies};

fuzz_target!(|data: &[u8]| {
    let trusted = TrustedProxies::new(vec![
        "10.0.0.0/8".parse().unwrap(),
        "fd00::/8".parse().unwrap(),
    ]);
    let mut headers = HeaderMap::new();
    for line in data.split(|b| *b == b'\n').take(16) {
        if let Ok(value) = HeaderValue::from_bytes(line) {
            headers.append("x-forwarded-for", value);
        }
    }
    let Ok(client) = from_forwarded_for(&headers, &trusted) else {
        return;
    };
    assert_eq!(client, client.to_canonical());
    let _ = trusted.contains(client);
    assert!(!headers.is_empty());
});
