//! GitLab's registry authentication, rule by rule (issue 15, first half), through real
//! clients against the real registry. Each test names the GitLab source it mirrors:
//! `app/services/auth/container_registry_authentication_service.rb` ("CRAS"),
//! `lib/gitlab/auth.rb`, `app/controllers/jwt_controller.rb`. The rules are listed in
//! `docs/gitlab-compatibility.md`.

use crate::support;

use support::gateway::secrets::*;
use support::http::{get, jwt_part};
use support::oci::{skopeo_result, OciImage};
use support::stack::{RegistryAuth, Stack, StackOptions};

fn auth(stack: &Stack, query: &str) -> String {
    format!(
        "{}/jwt/auth?service=container_registry{query}",
        stack.gateway.url
    )
}

fn skopeo_as(creds: Option<&str>, args: &[&str]) -> (bool, String) {
    let mut all: Vec<&str> = vec![args[0], "--tls-verify=false"];
    let flag;
    if let Some(creds) = creds {
        flag = creds.to_owned();
        all.push("--creds");
        all.push(&flag);
    }
    all.extend(&args[1..]);
    skopeo_result(&all, None)
}

#[test]
fn skopeo_delete_needs_an_api_token_and_maintainer_not_read_write_scopes() {
    // CRAS#can_access? 'delete' -> user_can_admin?: `admin_container_image`, which
    // lib/gitlab/auth.rb `abilities_for_scopes` gives `api` (full_authentication_abilities)
    // and never read_registry + write_registry. Both deployments: the registry checking the
    // gateway's tokens, and the gateway as the only guard.
    for registry_auth in [RegistryAuth::TrustsGateway, RegistryAuth::None] {
        let stack = Stack::with(StackOptions {
            registry_auth,
            ..StackOptions::default()
        });
        let dir = tempfile::tempdir().unwrap();
        let image = OciImage::create(dir.path().join("image"), 32 * 1024);
        let repository = "mygroup/myproject/app";
        let (ok, out) = image.push_to(&stack.gateway.host, repository, "carol", CAROL_API_PAT);
        assert!(ok, "{out}");
        let target = format!("docker://{}/{repository}:v1", stack.gateway.host);
        // A maintainer whose token has read_registry + write_registry: refused.
        let creds = format!("project_myproject_maintainer_bot:{PROJECT_MAINTAINER_BOT}");
        let (ok, out) = skopeo_as(Some(&creds), &["delete", &target]);
        assert!(!ok, "a read+write token deleted: {out}");
        let (ok, out) = skopeo_as(Some(&creds), &["inspect", &target]);
        assert!(ok, "the image is still there: {out}");
        // A maintainer (of the group) with an `api` token: deleted.
        let (ok, out) = skopeo_as(
            Some(&format!("carol:{CAROL_API_PAT}")),
            &["delete", &target],
        );
        assert!(ok, "carol's api token could not delete: {out}");
        let (ok, _) = skopeo_as(
            Some(&format!("carol:{CAROL_API_PAT}")),
            &["inspect", &target],
        );
        assert!(!ok, "the image is gone");
        // A developer with `api` still does not delete (admin_container_image is maintainer+).
        let token = stack.token(
            "erin",
            ERIN_API_PAT,
            &[
                "repository:erin/app:pull,push,delete",
                "repository:erin/app:*",
            ],
        );
        assert_eq!(
            Stack::granted(&token),
            vec!["repository:erin/app:pull,push"]
        );
        // `*` goes to maintainers with api (CRAS#can_access? '*'), not only to admins.
        let token = stack.token("carol", CAROL_API_PAT, &["repository:mygroup/second:*"]);
        assert_eq!(Stack::granted(&token), vec!["repository:mygroup/second:*"]);
    }
}

