//! The docker CLI and daemon exactly as the GitLab registry doc uses them:
//! `docker login HOST -u USER --password-stdin`, `docker push`, `docker rmi`, `docker pull`.

use crate::support;

use support::process::ImageCli;

use support::docker::Dockerd;
use support::gateway::secrets::*;
use support::stack::Stack;

#[test]
fn docker_logs_in_with_a_personal_access_token_pushes_and_pulls() {
    let stack = Stack::start();
    let docker = Dockerd::start();
    let host = stack.gateway.host.as_str();

    let (ok, out) = docker.run(
        &["login", host, "-u", "alice", "--password-stdin"],
        Some("not-the-token"),
    );
    assert!(!ok, "a wrong token must not log in: {out}");
    let out = docker.ok(
        &["login", host, "-u", "alice", "--password-stdin"],
        Some(ALICE_PAT),
    );
    assert!(out.contains("Login Succeeded"), "{out}");

    let remote = format!("{host}/mygroup/myproject/app:1.0");
    docker.push_then_pull_back(&remote);

    // A reporter can pull but not push.
    docker.ok(
        &["login", host, "-u", "bob", "--password-stdin"],
        Some(BOB_PAT),
    );
    let (ok, out) = docker.run(&["push", &remote], None);
    assert!(!ok, "a reporter pushed: {out}");
    assert!(
        out.contains("denied") || out.contains("unauthorized"),
        "{out}"
    );
    docker.ok(&["rmi", &remote], None);
    docker.ok(&["pull", &remote], None);
}
