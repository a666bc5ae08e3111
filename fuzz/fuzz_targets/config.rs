//! `gateway.yaml`: arbitrary text parsed, `${VAR}`-expanded and validated as the gateway does
//! at start and on reload (`Config::from_yaml`). Never panics: every bad file is a list of
//! problems, each naming its key. And the fast path (the text read straight into the file's
//! structs) never reads a file otherwise than the `Value` tree path does, nor does the read in
//! pieces on several cores (a large file's lists cut at item boundaries) read it otherwise than
//! the single direct read.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use portcullis::config::Config;

/// A fixed environment, so `${VAR}` expansion takes both paths and runs are reproducible.
fn lookup(name: &str) -> Option<String> {
    match name {
        "HOME" => Some("/home/portcullis".into()),
        "UPSTREAM" => Some("http://127.0.0.1:5000".into()),
        "KEY_FILE" => Some("token.key".into()),
        "EMPTY" => Some(String::new()),
        _ => None,
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Err(difference) = portcullis::config::direct_read_agrees_with_tree(text) {
        panic!("the direct path and the tree path disagree: {difference}");
    }
    if let Err(difference) = portcullis::config::split_read_agrees_with_single(text) {
        panic!("the read in pieces and the single read disagree: {difference}");
    }
    match Config::from_yaml(text, Path::new("/etc/portcullis/gateway.yaml"), &lookup) {
        Ok(config) => {
            let _ = config.public_url.realm();
        }
        Err(error) => {
            assert!(!error.problems().is_empty(), "an error without a problem");
            let _ = error.to_string();
        }
    }
});
