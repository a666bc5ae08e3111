//! CI job credentials as a job uses them: `eval "$(portcullis ci-token ...)"`, then
//! `echo "$CI_REGISTRY_PASSWORD" | podman login $CI_REGISTRY -u $CI_REGISTRY_USER --password-stdin`.

use crate::support;

use std::process::Command;

use support::gateway::run_cli;
use support::http::get;
use support::podman::Podman;
use support::process::{self, ImageCli};
use support::stack::Stack;

#[test]
fn a_job_logs_in_with_the_ci_variables_and_pushes_to_its_project_only() {
    let stack = Stack::start();
    let config = stack.gateway.config_path();
    // The printed lines work with eval, as a CI script uses them.
    let mut shell = Command::new("bash");
    shell.arg("-c").arg(format!(
        "eval \"$('{}' ci-token --config '{}' --project mygroup/myproject --user alice --ttl 1h)\" && echo \"$CI_REGISTRY_USER $CI_REGISTRY $CI_REGISTRY_IMAGE\" && [ \"$CI_JOB_TOKEN\" = \"$CI_REGISTRY_PASSWORD\" ]",
        support::gateway::binary().display(),
        config.display()
    ));
    let out = process::run(shell, None);
    assert!(out.ok, "{}", out.combined());
    assert_eq!(
        out.stdout.trim(),
        format!(
            "gitlab-ci-token {host} {host}/mygroup/myproject",
            host = stack.gateway.host
        )
    );

    let vars = stack.ci_variables("mygroup/myproject", "alice", "1h");
    let podman = Podman::new();
    let login = podman.ok(
        &[
            "login",
            "--tls-verify=false",
            &vars["CI_REGISTRY"],
            "-u",
            &vars["CI_REGISTRY_USER"],
            "--password-stdin",
        ],
        Some(&vars["CI_REGISTRY_PASSWORD"]),
    );
    assert!(login.contains("Login Succeeded"), "{login}");
    let image = format!("{}/app:1", vars["CI_REGISTRY_IMAGE"]);
    podman.import_image(&image);
    podman.ok(&["push", "--tls-verify=false", &image], None);
    let elsewhere = format!("{}/mygroup/second/app:1", vars["CI_REGISTRY"]);
    podman.ok(&["tag", &image, &elsewhere], None);
    let (ok, out) = podman.run(&["push", "--tls-verify=false", &elsewhere], None);
    assert!(!ok, "a job pushed outside its project: {out}");

    // What the job token grants: its project pull, push and delete (GitLab CRAS
    // #build_can_pull?, #build_can_push?, #build_can_delete?), other projects pull where
    // alice reads.
    let job = &vars["CI_JOB_TOKEN"];
    let token = stack.token(
        "gitlab-ci-token",
        job,
        &[
            "repository:mygroup/myproject/app:pull,push,delete",
            "repository:mygroup/second:pull",
            "repository:internal/app:pull,push",
            "repository:public/app:pull",
        ],
    );
    assert_eq!(
        Stack::granted(&token),
        vec![
            "repository:mygroup/myproject/app:pull,push,delete",
            "repository:internal/app:pull",
            "repository:public/app:pull"
        ]
    );
    assert!(stack.gateway.log().contains("user=\"alice\""));
}

#[test]
fn a_reporters_job_pushes_to_its_own_project_and_bad_or_expired_job_tokens_are_refused() {
    let stack = Stack::start();
    // GitLab CRAS#build_can_push?: "Build can push only to the project from which it
    // originates", with no role check: a reporter's job pushes there.
    let bob = stack.ci_variables("mygroup/myproject", "bob", "1h");
    let token = stack.token(
        "gitlab-ci-token",
        &bob["CI_JOB_TOKEN"],
        &["repository:mygroup/myproject:pull,push"],
    );
    assert_eq!(
        Stack::granted(&token),
        vec!["repository:mygroup/myproject:pull,push"]
    );

    let login = |secret: &str| {
        get(&format!(
            "{}/jwt/auth?service=container_registry",
            stack.gateway.url
        ))
        .basic("gitlab-ci-token", secret)
        .send()
    };
    // A registry token is not a job token, and a job token is not a registry token.
    let registry_token = stack.token(
        "alice",
        support::gateway::secrets::ALICE_PAT,
        &["repository:mygroup/myproject:pull"],
    );
    assert_eq!(login(&registry_token).status, 401);
    let reply = get(&format!("{}/v2/", stack.gateway.url))
        .bearer(&bob["CI_JOB_TOKEN"])
        .send();
    assert_eq!(reply.status, 401);
    assert!(reply
        .header("www-authenticate")
        .unwrap()
        .contains("invalid_token"));

    let short = stack.ci_variables("mygroup/myproject", "alice", "1s");
    std::thread::sleep(std::time::Duration::from_millis(2100));
    let reply = login(&short["CI_JOB_TOKEN"]);
    assert_eq!(reply.status, 401);
    assert!(reply.error_message().contains("expired"), "{}", reply.body);
    assert_eq!(login("not-a-job-token").status, 401);
}

#[test]
fn ci_token_refuses_unknown_users_projects_and_blocked_users() {
    let stack = Stack::start();
    let config = stack.gateway.config_path();
    let config = config.to_str().unwrap();
    for (project, user, message) in [
        ("mygroup/nothing", "alice", "no project"),
        ("mygroup/myproject", "zed", "no user"),
        ("mygroup/myproject", "dave", "blocked"),
    ] {
        let (code, _, err) = run_cli(
            &[
                "ci-token",
                "--config",
                config,
                "--project",
                project,
                "--user",
                user,
            ],
            None,
        );
        assert_eq!(code, 1);
        assert!(err.contains(message), "{err}");
    }
    let (code, _, err) = run_cli(
        &[
            "ci-token",
            "--config",
            config,
            "--project",
            "mygroup/second",
            "--user",
            "alice",
        ],
        None,
    );
    assert_eq!(code, 0);
    assert!(err.contains("can still push"), "{err}");
}

