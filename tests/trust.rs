//! Does the registry trust the gateway's tokens? `portcullis check --upstream`, the start-up
//! probe, and the runtime diagnosis when the registry refuses a token the gateway verified.

use crate::support;

use std::time::Duration;

use support::gateway::secrets::*;
use support::gateway::{Gateway, GatewayFiles, GatewayOptions};
use support::http::get;
use support::stack::{RegistryAuth, Stack, StackOptions};

fn stack(auth: RegistryAuth) -> Stack {
    Stack::with(StackOptions {
        registry_auth: auth,
        ..StackOptions::default()
    })
}

#[test]
fn a_registry_that_trusts_the_gateway_passes() {
    let stack = stack(RegistryAuth::TrustsGateway);
    stack.gateway.assert_registry_trusts_its_tokens();
}

#[test]
fn another_issuer_or_certificate_is_named_at_check_start_up_and_run_time() {
    let stack = stack(RegistryAuth::WrongIssuer);
    let (code, out) = stack.gateway.check_upstream();
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
    let (code, out) = stack.gateway.check_upstream();
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("service mismatch") && out.contains("\"other_registry\""),
        "{out}"
    );
}

#[test]
fn no_auth_is_reported_and_an_unreachable_registry_fails_the_check() {
    let stack = stack(RegistryAuth::None);
    let (code, out) = stack.gateway.check_upstream();
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("no auth of its own"), "{out}");

    let nowhere = format!("http://127.0.0.1:{}", support::free_port());
    let gateway = Gateway::start(
        GatewayFiles::init("ec", &nowhere),
        &GatewayOptions::new(&nowhere),
    );
    let (code, out) = gateway.check_upstream();
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains(&format!(
            "upstream: the registry at {nowhere}/ is UNREACHABLE"
        )) && out.contains("fix: start it"),
        "{out}"
    );
    // Down is not distrust: the verdict does not send the operator to the token settings.
    assert!(
        out.contains("the registry is unreachable (see above)"),
        "{out}"
    );
    assert!(
        !out.contains("does not accept the gateway's tokens"),
        "{out}"
    );
}

#[test]
fn a_registry_trusting_another_certificate_is_named() {
    let stack = stack(RegistryAuth::OtherCertificate);
    let (code, out) = stack.gateway.check_upstream();
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("rootcertbundle must be the gateway's certificate"),
        "{out}"
    );
}

/// The gateway with its clock `minutes` ahead, through Debian's libfaketime (LD_PRELOAD). It
/// cannot slow down the registry: Go reads the clock through the vDSO, not libc. Moving the
/// gateway ahead makes the same skew (the registry minutes behind the gateway) with the
/// registry untouched. The library is preloaded into the gateway itself rather than through
/// the `faketime` wrapper, which forks: stopping the wrapper would leave the gateway running.
fn ahead(minutes: u32, args: &[&str]) -> std::process::Command {
    support::require_tool("faketime", "faketime");
    let library = std::fs::read_dir("/usr/lib")
        .unwrap()
        .filter_map(Result::ok)
        .map(|dir| dir.path().join("faketime/libfaketime.so.1"))
        .chain([std::path::PathBuf::from(
            "/usr/lib/faketime/libfaketime.so.1",
        )])
        .find(|path| path.exists())
        .expect("libfaketime.so.1 (Debian package faketime / libfaketime)");
    let mut command = std::process::Command::new(support::gateway::binary());
    command
        .args(args)
        .env("LD_PRELOAD", library)
        .env("FAKETIME", format!("+{minutes}m"))
        .env("FAKETIME_DONT_FAKE_MONOTONIC", "1");
    command
}

#[test]
fn a_registry_minutes_behind_is_named_with_the_skew_and_the_fix() {
    let stack = stack(RegistryAuth::TrustsGateway);
    let config = stack.gateway.config_path();
    // `check --upstream` with the gateway's clock 10 minutes ahead of the registry's.
    let out = support::process::run(
        ahead(
            10,
            &["check", "--config", config.to_str().unwrap(), "--upstream"],
        ),
        None,
    );
    assert_eq!(out.code, 1, "{}", out.combined());
    let text = out.combined();
    let line = text
        .lines()
        .find(|l| l.contains("clock skew"))
        .unwrap_or_else(|| panic!("no clock skew in:\n{text}"));
    // 600 s, give or take the seconds the probe takes.
    let seconds: u64 = line
        .split("the registry's clock is ")
        .nth(1)
        .and_then(|rest| rest.split('s').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no skew in {line:?}"));
    assert!((590..=610).contains(&seconds), "{line}");
    assert!(
        line.contains("behind the gateway's") && line.contains("synchronise both clocks (NTP)"),
        "{line}"
    );
    assert!(!text.contains("UNREACHABLE"), "{text}");

    // `serve` the same way: the start-up probe's WARN says the same.
    let port = support::free_port();
    let yaml = std::fs::read_to_string(&config).unwrap().replace(
        &format!("listen: \"{}\"", stack.gateway.host),
        &format!("listen: \"127.0.0.1:{port}\""),
    );
    let skewed = stack.gateway.files.path("skewed.yaml");
    std::fs::write(&skewed, yaml).unwrap();
    let log_path = stack.gateway.files.path("skewed.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let mut child = ahead(10, &["serve", "--config", skewed.to_str().unwrap()])
        .stdin(std::process::Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let mut text = String::new();
    while std::time::Instant::now() < deadline && !text.contains("clock skew") {
        std::thread::sleep(Duration::from_millis(100));
        text = std::fs::read_to_string(&log_path).unwrap_or_default();
    }
    support::process::stop_or_fail(
        &mut child,
        "portcullis serve under libfaketime",
        &[("TERM", Duration::from_secs(10))],
    );
    let warn = text
        .lines()
        .find(|l| l.contains("clock skew"))
        .unwrap_or_else(|| panic!("no clock skew WARN in:\n{text}"));
    assert!(warn.contains("WARN"), "{warn}");
    assert!(
        warn.contains("the registry's clock is")
            && warn.contains("behind the gateway's")
            && warn.contains("synchronise both clocks (NTP)"),
        "{warn}"
    );
}