#[test]
fn a_personal_access_token_works_with_any_username_a_deploy_token_needs_its_own() {
    // lib/gitlab/auth.rb find_for_git_client -> personal_access_token_check looks the token up
    // by its secret and never compares the login; deploy_token_check returns unless
    // `login == token.username`.
    let stack = Stack::start();
    let dir = tempfile::tempdir().unwrap();
    let image = OciImage::create(dir.path().join("image"), 32 * 1024);
    let (ok, out) = image.push_to(
        &stack.gateway.host,
        "mygroup/myproject/app",
        "anything",
        ALICE_PAT,
    );
    assert!(ok, "a PAT with username 'anything' could not push: {out}");
    let target = format!("docker://{}/mygroup/myproject/app:v1", stack.gateway.host);
    let (ok, out) = skopeo_as(
        Some(&format!("someone-else:{BOB_PAT}")),
        &["inspect", &target],
    );
    assert!(ok, "{out}");
    // The token alone says who acts: `sub` is the owner, whatever was typed, empty included.
    for username in ["anything", "bob", ""] {
        let reply = get(&auth(
            &stack,
            "&scope=repository:mygroup/myproject/app:pull,push",
        ))
        .basic(username, ALICE_PAT)
        .send();
        assert_eq!(reply.status, 200, "{username:?}: {}", reply.body);
        let token = reply.json()["token"].as_str().unwrap().to_owned();
        assert_eq!(jwt_part(&token, 1)["sub"], "alice");
        assert_eq!(
            Stack::granted(&token),
            vec!["repository:mygroup/myproject/app:pull,push"]
        );
    }
    // A project access token (a bot's PAT) too.
    let token = stack.token(
        "whoever",
        PROJECT_BOT,
        &["repository:mygroup/myproject/app:pull"],
    );
    assert_eq!(jwt_part(&token, 1)["sub"], "project_myproject_bot");
    // A deploy token under another name is refused.
    let reply = get(&auth(&stack, ""))
        .basic("whoever", DEPLOY_READ_ONLY)
        .send();
    assert_eq!(reply.status, 401, "{}", reply.body);
    assert!(
        stack
            .token("gitlab+deploy-token-1", DEPLOY_READ_ONLY, &[])
            .len()
            > 10
    );
}

#[test]
fn anonymous_callers_granted_nothing_get_403_signed_in_callers_are_down_scoped() {
    // CRAS#execute: `unless scopes.any? || current_user || deploy_token || project` -> 403
    // DENIED "access forbidden"; spec CRAS 'unauthorized' / 'for private project' and 'for
    // public project' / 'when pushing' are 'a forbidden'.
    let stack = Stack::start();
    for scope in [
        "repository:mygroup/myproject/app:pull",
        "repository:public/app:push",
        "registry:catalog:*",
    ] {
        let reply = get(&auth(&stack, &format!("&scope={scope}"))).send();
        assert_eq!(reply.status, 403, "{scope}: {}", reply.body);
        assert_eq!(reply.error_code(), "DENIED");
        assert_eq!(reply.error_message(), "access forbidden");
    }
    // A real client pulling a private project anonymously fails.
    let target = format!("docker://{}/mygroup/myproject/app:v1", stack.gateway.host);
    let (ok, out) = skopeo_as(None, &["inspect", &target]);
    assert!(!ok, "{out}");
    // Public pulls still work anonymously; a signed-in caller keeps down-scoping.
    let reply = get(&auth(&stack, "&scope=repository:public/app:pull,push")).send();
    assert_eq!(reply.status, 200, "{}", reply.body);
    let token = stack.token("gus", GUS_PAT, &["repository:mygroup/myproject/app:pull"]);
    assert!(Stack::granted(&token).is_empty());
}

