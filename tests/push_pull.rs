//! Real clients pushing and pulling through the gateway, with the registry trusting only the
//! gateway's tokens and its own realm pointing nowhere.

use crate::support;

use support::process::ImageCli;

use support::gateway::secrets::*;
use support::oci::{skopeo, skopeo_result, OciImage};
use support::podman::Podman;
use support::stack::{Stack, StackOptions};

fn round_trip_with_skopeo(stack: &Stack, size: usize) {
    let dir = tempfile::tempdir().unwrap();
    let image = OciImage::create(dir.path().join("image"), size);
    let repository = "mygroup/myproject/app";
    let (pushed, out) = image.push_to(&stack.gateway.host, repository, "alice", ALICE_PAT);
    assert!(pushed, "skopeo push failed:\n{out}");
    let target = format!("docker://{}/{repository}:v1", stack.gateway.host);
    let creds = format!("alice:{ALICE_PAT}");
    let pulled = dir.path().join("pulled");
    skopeo(&[
        "copy",
        "--src-tls-verify=false",
        "--src-creds",
        &creds,
        &target,
        &format!("oci:{}:v1", pulled.display()),
    ]);
    image.assert_layer_identical(&pulled);
}

#[test]
fn skopeo_copies_an_image_through_the_gateway_byte_for_byte() {
    let stack = Stack::start();
    // 24 MiB: several chunks on every hop, streamed, never held whole.
    round_trip_with_skopeo(&stack, 24 << 20);
    let log = stack.gateway.log();
    assert!(
        log.contains("method=PUT path=/v2/mygroup/myproject/app/manifests/v1")
            && log.contains("status=201"),
        "{log}"
    );
}

#[test]
fn an_rsa_signing_key_works_end_to_end() {
    let stack = Stack::with(StackOptions {
        key_type: "rsa",
        ..StackOptions::default()
    });
    let token = stack.token("alice", ALICE_PAT, &["repository:mygroup/myproject:pull"]);
    assert_eq!(support::http::jwt_part(&token, 0)["alg"], "RS256");
    round_trip_with_skopeo(&stack, 1 << 20);
}

#[test]
fn refused_pushes_and_pulls_fail_with_the_registrys_words() {
    let stack = Stack::start();
    let dir = tempfile::tempdir().unwrap();
    let image = OciImage::create(dir.path().join("image"), 64 * 1024);
    let push = |user: &str, secret: &str, repository: &str| {
        image.push_to(&stack.gateway.host, repository, user, secret)
    };
    for (user, secret, repository, why) in [
        (
            "bob",
            BOB_PAT,
            "mygroup/myproject/app",
            "a reporter may not push",
        ),
        (
            "alice",
            ALICE_READ_ONLY_PAT,
            "mygroup/myproject/app",
            "a read_registry token may not push",
        ),
        (
            "alice",
            ALICE_PAT,
            "other/app",
            "no project owns the repository",
        ),
    ] {
        let (ok, out) = push(user, secret, repository);
        assert!(!ok, "{why}, but the push succeeded:\n{out}");
        // containers/image words a refused HEAD (no body) "requested access to the resource
        // is denied", a refused request with a body "authentication required".
        assert!(
            out.contains("authentication required")
                || out.contains("requested access to the resource is denied"),
            "{why}: {out}"
        );
    }
    let (ok, out) = push("alice", ALICE_EXPIRED_PAT, "mygroup/myproject/app");
    assert!(!ok && out.contains("expired"), "an expired token: {out}");
    // Anonymous pull of a private project is refused; the root pushes to the public project
    // and an anonymous pull of it works.
    let (ok, _) = push("root", ROOT_PAT, "public/app");
    assert!(ok);
    let pulled = dir.path().join("pulled");
    skopeo(&[
        "copy",
        "--src-tls-verify=false",
        "--src-no-creds",
        &format!("docker://{}/public/app:v1", stack.gateway.host),
        &format!("oci:{}:v1", pulled.display()),
    ]);
    image.assert_layer_identical(&pulled);
    let (ok, out) = skopeo_result(
        &[
            "inspect",
            "--tls-verify=false",
            "--no-creds",
            &format!("docker://{}/mygroup/myproject/app:v1", stack.gateway.host),
        ],
        None,
    );
    assert!(!ok, "anonymous pull of a private project: {out}");
}

