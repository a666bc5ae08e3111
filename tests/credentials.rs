//! Every credential of the GitLab registry doc, with GitLab's scopes, roles and refusals,
//! through real clients against the real registry.

use crate::support;

use support::gateway::secrets::*;
use support::http::{get, request};
use support::oci::{skopeo, skopeo_result, OciImage};
use support::podman::Podman;
use support::process::ImageCli;
use support::stack::{RegistryAuth, Stack, StackOptions};

/// Push a small image as `user` to `repository`; true when it worked.
fn push(
    stack: &Stack,
    image: &OciImage,
    user: &str,
    secret: &str,
    repository: &str,
) -> (bool, String) {
    image.push_to(&stack.gateway.host, repository, user, secret)
}

/// Pull `repository` as `user`; true when it worked.
fn pull(stack: &Stack, user: &str, secret: &str, repository: &str) -> (bool, String) {
    let dir = tempfile::tempdir().unwrap();
    skopeo_result(
        &[
            "copy",
            "--src-tls-verify=false",
            "--src-creds",
            &format!("{user}:{secret}"),
            &format!("docker://{}/{repository}:v1", stack.gateway.host),
            &format!("oci:{}:v1", dir.path().join("pulled").display()),
        ],
        None,
    )
}

#[test]
fn deploy_tokens_act_only_in_their_project_or_group_with_their_scopes() {
    let stack = Stack::start();
    let dir = tempfile::tempdir().unwrap();
    let image = OciImage::create(dir.path().join("image"), 128 * 1024);
    let project_token = ("gitlab+deploy-token-1", DEPLOY_READ_ONLY);
    let group_token = ("gitlab+deploy-token-2", DEPLOY_GROUP_WRITE);

    // The group deploy token writes to every project of its group, not outside it.
    for repository in ["mygroup/myproject/app", "mygroup/second"] {
        let (ok, out) = push(&stack, &image, group_token.0, group_token.1, repository);
        assert!(ok, "group deploy token pushing to {repository}: {out}");
    }
    assert!(
        !push(&stack, &image, group_token.0, group_token.1, "public/app").0,
        "outside its group"
    );

    // The project deploy token reads its project (private), never writes, never reads elsewhere.
    assert!(
        pull(
            &stack,
            project_token.0,
            project_token.1,
            "mygroup/myproject/app"
        )
        .0
    );
    let (ok, out) = push(
        &stack,
        &image,
        project_token.0,
        project_token.1,
        "mygroup/myproject/app",
    );
    assert!(!ok, "a read_registry deploy token pushed: {out}");
    assert!(
        !pull(&stack, project_token.0, project_token.1, "mygroup/second").0,
        "outside its project"
    );

    // The doc's CI flow: echo "$CI_DEPLOY_PASSWORD" | docker login -u $CI_DEPLOY_USER --password-stdin
    let podman = Podman::new();
    let out = podman.ok(
        &[
            "login",
            "--tls-verify=false",
            "-u",
            project_token.0,
            "--password-stdin",
            &stack.gateway.host,
        ],
        Some(project_token.1),
    );
    assert!(out.contains("Login Succeeded"), "{out}");
    podman.ok(
        &[
            "pull",
            "--tls-verify=false",
            &format!("{}/mygroup/myproject/app:v1", stack.gateway.host),
        ],
        None,
    );
    assert!(stack
        .gateway
        .log()
        .contains("user=\"gitlab+deploy-token-1\""));
}

#[test]
fn a_project_access_token_is_a_bot_with_its_own_role_inside_its_project() {
    let stack = Stack::start();
    let dir = tempfile::tempdir().unwrap();
    let image = OciImage::create(dir.path().join("image"), 64 * 1024);
    let (ok, out) = push(
        &stack,
        &image,
        "project_myproject_bot",
        PROJECT_BOT,
        "mygroup/myproject/bot",
    );
    assert!(ok, "{out}");
    assert!(
        !push(
            &stack,
            &image,
            "project_myproject_bot",
            PROJECT_BOT,
            "mygroup/second"
        )
        .0,
        "outside its project"
    );
    // A developer bot may not delete.
    let token = stack.token(
        "project_myproject_bot",
        PROJECT_BOT,
        &["repository:mygroup/myproject/bot:pull,push,delete"],
    );
    assert_eq!(
        Stack::granted(&token),
        vec!["repository:mygroup/myproject/bot:pull,push"]
    );
}

