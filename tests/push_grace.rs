//! A token that expires in the middle of a push: named in the log when refused, and (push
//! grace) extended when the credential behind it is still good. The upload is driven chunk by
//! chunk as clients do (POST, PATCH, PATCH, PUT ?digest=, manifest PUT) against the real
//! registry, with a 2 s token lifetime and the token expiring between two PATCHes.

use crate::support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use support::gateway::secrets::*;
use support::gateway::{sha256_hex, GatewayOptions};
use support::http::{get, request, Reply};
use support::process;
use support::stack::{RegistryAuth, Stack, StackOptions};

const REPO: &str = "mygroup/myproject/big";
const CHUNK: usize = 1 << 20;

fn stack(push_grace: &str) -> Stack {
    stack_behind(push_grace, RegistryAuth::TrustsGateway)
}

fn stack_behind(push_grace: &str, registry_auth: RegistryAuth) -> Stack {
    Stack::with(StackOptions {
        gateway: GatewayOptions {
            expiry: "2s".into(),
            extra: push_grace.into(),
            ..GatewayOptions::new("")
        },
        registry_auth,
        ..StackOptions::default()
    })
}

fn chunk(dir: &Path, name: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, process::random_bytes(CHUNK)).unwrap();
    path
}

fn sha256_of(files: &[&Path]) -> String {
    let mut command = std::process::Command::new("sh");
    let names: Vec<String> = files.iter().map(|f| format!("'{}'", f.display())).collect();
    command
        .arg("-c")
        .arg(format!("cat {} | sha256sum", names.join(" ")));
    process::run(command, None)
        .stdout
        .split_whitespace()
        .next()
        .unwrap()
        .to_owned()
}

fn start(stack: &Stack, token: &str) -> Reply {
    request(
        "POST",
        &format!("{}/v2/{REPO}/blobs/uploads/", stack.gateway.url),
    )
    .bearer(token)
    .send()
}

fn patch(location: &str, token: &str, data: &Path) -> Reply {
    request("PATCH", location)
        .bearer(token)
        .header("Content-Type", "application/octet-stream")
        .arg("--data-binary")
        .arg(&format!("@{}", data.display()))
        .send()
}

fn with_query(location: &str, extra: &str) -> String {
    let sep = if location.contains('?') { '&' } else { '?' };
    format!("{location}{sep}{extra}")
}

/// POST and a first PATCH with a fresh token, then wait until that token has expired.
fn upload_first_chunk_then_expire(stack: &Stack, dir: &Path) -> (String, String, PathBuf) {
    let token = stack.token(
        "alice",
        ALICE_PAT,
        &[&format!("repository:{REPO}:pull,push")],
    );
    let reply = start(stack, &token);
    assert_eq!(reply.status, 202, "{}", reply.body);
    let first = chunk(dir, "first");
    let reply = patch(reply.header("location").unwrap(), &token, &first);
    assert_eq!(reply.status, 202, "{}", reply.body);
    std::thread::sleep(Duration::from_millis(3200));
    (token, reply.header("location").unwrap().to_owned(), first)
}

