//! GitLab's project and user settings and its container protection rules, with the real
//! registry and real clients: protected repository paths (refused at `/jwt/auth`), protected
//! and immutable tags (enforced by the gateway itself, so in both deployments), the registry
//! access level, archived projects, the CI job token allowlist, two-factor, locked and
//! external users. The fixture identities are described in tests/support/gateway.rs.

use crate::support;

use support::docker::Dockerd;
use support::gateway::run_cli;
use support::gateway::secrets::*;
use support::http::{get, request};
use support::oci::{skopeo_result, OciImage};
use support::process::ImageCli;
use support::stack::{RegistryAuth, Stack, StackOptions};

fn stack(auth: RegistryAuth) -> Stack {
    Stack::with(StackOptions {
        registry_auth: auth,
        ..StackOptions::default()
    })
}

/// Push `image` to `host/repository:tag` with skopeo; success and skopeo's output.
fn push(image: &OciImage, host: &str, target: &str, creds: Option<(&str, &str)>) -> (bool, String) {
    let creds = creds.map(|(user, secret)| format!("{user}:{secret}"));
    let mut args = vec!["copy", "--preserve-digests", "--dest-tls-verify=false"];
    match &creds {
        Some(creds) => args.extend(["--dest-creds", creds.as_str()]),
        None => args.push("--dest-no-creds"),
    }
    let reference = image.reference();
    let destination = format!("docker://{host}/{target}");
    args.extend([reference.as_str(), destination.as_str()]);
    skopeo_result(&args, None)
}

/// `skopeo inspect` of `host/target`; success and output.
fn inspect(host: &str, target: &str, creds: Option<(&str, &str)>) -> (bool, String) {
    let creds = creds.map(|(user, secret)| format!("{user}:{secret}"));
    let mut args = vec!["inspect", "--tls-verify=false", "--raw"];
    match &creds {
        Some(creds) => args.extend(["--creds", creds.as_str()]),
        None => args.push("--no-creds"),
    }
    let source = format!("docker://{host}/{target}");
    args.push(source.as_str());
    skopeo_result(&args, None)
}

/// The registry's address as clients name it, to push around the gateway.
fn registry_host(stack: &Stack) -> String {
    stack
        .registry
        .url()
        .trim_start_matches("http://")
        .to_owned()
}

/// The digest a tag points at, asked of the gateway with a maintainer's token.
fn digest_of(stack: &Stack, repository: &str, tag: &str) -> String {
    let token = stack.token(
        "pmaint",
        PMAINT_PAT,
        &[&format!("repository:{repository}:pull")],
    );
    let reply = request(
        "HEAD",
        &format!("{}/v2/{repository}/manifests/{tag}", stack.gateway.url),
    )
    .bearer(&token)
    .header("Accept", "application/vnd.oci.image.manifest.v1+json")
    .arg("-I")
    .send();
    assert_eq!(reply.status, 200, "HEAD {repository}:{tag}");
    reply
        .header("docker-content-digest")
        .expect("a digest")
        .to_owned()
}

