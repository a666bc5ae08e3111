"""python-gitlab (a real GitLab client) driving portcullis's token API.

Run by tests/token_api.rs with the venv scripts/install-deps makes (tests/python/.venv):
    token_api.py create URL ADMIN_TOKEN PROJECT
        as the admin: gl.auth(), list personal tokens, make a personal token for carol;
        as carol (with it): make, list and rotate a deploy token and a project access token
        of PROJECT, rotate her personal token; prints the tokens made as one JSON object.
    token_api.py revoke URL TOKEN PROJECT PAT_ID DEPLOY_ID ACCESS_ID
        delete them all through python-gitlab.
Every step asserts what GitLab would answer; any failure exits non-zero with the reason.
"""
import json
import sys

import gitlab


def check(condition, what):
    if not condition:
        sys.exit(f"FAILED: {what}")


def create(url, admin_token, project_path):
    admin = gitlab.Gitlab(url, private_token=admin_token)
    admin.auth()
    check(admin.user.username == "ada", f"gl.auth() user is {admin.user.username}")
    check(admin.user.is_admin, "ada is an admin")
    listed = admin.personal_access_tokens.list(get_all=True)
    check(any(t.name == "ada" for t in listed), "the admin sees config tokens")

    carol = admin.users.list(username="carol")[0]
    user = admin.users.get(carol.id)
    check(user.username == "carol", "users.get(id)")
    pat = user.personal_access_tokens.create(
        {"name": "gitlab-py", "scopes": ["api", "read_registry", "write_registry"]}
    )
    check(pat.token.startswith("glpat-"), "a personal token's secret is shown once")

    gl = gitlab.Gitlab(url, private_token=pat.token)
    gl.auth()
    check(gl.user.username == "carol", "carol signs in with the new token")
    mine = gl.personal_access_tokens.list(get_all=True)
    check(any(t.id == pat.id for t in mine), "carol lists her new token")

    project = gl.projects.get(project_path)
    check(project.path_with_namespace == project_path, "projects.get(path)")

    deploy = project.deploytokens.create(
        {"name": "ci-deploy", "scopes": ["read_registry", "write_registry"]}
    )
    check(deploy.username.startswith("gitlab+deploy-token-"), "deploy username")
    check(any(t.id == deploy.id for t in project.deploytokens.list(get_all=True)), "deploy list")

    access = project.access_tokens.create(
        {"name": "bot", "scopes": ["api"], "access_level": 40}
    )
    check(access.access_level == 40, "access level")
    check(any(t.id == access.id for t in project.access_tokens.list(get_all=True)), "access list")
    old_access_secret = access.token
    rotated = project.access_tokens.rotate(access.id)
    check(rotated["token"] != old_access_secret, "rotation makes a new secret")
    check(rotated["id"] != access.id, "the successor has a new id")

    # Rotate a personal token: a second one of carol's (rotating the one in use would end
    # this session).
    spare = user.personal_access_tokens.create({"name": "spare", "scopes": ["read_registry"]})
    spare_rotated = admin.personal_access_tokens.rotate(spare.id)
    check(spare_rotated["token"] != spare.token, "personal token rotated")

    print(json.dumps({
        "pat": {"id": pat.id, "token": pat.token},
        "deploy": {"id": deploy.id, "username": deploy.username, "token": deploy.token},
        "access": {"id": rotated["id"], "token": rotated["token"], "old_token": old_access_secret},
        "spare": {"old_token": spare.token, "token": spare_rotated["token"]},
    }))


def revoke(url, token, project_path, pat_id, deploy_id, access_id):
    gl = gitlab.Gitlab(url, private_token=token)
    project = gl.projects.get(project_path)
    project.deploytokens.delete(int(deploy_id))
    check(all(t.id != int(deploy_id) or t.revoked
              for t in project.deploytokens.list(get_all=True)), "deploy token revoked")
    project.access_tokens.delete(int(access_id))
    gl.personal_access_tokens.delete(int(pat_id))
    check(all(t.id != int(pat_id) or t.revoked
              for t in gl.personal_access_tokens.list(get_all=True)), "personal token revoked")
    print("revoked")


if __name__ == "__main__":
    command, args = sys.argv[1], sys.argv[2:]
    {"create": create, "revoke": revoke}[command](*args)