#[test]
fn without_grace_the_expired_token_is_refused_and_the_log_says_why() {
    let stack = stack("push_grace: { enabled: false }\n");
    let dir = tempfile::tempdir().unwrap();
    let (token, location, _) = upload_first_chunk_then_expire(&stack, dir.path());
    let reply = patch(&location, &token, &chunk(dir.path(), "second"));
    assert_eq!(reply.status, 401, "{}", reply.body);
    assert!(reply
        .header("www-authenticate")
        .unwrap()
        .contains(r#"error="invalid_token""#));
    assert_eq!(reply.error_message(), "authentication required");
    let uuid = location
        .split("/blobs/uploads/")
        .nth(1)
        .unwrap()
        .split('?')
        .next()
        .unwrap();
    let log = stack.gateway.log();
    let line = log
        .lines()
        .find(|l| l.contains("token expired in the middle of a push"))
        .unwrap_or_else(|| panic!("no WARN line:\n{log}"));
    for expected in [
        "WARN",
        uuid,
        "repository=\"mygroup/myproject/big\"",
        "bytes_so_far=1048576",
        "token_lifetime_s=2",
        "push_grace is disabled",
        "raise token.expiry",
    ] {
        assert!(line.contains(expected), "{expected:?} not in {line}");
    }
}

#[test]
fn with_grace_the_push_completes_and_the_blob_and_manifest_land_whole() {
    let stack = stack("");
    let dir = tempfile::tempdir().unwrap();
    let (token, location, first) = upload_first_chunk_then_expire(&stack, dir.path());
    let second = chunk(dir.path(), "second");
    let reply = patch(&location, &token, &second);
    assert_eq!(reply.status, 202, "{}", reply.body);
    let digest = format!("sha256:{}", sha256_of(&[&first, &second]));
    let reply = request(
        "PUT",
        &with_query(
            reply.header("location").unwrap(),
            &format!("digest={digest}"),
        ),
    )
    .bearer(&token)
    .send();
    assert_eq!(reply.status, 201, "{}", reply.body);
    // The manifest PUT that finishes the push is covered too.
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": { "mediaType": "application/vnd.oci.image.config.v1+json", "digest": digest, "size": 2 * CHUNK },
        "layers": [{ "mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": digest, "size": 2 * CHUNK }],
    })
    .to_string();
    let reply = request(
        "PUT",
        &format!("{}/v2/{REPO}/manifests/v1", stack.gateway.url),
    )
    .bearer(&token)
    .header("Content-Type", "application/vnd.oci.image.manifest.v1+json")
    .body(&manifest)
    .send();
    assert_eq!(reply.status, 201, "{}", reply.body);
    assert_eq!(
        stack
            .gateway
            .log()
            .matches("push grace: the token expired during the push")
            .count(),
        3,
        "{}",
        stack.gateway.log()
    );

    // What landed is whole.
    let fresh = stack.token("alice", ALICE_PAT, &[&format!("repository:{REPO}:pull")]);
    let pulled = dir.path().join("pulled");
    let reply = get(&format!("{}/v2/{REPO}/blobs/{digest}", stack.gateway.url))
        .bearer(&fresh)
        .arg("-L")
        .arg("-o")
        .arg(pulled.to_str().unwrap())
        .send();
    assert_eq!(reply.status, 200);
    assert_eq!(
        format!("sha256:{}", sha256_of(&[&pulled])),
        digest,
        "the blob reads back whole"
    );

    // The expired token can NOT start a new upload, nor touch another repository.
    assert_eq!(start(&stack, &token).status, 401);
    let elsewhere = location.replace("/mygroup/myproject/big/", "/mygroup/myproject/other/");
    assert_eq!(patch(&elsewhere, &token, &second).status, 401);
}

#[test]
fn grace_ends_at_max_session_and_with_the_credential() {
    // Past max_session.
    let stack_short = stack("push_grace: { max_session: 1s }\n");
    let dir = tempfile::tempdir().unwrap();
    let (token, location, _) = upload_first_chunk_then_expire(&stack_short, dir.path());
    assert_eq!(
        patch(&location, &token, &chunk(dir.path(), "second")).status,
        401
    );
    assert!(stack_short
        .gateway
        .log()
        .contains("older than push_grace.max_session"));

    // The token behind the push was revoked in the meantime.
    let stack = stack("");
    let token = stack.token(
        "alice",
        ALICE_PAT,
        &[&format!("repository:{REPO}:pull,push")],
    );
    let reply = start(&stack, &token);
    let reply = patch(
        reply.header("location").unwrap(),
        &token,
        &chunk(dir.path(), "a"),
    );
    let location = reply.header("location").unwrap().to_owned();
    let path = stack.gateway.config_path();
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(
        &path,
        text.replacen("{ name: laptop,", "{ name: laptop, revoked: true,", 1),
    )
    .unwrap();
    stack.gateway.signal("HUP");
    stack
        .gateway
        .wait_for_log("configuration reloaded", 1, Duration::from_secs(10));
    // exp has whole-second resolution: a 2 s token works until the second after exp ends.
    std::thread::sleep(Duration::from_millis(3200));
    let reply = patch(&location, &token, &chunk(dir.path(), "b"));
    assert_eq!(reply.status, 401, "{}", stack.gateway.log());
    assert!(
        stack
            .gateway
            .log()
            .contains("no longer valid or no longer allowed to push there"),
        "{}",
        stack.gateway.log()
    );
}

fn manifest_of(digest: &str, size: usize) -> String {
    serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": { "mediaType": "application/vnd.oci.image.config.v1+json", "digest": digest, "size": size },
        "layers": [{ "mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": digest, "size": size }],
    })
    .to_string()
}

fn put_manifest(stack: &Stack, token: &str, tag: &str, manifest: &str) -> Reply {
    request(
        "PUT",
        &format!("{}/v2/{REPO}/manifests/{tag}", stack.gateway.url),
    )
    .bearer(token)
    .header("Content-Type", "application/vnd.oci.image.manifest.v1+json")
    .body(manifest)
    .send()
}