/// `portcullis ci-token` for `config`; the job token it prints.
fn job_token_from(config: &std::path::Path, project: &str, user: &str) -> Result<String, String> {
    let (code, out, err) = run_cli(
        &[
            "ci-token",
            "--config",
            config.to_str().unwrap(),
            "--project",
            project,
            "--user",
            user,
        ],
        None,
    );
    if code != 0 {
        return Err(err);
    }
    Ok(out
        .lines()
        .find_map(|l| l.strip_prefix("CI_JOB_TOKEN="))
        .expect("CI_JOB_TOKEN")
        .trim_matches(['\'', '"'])
        .to_owned())
}

#[test]
fn with_ci_signing_key_job_tokens_need_only_that_key_and_rotating_it_revokes_them_only() {
    use support::gateway::{Gateway, GatewayFiles, GatewayOptions};
    use support::stack::StackOptions;
    let options = GatewayOptions {
        extra: "ci: { signing_key: ci.key }\n".into(),
        ..GatewayOptions::new("")
    };
    let stack = Stack::with(StackOptions {
        gateway: options.clone(),
        ..StackOptions::default()
    });
    let scopes = ["repository:mygroup/myproject/app:pull,push"];
    let login = |gateway: &Gateway, secret: &str| {
        get(&format!(
            "{}/jwt/auth?service=container_registry&scope={}",
            gateway.url, scopes[0]
        ))
        .basic("gitlab-ci-token", secret)
        .send()
    };

    // Signed with the CI key (its own kid), accepted.
    let job = stack.ci_job_token("mygroup/myproject", "alice");
    let kid = support::http::jwt_part(&job, 0)["kid"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(kid.starts_with("ci-"), "{kid}");
    let reply = login(&stack.gateway, &job);
    assert_eq!(reply.status, 200, "{}", reply.body);

    // The CI side needs only ci.key: a folder without the registry's key mints good tokens.
    let ci_side = tempfile::tempdir().unwrap();
    std::fs::copy(
        stack.gateway.files.path("ci.key"),
        ci_side.path().join("ci.key"),
    )
    .unwrap();
    let config = std::fs::read_to_string(stack.gateway.config_path()).unwrap();
    std::fs::write(ci_side.path().join("gateway.yaml"), &config).unwrap();
    assert!(!ci_side.path().join("token.key").exists());
    let from_ci_side = job_token_from(
        &ci_side.path().join("gateway.yaml"),
        "mygroup/myproject",
        "alice",
    )
    .expect("ci-token with only ci.key");
    assert_eq!(login(&stack.gateway, &from_ci_side).status, 200);

    // The registry's key can no longer mint job tokens.
    let registry_side = stack.gateway.files.path("registry-side.yaml");
    std::fs::write(
        &registry_side,
        config.replace("ci: { signing_key: ci.key }\n", ""),
    )
    .unwrap();
    let by_registry_key = job_token_from(&registry_side, "mygroup/myproject", "alice").unwrap();
    let reply = login(&stack.gateway, &by_registry_key);
    assert_eq!(reply.status, 401, "{}", reply.body);

    // Rotate the CI key (a new ci.key from init) and restart: job tokens are revoked, and
    // nothing else is: a registry token and a personal access token keep working.
    let registry_token = stack.token("alice", support::gateway::secrets::ALICE_PAT, &scopes);
    let fresh = GatewayFiles::init("ec", "http://127.0.0.1:1");
    let rotated = stack.gateway.files.copy_keys();
    std::fs::copy(fresh.path("ci.key"), rotated.path("ci.key")).unwrap();
    let options = GatewayOptions {
        upstream: stack.registry.url(),
        ..options
    };
    let gateway = Gateway::start(rotated, &options);
    let reply = login(&gateway, &job);
    assert_eq!(
        reply.status, 401,
        "an old job token still works: {}",
        reply.body
    );
    let reply = get(&format!(
        "{}/v2/mygroup/myproject/app/tags/list",
        gateway.url
    ))
    .bearer(&registry_token)
    .send();
    assert_ne!(
        reply.status, 401,
        "a registry token stopped working: {}",
        reply.body
    );
    let pat = get(&format!(
        "{}/jwt/auth?service=container_registry&scope={}",
        gateway.url, scopes[0]
    ))
    .basic("alice", support::gateway::secrets::ALICE_PAT)
    .send();
    assert_eq!(pat.status, 200, "{}", pat.body);
    let new_job = job_token_from(&gateway.config_path(), "mygroup/myproject", "alice").unwrap();
    assert_eq!(login(&gateway, &new_job).status, 200);
}

#[test]
fn without_ci_signing_key_job_tokens_are_signed_by_the_registry_key_as_before() {
    let stack = Stack::start();
    let job = stack.ci_job_token("mygroup/myproject", "alice");
    let kid = support::http::jwt_part(&job, 0)["kid"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(!kid.starts_with("ci-"), "{kid}");
    let token = stack.token(
        "gitlab-ci-token",
        &job,
        &["repository:mygroup/myproject:pull"],
    );
    assert_eq!(
        Stack::granted(&token),
        vec!["repository:mygroup/myproject:pull"]
    );
}