#[test]
fn group_members_inherit_their_role_in_every_project_of_the_group() {
    let stack = Stack::start();
    let dir = tempfile::tempdir().unwrap();
    let image = OciImage::create(dir.path().join("image"), 64 * 1024);
    // carol is maintainer of mygroup only, and her token has the `api` scope.
    for repository in ["mygroup/myproject/app", "mygroup/second"] {
        let (ok, out) = push(&stack, &image, "carol", CAROL_API_PAT, repository);
        assert!(ok, "carol pushing to {repository}: {out}");
    }
    let token = stack.token(
        "carol",
        CAROL_API_PAT,
        &[
            "repository:mygroup/second:delete",
            "repository:public/app:push",
        ],
    );
    assert_eq!(
        Stack::granted(&token),
        vec!["repository:mygroup/second:delete"]
    );
    skopeo(&[
        "inspect",
        "--tls-verify=false",
        "--creds",
        &format!("carol:{CAROL_API_PAT}"),
        &format!("docker://{}/mygroup/second:v1", stack.gateway.host),
    ]);
}

#[test]
fn refusals_are_told_apart_in_the_answer_and_in_the_log() {
    let stack = Stack::start();
    let login = |user: &str, secret: &str| {
        get(&format!(
            "{}/jwt/auth?service=container_registry",
            stack.gateway.url
        ))
        .basic(user, secret)
        .send()
    };
    let cases = [
        ("alice", ALICE_REVOKED_PAT, "revoked", "token_revoked"),
        ("alice", ALICE_EXPIRED_PAT, "expired", "token_expired"),
        ("dave", DAVE_PAT, "blocked", "user_blocked"),
        (
            "gitlab+deploy-token-1",
            "wrong",
            "incorrect",
            "wrong_secret",
        ),
        ("nobody", "wrong", "incorrect", "unknown_user"),
    ];
    for (user, secret, message, reason) in cases {
        let reply = login(user, secret);
        assert_eq!(reply.status, 401, "{user}: {}", reply.body);
        assert_eq!(reply.error_code(), "UNAUTHORIZED");
        assert!(
            reply.error_message().contains(message),
            "{user}: {message:?} not in {}",
            reply.body
        );
        // A known name is logged quoted; an unknown one only as its length and hash.
        let logged = if user == "nobody" {
            format!("user_len={} reason=\"{reason}\"", user.len())
        } else {
            format!("user={user:?} reason=\"{reason}\"")
        };
        assert!(
            stack.gateway.log().contains(&logged),
            "no {reason} in the log:\n{}",
            stack.gateway.log()
        );
    }
    // A token with no registry ability is a good credential refused with GitLab's 403
    // (CRAS#execute: `error('DENIED', status: 403, message: 'access forbidden') unless
    // has_registry_ability?`), not a 401; the log keeps the precise reason.
    let reply = login("alice", ALICE_ADMIN_MODE_PAT);
    assert_eq!(reply.status, 403, "{}", reply.body);
    assert_eq!(reply.error_code(), "DENIED");
    assert_eq!(reply.error_message(), "access forbidden");
    assert!(stack.gateway.log().contains(
        "user=\"alice\" credential=\"personal_access_token\" reason=\"insufficient_scope\""
    ));
    // Unknown users and wrong secrets get GitLab's text (jwt_controller.rb render_access_denied).
    assert!(login("nobody", "wrong").error_message().starts_with(
        "HTTP Basic: Access denied. If a password was provided for Git authentication"
    ));
    // A blocked account is only named to someone who knows its secret.
    let reply = login("dave", "not-his-token");
    assert!(
        reply.error_message().contains("incorrect"),
        "{}",
        reply.body
    );
}

#[test]
fn too_many_failed_logins_ban_the_client_and_the_username() {
    use support::gateway::GatewayOptions;
    use support::stack::StackOptions;
    let stack = Stack::with(StackOptions {
        gateway: GatewayOptions {
            extra: "brute_force: { max_failures: 3, window: 60s, ban: 1h }\n".into(),
            ..GatewayOptions::new("")
        },
        ..StackOptions::default()
    });
    let login = |user: &str, secret: &str| {
        get(&format!(
            "{}/jwt/auth?service=container_registry",
            stack.gateway.url
        ))
        .basic(user, secret)
        .send()
    };
    assert_eq!(login("alice", ALICE_PAT).status, 200);
    for _ in 0..3 {
        assert_eq!(login("alice", "guess").status, 401);
    }
    // Now even the right token is refused, for alice and for anyone from this address.
    for (user, secret) in [("alice", ALICE_PAT), ("bob", BOB_PAT)] {
        let reply = login(user, secret);
        assert_eq!(reply.status, 403, "{user}: {}", reply.body);
        assert_eq!(reply.error_code(), "DENIED");
        assert!(
            reply.error_message().contains("too many failed logins"),
            "{}",
            reply.body
        );
    }
    let log = stack.gateway.log();
    assert_eq!(
        log.matches("banned after too many failed logins").count(),
        2,
        "client and username, logged once each:\n{log}"
    );
}