#[test]
fn a_write_registry_only_token_pushes_but_cannot_pull_and_no_ability_is_403() {
    // lib/gitlab/auth.rb abilities_for_scopes: write_registry -> create_container_image only,
    // read_registry -> read_container_image. As in GitLab, such a token cannot finish a real
    // client's push (clients need pull to check blobs).
    let stack = Stack::start();
    let token = stack.token(
        "alice",
        ALICE_WRITE_ONLY_PAT,
        &["repository:mygroup/myproject/app:pull,push"],
    );
    assert_eq!(
        Stack::granted(&token),
        vec!["repository:mygroup/myproject/app:push"]
    );
    let dir = tempfile::tempdir().unwrap();
    let image = OciImage::create(dir.path().join("image"), 32 * 1024);
    assert!(
        image
            .push_to(
                &stack.gateway.host,
                "mygroup/myproject/app",
                "carol",
                CAROL_API_PAT
            )
            .0
    );
    let target = format!("docker://{}/mygroup/myproject/app:v1", stack.gateway.host);
    let (ok, out) = skopeo_as(
        Some(&format!("alice:{ALICE_WRITE_ONLY_PAT}")),
        &["inspect", &target],
    );
    assert!(!ok, "a write_registry-only token pulled: {out}");
    // CRAS#execute `has_registry_ability?`: a token with none gets 403, not 401.
    let reply = get(&auth(&stack, ""))
        .basic("alice", ALICE_ADMIN_MODE_PAT)
        .send();
    assert_eq!(
        (reply.status, reply.error_code()),
        (403, "DENIED".to_owned()),
        "{}",
        reply.body
    );
}

#[test]
fn an_unknown_or_missing_service_gets_an_empty_404() {
    // app/controllers/jwt_controller.rb #auth: `return head :not_found unless service`.
    let stack = Stack::start();
    for url in [
        format!("{}/jwt/auth?service=other", stack.gateway.url),
        format!(
            "{}/jwt/auth?scope=repository:public/app:pull",
            stack.gateway.url
        ),
    ] {
        let reply = get(&url).basic("alice", ALICE_PAT).send();
        assert_eq!(reply.status, 404, "{url}: {}", reply.body);
        assert_eq!(reply.body, "", "{url}");
    }
}

#[test]
fn tokens_carry_gitlabs_auth_type_user_and_access_meta_claims() {
    // CRAS#authorized_token: auth_type, user (user_info_token), access[].meta
    // (CRAS.access_metadata: project_path, project_id, root_namespace_id).
    let stack = Stack::start();
    let token = stack.token(
        "alice",
        ALICE_PAT,
        &["repository:mygroup/myproject/app:pull"],
    );
    let claims = jwt_part(&token, 1);
    assert_eq!(claims["auth_type"], "personal_access_token");
    let meta = &claims["access"][0]["meta"];
    assert_eq!(meta["project_path"], "mygroup/myproject");
    assert!(meta["project_id"].as_u64().is_some(), "{claims}");
    assert!(meta["root_namespace_id"].as_u64().is_some(), "{claims}");
    let user = jwt_part(claims["user"].as_str().unwrap(), 1);
    assert_eq!(user["user_info"]["username"], "alice");
    assert_eq!(user["user_info"]["token_type"], "personal_access_token");
    assert!(user["user_info"]["user_id"].as_u64().is_some());

    let token = stack.token("alice", ALICE_PASSWORD, &[]);
    assert_eq!(jwt_part(&token, 1)["auth_type"], "gitlab_or_ldap");
    let token = stack.token("gitlab+deploy-token-1", DEPLOY_READ_ONLY, &[]);
    let claims = jwt_part(&token, 1);
    assert_eq!(claims["auth_type"], "deploy_token");
    let user = jwt_part(claims["user"].as_str().unwrap(), 1);
    assert!(user["user_info"]["deploy_token_id"].as_u64().is_some());
    let reply = get(&auth(&stack, "&scope=repository:public/app:pull")).send();
    let claims = jwt_part(reply.json()["token"].as_str().unwrap(), 1);
    assert_eq!(claims["auth_type"], "none");
    assert!(jwt_part(claims["user"].as_str().unwrap(), 1)["user_info"].is_null());
}
