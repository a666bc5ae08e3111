//! `portcullis doctor`: the client-side walk, against a healthy setup and each broken one; the
//! failing step it names is the one that is broken.

mod support;

use support::gateway::run_cli;
use support::gateway::secrets::*;
use support::gateway::GatewayOptions;
use support::nginx::Nginx;
use support::stack::{RegistryAuth, Stack, StackOptions};

fn doctor(url: &str, secret: &str, extra: &[&str]) -> (i32, String) {
    let mut args = vec!["doctor", url, "-u", "alice", "--password-stdin"];
    args.extend_from_slice(extra);
    let (code, out, err) = run_cli(&args, Some(secret));
    (code, format!("{out}{err}"))
}

fn failing_step(out: &str) -> String {
    out.lines()
        .find(|l| l.starts_with("FAIL"))
        .map(|l| l.split_whitespace().nth(1).unwrap_or("").to_owned())
        .unwrap_or_default()
}

#[test]
fn a_healthy_gateway_passes_every_step_including_an_upload() {
    let stack = Stack::start();
    let (code, out) = doctor(
        &stack.gateway.url,
        ALICE_PAT,
        &["--repository", "mygroup/myproject/doctor"],
    );
    assert_eq!(code, 0, "{out}");
    for step in [
        "dns",
        "tcp",
        "challenge",
        "realm",
        "token",
        "claims",
        "v2",
        "upload",
    ] {
        assert!(
            out.lines()
                .any(|l| l.starts_with("PASS") && l.split_whitespace().nth(1) == Some(step)),
            "{step} did not pass:\n{out}"
        );
    }
    let (code, out) = doctor(&stack.gateway.url, ALICE_PAT, &["--json"]);
    assert_eq!(code, 0, "{out}");
    let steps: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert!(steps.as_array().unwrap().iter().all(|s| s["ok"] == true));
}

#[test]
fn each_broken_setup_fails_at_its_own_step() {
    // Wrong secret: the token step.
    let stack = Stack::start();
    let (code, out) = doctor(&stack.gateway.url, "wrong", &[]);
    assert_eq!((code, failing_step(&out).as_str()), (1, "token"), "{out}");
    assert!(out.contains("401"), "{out}");

    // A proxy stripping Authorization: the token step, naming the cause.
    let port = support::free_port();
    let behind = Stack::with(StackOptions {
        gateway: GatewayOptions {
            public_url: Some(format!("http://127.0.0.1:{port}")),
            ..GatewayOptions::new("")
        },
        ..StackOptions::default()
    });
    let nginx = Nginx::start(
        port,
        &behind.gateway.host,
        "    location / { proxy_pass http://{upstream}; proxy_set_header Authorization \"\"; }",
    );
    let (code, out) = doctor(&format!("http://{}", nginx.host()), ALICE_PAT, &[]);
    assert_eq!((code, failing_step(&out).as_str()), (1, "token"), "{out}");
    assert!(out.contains("removes the Authorization header"), "{out}");

    // A registry that does not trust the gateway: the v2 step.
    let distrusted = Stack::with(StackOptions {
        registry_auth: RegistryAuth::WrongIssuer,
        ..StackOptions::default()
    });
    let (code, out) = doctor(&distrusted.gateway.url, ALICE_PAT, &[]);
    assert_eq!((code, failing_step(&out).as_str()), (1, "v2"), "{out}");

    // The bare registry, whose realm names an unreachable host: the realm step.
    let (code, out) = doctor(&stack.registry.url(), ALICE_PAT, &[]);
    assert_eq!((code, failing_step(&out).as_str()), (1, "realm"), "{out}");

    // Nothing listening: the tcp step.
    let (code, out) = doctor(
        &format!("http://127.0.0.1:{}", support::free_port()),
        ALICE_PAT,
        &[],
    );
    assert_eq!((code, failing_step(&out).as_str()), (1, "tcp"), "{out}");
}