#[test]
fn a_guest_of_a_private_project_can_neither_pull_nor_push() {
    let stack = Stack::start();
    let dir = tempfile::tempdir().unwrap();
    let image = OciImage::create(dir.path().join("image"), 64 * 1024);
    assert!(push(&stack, &image, "root", ROOT_PAT, "mygroup/myproject/app").0);
    let (ok, out) = pull(&stack, "gus", GUS_PAT, "mygroup/myproject/app");
    assert!(!ok, "a guest pulled from a private project: {out}");
    assert!(!push(&stack, &image, "gus", GUS_PAT, "mygroup/myproject/app").0);
    assert!(
        pull(&stack, "bob", BOB_PAT, "mygroup/myproject/app").0,
        "a reporter can"
    );
}

#[test]
fn project_tokens_do_not_reach_a_private_project_nested_below_theirs() {
    // mygroup/myproject/vault is its own private project below mygroup/myproject: the tokens of
    // mygroup/myproject (deploy token, developer and maintainer bots) get nothing there, with
    // the registry checking tokens and with the gateway as the only guard.
    for auth in [RegistryAuth::TrustsGateway, RegistryAuth::None] {
        let stack = Stack::with(StackOptions {
            registry_auth: auth,
            ..StackOptions::default()
        });
        let dir = tempfile::tempdir().unwrap();
        let image = OciImage::create(dir.path().join("image"), 32 * 1024);
        // carol maintains the group, so the vault: she puts an image there.
        for repository in ["mygroup/myproject/vault", "mygroup/myproject/vault/image"] {
            let (ok, out) = push(&stack, &image, "carol", CAROL_API_PAT, repository);
            assert!(ok, "carol pushing to {repository}: {out}");
        }
        let project_tokens = [
            ("gitlab+deploy-token-1", DEPLOY_READ_ONLY),
            ("project_myproject_bot", PROJECT_BOT),
            ("project_myproject_maintainer_bot", PROJECT_MAINTAINER_BOT),
        ];
        for (user, secret) in project_tokens {
            for repository in ["mygroup/myproject/vault", "mygroup/myproject/vault/image"] {
                let token = stack.token(
                    user,
                    secret,
                    &[&format!("repository:{repository}:pull,push,delete")],
                );
                assert!(
                    Stack::granted(&token).is_empty(),
                    "{user} on {repository}: {:?}",
                    Stack::granted(&token)
                );
                let manifest = format!("{}/v2/{repository}/manifests/v1", stack.gateway.url);
                let reply = get(&manifest).bearer(&token).send();
                assert_eq!(
                    reply.status, 401,
                    "{user} read {repository}: {}",
                    reply.body
                );
                let reply = request("DELETE", &manifest).bearer(&token).send();
                assert_eq!(reply.status, 401, "{user} deleted in {repository}");
                let (ok, out) = pull(&stack, user, secret, repository);
                assert!(!ok, "{user} pulled {repository}: {out}");
            }
            let (ok, out) = push(&stack, &image, user, secret, "mygroup/myproject/vault");
            assert!(!ok, "{user} pushed to the vault: {out}");
        }
        // Their own project's images they still reach. The maintainer bot's token has
        // read_registry + write_registry, not api: no admin_container_image, so no delete
        // (GitLab CRAS#can_access? 'delete' -> user_can_admin?).
        let (ok, out) = push(
            &stack,
            &image,
            "project_myproject_maintainer_bot",
            PROJECT_MAINTAINER_BOT,
            "mygroup/myproject/app",
        );
        assert!(ok, "{out}");
        let token = stack.token(
            "project_myproject_maintainer_bot",
            PROJECT_MAINTAINER_BOT,
            &["repository:mygroup/myproject/app:pull,push,delete"],
        );
        assert_eq!(
            Stack::granted(&token),
            vec!["repository:mygroup/myproject/app:pull,push"]
        );
        assert!(
            pull(
                &stack,
                "gitlab+deploy-token-1",
                DEPLOY_READ_ONLY,
                "mygroup/myproject/app"
            )
            .0
        );
        // A group's token reaches every project of the group, nested ones included.
        let (ok, out) = pull(
            &stack,
            "gitlab+deploy-token-2",
            DEPLOY_GROUP_WRITE,
            "mygroup/myproject/vault",
        );
        assert!(ok, "{out}");
    }
}