#[test]
fn podman_logs_in_pushes_and_pulls() {
    let stack = Stack::start();
    let podman = Podman::new();
    let host = stack.gateway.host.as_str();
    let out = podman.ok(
        &[
            "login",
            "--tls-verify=false",
            "-u",
            "alice",
            "--password-stdin",
            host,
        ],
        Some(ALICE_PAT),
    );
    assert!(out.contains("Login Succeeded"), "{out}");
    let (ok, out) = podman.run(
        &[
            "login",
            "--tls-verify=false",
            "-u",
            "alice",
            "--password-stdin",
            host,
        ],
        Some("wrong"),
    );
    assert!(!ok && out.contains("invalid username/password"), "{out}");

    podman.import_image("localhost/demo:v1");
    let remote = format!("{host}/mygroup/myproject/demo:v1");
    podman.ok(&["tag", "localhost/demo:v1", &remote], None);
    podman.ok(&["push", "--tls-verify=false", &remote], None);
    let id = podman.image_id(&remote);
    podman.ok(&["rmi", "-f", &remote, "localhost/demo:v1"], None);
    podman.ok(&["pull", "--tls-verify=false", &remote], None);
    assert_eq!(
        podman.image_id(&remote),
        id,
        "the pulled image is the pushed one"
    );
    // The registry was only ever reached through the gateway with the gateway's tokens.
    assert!(stack.gateway.log().contains("user=\"alice\""));
}

#[test]
fn only_maintainers_and_administrators_may_delete() {
    let stack = Stack::start();
    round_trip_with_skopeo(&stack, 64 * 1024);
    let manifest_url = format!(
        "{}/v2/mygroup/myproject/app/manifests/v1",
        stack.gateway.url
    );
    let accept = "application/vnd.oci.image.manifest.v1+json";
    let pull = stack.token(
        "alice",
        ALICE_PAT,
        &["repository:mygroup/myproject/app:pull"],
    );
    let reply = support::http::request("HEAD", &manifest_url)
        .bearer(&pull)
        .header("Accept", accept)
        .arg("-I")
        .send();
    let digest = reply
        .header("docker-content-digest")
        .expect("the manifest has a digest")
        .to_owned();
    let by_digest = format!(
        "{}/v2/mygroup/myproject/app/manifests/{digest}",
        stack.gateway.url
    );

    // alice is a developer: her token is down-scoped to nothing for delete.
    let alice = stack.token(
        "alice",
        ALICE_PAT,
        &["repository:mygroup/myproject/app:delete"],
    );
    assert!(Stack::granted(&alice).is_empty());
    let reply = support::http::request("DELETE", &by_digest)
        .bearer(&alice)
        .send();
    assert_eq!(reply.status, 401);
    assert!(reply
        .header("www-authenticate")
        .unwrap()
        .contains(r#"error="insufficient_scope""#));

    // GitLab CRAS#user_can_admin?: delete needs admin_container_image, which an `api` token
    // has and a read_registry + write_registry one (root's) does not. carol maintains the
    // group with an `api` token.
    let root = stack.token(
        "root",
        ROOT_PAT,
        &["repository:mygroup/myproject/app:delete"],
    );
    assert!(Stack::granted(&root).is_empty());
    let carol = stack.token(
        "carol",
        support::gateway::secrets::CAROL_API_PAT,
        &["repository:mygroup/myproject/app:delete"],
    );
    let reply = support::http::request("DELETE", &by_digest)
        .bearer(&carol)
        .send();
    assert_eq!(reply.status, 202, "{}", reply.body);
    let reply = support::http::get(&manifest_url)
        .bearer(&pull)
        .header("Accept", accept)
        .send();
    assert_eq!(
        (reply.status, reply.error_code().as_str()),
        (404, "MANIFEST_UNKNOWN")
    );
}