#[test]
fn protected_and_immutable_tags_are_enforced_by_the_gateway_in_both_deployments() {
    for auth in [RegistryAuth::TrustsGateway, RegistryAuth::None] {
        let stack = stack(auth);
        let host = stack.gateway.host.clone();
        let dir = tempfile::tempdir().unwrap();
        let image = OciImage::create(dir.path().join("image"), 32 * 1024);
        let pdev = Some(("pdev", PDEV_PAT));
        let pmaint = Some(("pmaint", PMAINT_PAT));
        let root = Some(("root", ROOT_PAT));

        // A developer may push tags no rule protects, not a protected one; skopeo shows why.
        let (ok, out) = push(&image, &host, "prot/app/img:latest", pdev);
        assert!(ok, "developer, unprotected tag: {out}");
        let (ok, out) = push(&image, &host, "prot/app/img:v1.0", pdev);
        assert!(!ok, "a developer pushed a protected tag: {out}");
        assert!(out.contains("protected tag"), "{out}");
        let (ok, out) = push(&image, &host, "prot/app/img:v1.0", pmaint);
        assert!(ok, "a maintainer's push of a protected tag: {out}");

        // Deletes of immutable tags, below: what the client sees is the registry's JSON shape.
        // Deleting needs a password or an `api` token (GitLab's admin_container_image).
        let token = stack.token(
            "pmaint",
            PMAINT_API_PAT,
            &["repository:prot/app/img:delete"],
        );
        let url = format!("{}/v2/prot/app/img/manifests/", stack.gateway.url);

        // Immutable: the first push creates it; a second is refused to everyone, even the
        // maintainer and the administrator; so is a delete, by tag or by digest.
        let (ok, out) = push(&image, &host, "prot/app/img:release-1", pmaint);
        assert!(ok, "first push of an immutable tag: {out}");
        for who in [pmaint, root] {
            let (ok, out) = push(&image, &host, "prot/app/img:release-1", who);
            assert!(!ok, "an immutable tag was overwritten: {out}");
            assert!(out.contains("immutable tag"), "{out}");
        }
        let reply = request("DELETE", &format!("{url}release-1"))
            .bearer(&token)
            .send();
        assert_eq!(reply.status, 403, "{}", reply.body);
        assert_eq!(reply.error_code(), "DENIED");
        assert!(
            reply.error_message().contains("immutable tag"),
            "{}",
            reply.body
        );
        let digest = digest_of(&stack, "prot/app/img", "release-1");
        let reply = request("DELETE", &format!("{url}{digest}"))
            .bearer(&token)
            .send();
        assert_eq!(reply.status, 403, "delete by digest: {}", reply.body);
        assert!(
            reply.error_message().contains("immutable tag"),
            "{}",
            reply.body
        );
        // Tags no rule covers are the registry's business: it answers for itself.
        let (ok, out) = push(&image, &host, "prot/app/img:nightly", pmaint);
        assert!(ok, "{out}");
        let log = stack.gateway.log();
        assert!(
            log.contains("reason=\"immutable_tag\"") || log.contains("reason=immutable_tag"),
            "{log}"
        );
    }
}

#[test]
fn a_protected_repository_path_is_refused_at_the_token_endpoint_as_gitlab_refuses_it() {
    let stack = stack(RegistryAuth::TrustsGateway);
    let url = format!(
        "{}/jwt/auth?service=container_registry&scope=repository:prot/app/release:pull,push",
        stack.gateway.url
    );
    let reply = get(&url).basic("pdev", PDEV_PAT).send();
    assert_eq!(reply.status, 403, "{}", reply.body);
    assert_eq!(reply.error_code(), "DENIED");
    assert_eq!(
        reply.error_message(),
        "Pushing to protected repository path forbidden"
    );
    // A pull-only request of the same path is not a push: granted as usual.
    let token = stack.token("pdev", PDEV_PAT, &["repository:prot/app/release:pull"]);
    assert_eq!(Stack::granted(&token), ["repository:prot/app/release:pull"]);

    let dir = tempfile::tempdir().unwrap();
    let image = OciImage::create(dir.path().join("image"), 16 * 1024);
    let host = stack.gateway.host.clone();
    let (ok, out) = push(
        &image,
        &host,
        "prot/app/release:1",
        Some(("pdev", PDEV_PAT)),
    );
    // containers/image does not print a token endpoint's error body, only its status.
    assert!(
        !ok && out.contains("403"),
        "a developer pushed to a protected path: {out}"
    );
    let (ok, out) = push(
        &image,
        &host,
        "prot/app/release:1",
        Some(("pmaint", PMAINT_PAT)),
    );
    assert!(ok, "a maintainer's push to a protected path: {out}");
    let (ok, out) = push(&image, &host, "prot/app/other:1", Some(("pdev", PDEV_PAT)));
    assert!(ok, "a path no rule names: {out}");
}

