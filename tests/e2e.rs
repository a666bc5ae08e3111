//! The end-to-end tests, one test binary: every `tests/*.rs` is a module of this crate.
//!
//! One binary, not one per file: with the release profile's fat LTO each test binary costs a
//! whole-program link, and one binary lets the harness run tests of every file side by side
//! instead of file after file. `autotests = false` in Cargo.toml makes this the only
//! integration target, so [`every_test_file_is_a_module`] fails when a new file is not listed
//! here (it would never run).
//!
//! One file: `cargo test --release --test e2e -- brute_force::`.

mod support;

mod brute_force;
mod ci_jobs;
mod cli;
mod client_address;
mod credentials;
mod docker;
mod doctor;
mod examples;
mod federation;
mod gate_requests;
mod gitlab_rules;
mod ldap;
mod limits;
mod logging;
mod messages;
mod oauth;
mod operations;
mod protection;
mod proxy;
mod push_grace;
mod push_pull;
mod reload;
mod replicas;
mod signals;
mod stripped_authorization;
mod teardown;
mod tls;
mod token_api;
mod token_endpoint;
mod token_header;
mod token_page;
mod token_page_browser;
mod trust;
mod upstream_pool;

/// The modules above, as `mod` lines say them.
const MODULES: &str = include_str!("e2e.rs");

#[test]
fn every_test_file_is_a_module() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests");
    let mut missing = Vec::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let name = entry.unwrap().file_name().into_string().unwrap();
        let Some(module) = name.strip_suffix(".rs") else {
            continue;
        };
        if module != "e2e" && !MODULES.lines().any(|l| l == format!("mod {module};")) {
            missing.push(name);
        }
    }
    assert!(
        missing.is_empty(),
        "tests/{missing:?} never run: add `mod NAME;` to tests/e2e.rs"
    );
}