#[test]
fn an_expired_token_is_not_revived_by_another_token_s_push() {
    for auth in [RegistryAuth::TrustsGateway, RegistryAuth::None] {
        let stack = stack_behind("", auth);
        let dir = tempfile::tempdir().unwrap();
        let scope = format!("repository:{REPO}:pull,push");
        // An old token of alice's, never used for a push, expires.
        let old = stack.token("alice", ALICE_PAT, &[&scope]);
        std::thread::sleep(Duration::from_millis(3200));

        // alice pushes a blob with a new token.
        let fresh = stack.token("alice", ALICE_PAT, &[&scope]);
        let reply = start(&stack, &fresh);
        assert_eq!(reply.status, 202, "{}", reply.body);
        let location = reply.header("location").unwrap().to_owned();
        let data = chunk(dir.path(), "data");
        // The old token can not continue the new token's upload...
        let reply = patch(&location, &old, &data);
        assert_eq!(reply.status, 401, "{}", reply.body);
        let reply = patch(&location, &fresh, &data);
        assert_eq!(reply.status, 202, "{}", reply.body);
        let digest = format!("sha256:{}", sha256_of(&[&data]));
        let reply = request(
            "PUT",
            &with_query(
                reply.header("location").unwrap(),
                &format!("digest={digest}"),
            ),
        )
        .bearer(&fresh)
        .send();
        assert_eq!(reply.status, 201, "{}", reply.body);

        // ...nor finish it with a manifest, though the registry would take that manifest.
        let manifest = manifest_of(&digest, CHUNK);
        let reply = put_manifest(&stack, &old, "old", &manifest);
        assert_eq!(reply.status, 401, "{}", reply.body);
        assert_eq!(reply.error_message(), "authentication required");
        assert!(reply
            .header("www-authenticate")
            .unwrap()
            .contains(r#"error="invalid_token""#));
        assert!(!stack
            .gateway
            .log()
            .contains("push grace: the token expired during the push"));

        // The token whose push it is still gets its grace once it expires.
        std::thread::sleep(Duration::from_millis(3200));
        let reply = put_manifest(&stack, &fresh, "fresh", &manifest);
        assert_eq!(reply.status, 201, "{}", reply.body);
        let tags = get(&format!("{}/v2/{REPO}/tags/list", stack.gateway.url))
            .bearer(&stack.token("alice", ALICE_PAT, &[&format!("repository:{REPO}:pull")]))
            .send();
        assert_eq!(
            tags.json()["tags"],
            serde_json::json!(["fresh"]),
            "{}",
            tags.body
        );
    }
}

#[test]
fn grace_follows_the_exact_token_behind_the_push_not_a_namesake() {
    // erin's three tokens are all named `shared`; she pushes with the read-write one (listed
    // after the `api` one), which is then revoked: no grace, though its namesake still works.
    let stack = stack("");
    let dir = tempfile::tempdir().unwrap();
    let repository = "erin/app";
    let token = stack.token(
        "erin",
        ERIN_WRITE_PAT,
        &[&format!("repository:{repository}:pull,push")],
    );
    let reply = request(
        "POST",
        &format!("{}/v2/{repository}/blobs/uploads/", stack.gateway.url),
    )
    .bearer(&token)
    .send();
    assert_eq!(reply.status, 202, "{}", reply.body);
    let reply = patch(
        reply.header("location").unwrap(),
        &token,
        &chunk(dir.path(), "a"),
    );
    assert_eq!(reply.status, 202, "{}", reply.body);
    let location = reply.header("location").unwrap().to_owned();

    let path = stack.gateway.config_path();
    let text = std::fs::read_to_string(&path).unwrap();
    let digest = format!("token_sha256: \"{}\"", sha256_hex(ERIN_WRITE_PAT));
    assert!(text.contains(&digest));
    std::fs::write(
        &path,
        text.replacen(&digest, &format!("{digest}, revoked: true"), 1),
    )
    .unwrap();
    stack.gateway.signal("HUP");
    stack
        .gateway
        .wait_for_log("configuration reloaded", 1, Duration::from_secs(10));
    std::thread::sleep(Duration::from_millis(3200));
    let reply = patch(&location, &token, &chunk(dir.path(), "b"));
    assert_eq!(reply.status, 401, "{}", stack.gateway.log());
    assert!(
        stack
            .gateway
            .log()
            .contains("no longer valid or no longer allowed to push there"),
        "{}",
        stack.gateway.log()
    );
}
