//! Request classification (`src/proxy/access/`): the gate's one reading of a `/v2/` request.
//!
//! Input: the first byte picks the method, the rest up to the first newline is the request
//! target, the rest a Content-Type. Besides "never panics", the reading must be a fixed
//! point: the target the gateway forwards, read again, needs exactly the same scopes and has
//! nothing left to decode, so what the registry receives is what was checked.

#![no_main]

use http::{HeaderMap, HeaderValue, Method, Uri};
use libfuzzer_sys::fuzz_target;
use portcullis::proxy::access::classify;

const METHODS: [Method; 8] = [
    Method::GET,
    Method::HEAD,
    Method::PUT,
    Method::POST,
    Method::PATCH,
    Method::DELETE,
    Method::OPTIONS,
    Method::CONNECT,
];

fuzz_target!(|data: &[u8]| {
    let Some((&first, rest)) = data.split_first() else {
        return;
    };
    let method = &METHODS[usize::from(first) % METHODS.len()];
    let (target, content_type) = match rest.iter().position(|&b| b == b'\n') {
        Some(at) => (&rest[..at], Some(&rest[at + 1..])),
        None => (rest, None),
    };
    let Ok(uri) = Uri::try_from(target) else {
        return;
    };
    let mut headers = HeaderMap::new();
    if let Some(value) = content_type.and_then(|v| HeaderValue::from_bytes(v).ok()) {
        headers.insert(http::header::CONTENT_TYPE, value);
    }
    let Ok(need) = classify(method, &uri, &headers) else {
        return;
    };
    let forwarded = need.target.as_str();
    assert!(forwarded.starts_with("/v2/"), "{forwarded}");
    assert!(!need.target.path().contains('%'), "{forwarded}");
    let again = classify(method, &Uri::try_from(forwarded).unwrap(), &headers)
        .expect("the forwarded target is accepted");
    assert_eq!(again.scopes, need.scopes, "{forwarded}");
    assert_eq!(again.target, need.target);
    assert_eq!(again.route, need.route);
});