#[test]
fn registry_access_level_and_archived_projects() {
    // No auth on the registry: the images are put there directly, around the gateway.
    let stack = stack(RegistryAuth::None);
    let dir = tempfile::tempdir().unwrap();
    let image = OciImage::create(dir.path().join("image"), 16 * 1024);
    let direct = registry_host(&stack);
    for target in ["regpriv/app:1", "regoff/app:1", "frozen/app:1"] {
        let (ok, out) = push(&image, &direct, target, None);
        assert!(ok, "direct push of {target}: {out}");
    }
    let host = stack.gateway.host.clone();

    // Public project, registry `private`: members only; anonymous callers refused.
    let (ok, out) = inspect(&host, "regpriv/app:1", None);
    assert!(!ok, "anonymous pull of a members-only registry: {out}");
    let (ok, out) = inspect(&host, "regpriv/app:1", Some(("pdev", PDEV_PAT)));
    assert!(ok, "a reporter's pull: {out}");
    let (ok, out) = inspect(&host, "regpriv/app:1", Some(("xena", XENA_PAT)));
    assert!(!ok, "a signed-in non-member: {out}");

    // `disabled`: no one, not a maintainer, not an administrator.
    for creds in [None, Some(("pmaint", PMAINT_PAT)), Some(("root", ROOT_PAT))] {
        let (ok, out) = inspect(&host, "regoff/app:1", creds);
        assert!(!ok, "a disabled registry answered {creds:?}: {out}");
    }
    let token = stack.token(
        "root",
        ROOT_PAT,
        &["repository:regoff/app:pull,push,delete"],
    );
    assert!(Stack::granted(&token).is_empty());

    // Archived: pulls work, pushes are refused to everyone.
    let (ok, out) = inspect(&host, "frozen/app:1", None);
    assert!(ok, "anonymous pull of an archived public project: {out}");
    for creds in [("pmaint", PMAINT_PAT), ("root", ROOT_PAT)] {
        let (ok, out) = push(&image, &host, "frozen/app:2", Some(creds));
        assert!(!ok, "{creds:?} pushed to an archived project: {out}");
    }
    let token = stack.token(
        "pmaint",
        PMAINT_PAT,
        &["repository:frozen/app:pull,push,delete"],
    );
    assert_eq!(Stack::granted(&token), ["repository:frozen/app:pull"]);
}

#[test]
fn a_ci_job_pulls_from_another_private_project_only_when_its_allowlist_names_the_job() {
    let stack = stack(RegistryAuth::TrustsGateway);
    let dir = tempfile::tempdir().unwrap();
    let image = OciImage::create(dir.path().join("image"), 16 * 1024);
    let host = stack.gateway.host.clone();
    let (ok, out) = push(&image, &host, "ci/private/img:1", Some(("pdev", PDEV_PAT)));
    assert!(ok, "{out}");
    // pdev is a developer of all three projects: only the allowlist tells the jobs apart.
    let allowed = stack.ci_job_token("ci/allowed", "pdev");
    let (ok, out) = inspect(
        &host,
        "ci/private/img:1",
        Some(("gitlab-ci-token", &allowed)),
    );
    assert!(ok, "an allowlisted job's pull: {out}");
    let other = stack.ci_job_token("ci/other", "pdev");
    let (ok, out) = inspect(&host, "ci/private/img:1", Some(("gitlab-ci-token", &other)));
    assert!(!ok, "a job not on the allowlist pulled: {out}");
    // The user's own PAT still pulls: the allowlist is about job tokens.
    let (ok, out) = inspect(&host, "ci/private/img:1", Some(("pdev", PDEV_PAT)));
    assert!(ok, "{out}");
}

