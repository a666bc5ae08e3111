//! The `Authorization: Basic ...` header of `/jwt/auth` (`BasicCredentials::parse`).
//!
//! Never panics; what parses has a username without a colon (possibly empty: a personal
//! access token works with any username, as in GitLab), prints no secret in its Debug form,
//! and parses again from its canonical encoding to the same credentials.
#![no_main]

use base64::Engine;
use libfuzzer_sys::fuzz_target;
use portcullis::auth::credentials::BasicCredentials;

fuzz_target!(|data: &[u8]| {
    let Ok(credentials) = BasicCredentials::parse(data) else {
        return;
    };
    assert!(!credentials.username.contains(':'));
    assert_eq!(
        format!("{credentials:?}"),
        format!(
            "BasicCredentials {{ username: {:?}, secret: \"<redacted>\" }}",
            credentials.username
        )
    );
    let encoded = base64::engine::general_purpose::STANDARD
        .encode(format!("{}:{}", credentials.username, credentials.secret));
    let again = BasicCredentials::parse(format!("Basic {encoded}").as_bytes())
        .expect("the canonical encoding parses");
    assert_eq!(again.username, credentials.username);
    assert_eq!(again.secret, credentials.secret);
});
