//! Does the registry trust the gateway's tokens? `portcullis check --upstream`, the start-up
//! probe, and the runtime diagnosis when the registry refuses a token the gateway verified.

mod support;

use std::time::Duration;

use support::gateway::run_cli;
use support::gateway::secrets::*;
use support::gateway::{Gateway, GatewayFiles, GatewayOptions};
use support::http::get;
use support::stack::{RegistryAuth, Stack, StackOptions};

fn check_upstream(gateway: &Gateway) -> (i32, String) {
    let config = gateway.config_path();
    let (code, out, err) = run_cli(
        &["check", "--config", config.to_str().unwrap(), "--upstream"],
        None,
    );
    (code, format!("{out}{err}"))
}

fn stack(auth: RegistryAuth) -> Stack {
    Stack::with(StackOptions {
        registry_auth: auth,
        ..StackOptions::default()
    })
}

#[test]
fn a_registry_that_trusts_the_gateway_passes() {
    let stack = stack(RegistryAuth::TrustsGateway);
    let (code, out) = check_upstream(&stack.gateway);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("the registry accepts the gateway's tokens"),
        "{out}"
    );
    stack.gateway.wait_for_log(
        "the registry accepts the gateway's tokens",
        1,
        Duration::from_secs(10),
    );
}

#[test]
fn another_issuer_or_certificate_is_named_at_check_start_up_and_run_time() {
    let stack = stack(RegistryAuth::WrongIssuer);
    let (code, out) = check_upstream(&stack.gateway);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("REFUSES")
            && out.contains("rootcertbundle")
            && out.contains("issuer must be \"portcullis\""),
        "{out}"
    );
    stack.gateway.wait_for_log(
        "the registry refuses tokens the gateway considers valid",
        1,
        Duration::from_secs(10),
    );
    assert!(stack.gateway.log().contains("trigger=\"start-up\""));

    // At run time: the registry refuses a token the gateway verified; the diagnosis runs again.
    let token = stack.token("alice", ALICE_PAT, &["repository:mygroup/myproject:pull"]);
    assert_eq!(
        get(&format!(
            "{}/v2/mygroup/myproject/tags/list",
            stack.gateway.url
        ))
        .bearer(&token)
        .send()
        .status,
        401
    );
    stack.gateway.wait_for_log(
        "the registry refuses tokens the gateway considers valid",
        2,
        Duration::from_secs(10),
    );
    assert!(stack
        .gateway
        .log()
        .contains("trigger=\"the registry refused a token the gateway had verified\""));
}

#[test]
fn a_service_mismatch_is_named_from_the_registrys_challenge() {
    let stack = stack(RegistryAuth::WrongService);
    let (code, out) = check_upstream(&stack.gateway);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("service mismatch") && out.contains("\"other_registry\""),
        "{out}"
    );
}

#[test]
fn no_auth_is_reported_and_an_unreachable_registry_fails_the_check() {
    let stack = stack(RegistryAuth::None);
    let (code, out) = check_upstream(&stack.gateway);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("no auth of its own"), "{out}");

    let nowhere = format!("http://127.0.0.1:{}", support::free_port());
    let gateway = Gateway::start(
        GatewayFiles::init("ec", &nowhere),
        &GatewayOptions::new(&nowhere),
    );
    let (code, out) = check_upstream(&gateway);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("could not ask the registry"), "{out}");
}

#[test]
fn a_registry_trusting_another_certificate_is_named() {
    let stack = stack(RegistryAuth::OtherCertificate);
    let (code, out) = check_upstream(&stack.gateway);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("rootcertbundle must be the gateway's certificate"),
        "{out}"
    );
}