#[test]
fn two_factor_locked_and_external_users() {
    let stack = stack(RegistryAuth::TrustsGateway);
    let url = format!(
        "{}/jwt/auth?service=container_registry&scope=repository:public/app:pull",
        stack.gateway.url
    );
    // Two-factor: the password is refused with GitLab's advice; the PAT works.
    let reply = get(&url).basic("tess", TESS_PASSWORD).send();
    assert_eq!(reply.status, 401, "{}", reply.body);
    assert!(
        reply.error_message().contains(
            "You must use a personal access token with 'read_registry' or 'write_registry' scope"
        ),
        "{}",
        reply.body
    );
    let reply = get(&url).basic("tess", TESS_PAT).send();
    assert_eq!(reply.status, 200, "{}", reply.body);
    let host = stack.gateway.host.clone();
    let (ok, out) = skopeo_result(
        &[
            "login",
            "--tls-verify=false",
            "-u",
            "tess",
            "--password-stdin",
            &host,
        ],
        Some(TESS_PASSWORD),
    );
    // containers/image words every refused login this way, whatever the body says.
    assert!(!ok && out.contains("invalid username/password"), "{out}");

    // Locked: no credential signs in.
    let reply = get(&url).basic("lou", LOU_PAT).send();
    assert_eq!(reply.status, 401, "{}", reply.body);
    assert!(reply.error_message().contains("locked"), "{}", reply.body);

    // External: internal projects are out of reach, public ones are not.
    let token = stack.token("xena", XENA_PAT, &["repository:internal/app:pull"]);
    assert!(
        Stack::granted(&token).is_empty(),
        "{:?}",
        Stack::granted(&token)
    );
    let token = stack.token("xena", XENA_PAT, &["repository:public/app:pull"]);
    assert_eq!(Stack::granted(&token), ["repository:public/app:pull"]);
    // Another signed-in user reads the internal project.
    let token = stack.token("pdev", PDEV_PAT, &["repository:internal/app:pull"]);
    assert_eq!(Stack::granted(&token), ["repository:internal/app:pull"]);
    let (ok, out) = inspect(&host, "internal/app:1", Some(("xena", XENA_PAT)));
    assert!(!ok && !out.contains("manifest unknown"), "{out}");
}

#[test]
fn bad_settings_are_named_by_portcullis_check() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("gateway.yaml");
    std::fs::write(
        &config,
        r#"public_url: "http://127.0.0.1:4567"
upstream: { url: "http://127.0.0.1:5000" }
token: { signing_key: token.key, certificate: token.crt }
groups:
  - path: g
    archived: true
projects:
  - path: g/app
    container_registry_access_level: publik
    job_token_allowlist: [nowhere]
    container_protection:
      repositories:
        - { repository_path_pattern: "other/*", minimum_access_level_for_push: maintainer }
      tags:
        - { tag_name_pattern: "^v[0-9", minimum_access_level_for_push: developer, minimum_access_level_for_delete: owner }
      immutable_tags: ["(a)\\1"]
"#,
    )
    .unwrap();
    let (code, out, err) = run_cli(&["check", "--config", config.to_str().unwrap()], None);
    assert_ne!(code, 0);
    let text = format!("{out}{err}");
    for expected in [
        "groups[0].archived",
        "projects[0].container_registry_access_level: unknown value \"publik\"",
        "projects[0].job_token_allowlist[0]: \"nowhere\" is no project or group",
        "projects[0].container_protection.repositories[0].repository_path_pattern",
        "projects[0].container_protection.tags[0].tag_name_pattern: not a valid RE2 pattern",
        "projects[0].container_protection.tags[0].minimum_access_level_for_push: unknown access level \"developer\"",
        "projects[0].container_protection.immutable_tags[0]",
    ] {
        assert!(text.contains(expected), "{expected:?} missing from:\n{text}");
    }
}

#[test]
fn docker_push_shows_why_a_protected_path_or_tag_is_refused() {
    let stack = stack(RegistryAuth::TrustsGateway);
    let docker = Dockerd::start();
    let host = stack.gateway.host.as_str();
    docker.ok(
        &["login", host, "-u", "pdev", "--password-stdin"],
        Some(PDEV_PAT),
    );
    let path = format!("{host}/prot/app/release:1");
    docker.import_image(&path);
    let (ok, out) = docker.run(&["push", &path], None);
    assert!(!ok, "a developer pushed to a protected path: {out}");
    assert!(
        out.contains("Pushing to protected repository path forbidden"),
        "{out}"
    );
    let tag = format!("{host}/prot/app/img:v2");
    docker.ok(&["tag", &path, &tag], None);
    let (ok, out) = docker.run(&["push", &tag], None);
    assert!(!ok, "a developer pushed a protected tag: {out}");
    assert!(out.contains("protected tag"), "{out}");
    docker.ok(
        &["login", host, "-u", "pmaint", "--password-stdin"],
        Some(PMAINT_PAT),
    );
    docker.ok(&["push", &tag], None);
}
