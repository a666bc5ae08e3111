//! The PROXY protocol v2 header a balancer sends before TLS and HTTP (`proxy_protocol::parse`).
//!
//! Never panics; what parses took at least the 16 fixed bytes and at most the payload bound,
//! parses again from exactly those bytes to the same header (the bytes after it are not
//! looked at), and every shorter prefix of it is `Truncated` (the streaming reader relies on
//! that: it refuses on the first wrong byte and waits only for a header that can still be
//! valid).
#![no_main]

use libfuzzer_sys::fuzz_target;
use portcullis::server::proxy_protocol::{parse, ProxyError, FIXED_LEN, MAX_PAYLOAD};

fuzz_target!(|data: &[u8]| {
    let Ok((header, used)) = parse(data) else {
        return;
    };
    assert!((FIXED_LEN..=FIXED_LEN + MAX_PAYLOAD).contains(&used));
    assert!(used <= data.len());
    assert_eq!(parse(&data[..used]), Ok((header, used)));
    for cut in [0, 1, 11, 12, 15, FIXED_LEN, used - 1] {
        if cut < used {
            assert_eq!(
                parse(&data[..cut]),
                Err(ProxyError::Truncated),
                "prefix of {cut} bytes"
            );
        }
    }
});
