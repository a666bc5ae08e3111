#!/usr/bin/env python3
"""Generate a gateway.yaml with a large directory (standard library only), for bench/run.sh's
directory-scale rows.

  directory.py OUT LISTEN_PORT UPSTREAM PROJECTS USERS TOKENS PAT DEPLOY_SECRET PASSWORD_HASH

PROJECTS projects in PROJECTS/100 groups (at least 1), each with 3 members; USERS users, the
first tenth with a password (all the same bcrypt hash: making 10,000 would take hours); TOKENS
tokens, half personal access tokens spread over the users, half deploy tokens spread over the
projects. Beside them the benchmark's own identities, the same whatever the size: alice (PAT
with secret PAT, read+write) and bob (PASSWORD_HASH), developers of mygroup/myproject, which
also holds the deploy token gitlab+deploy-token-bench (secret DEPLOY_SECRET, read+write). The
other token digests are of random secrets nobody knows.
"""
import hashlib
import os
import sys


def sha(text):
    return hashlib.sha256(text.encode()).hexdigest()


def main():
    out, port, upstream, projects, users, tokens, pat, deploy, pw_hash = sys.argv[1:]
    projects, users, tokens = int(projects), int(users), int(tokens)
    groups = max(1, projects // 100)
    pats, deploys = tokens // 2, tokens - tokens // 2
    salt = os.urandom(16).hex()
    w = []
    w.append(f'listen: "127.0.0.1:{port}"\n')
    w.append(f'public_url: "http://127.0.0.1:{port}"\n')
    w.append(f'upstream: {{ url: "{upstream}" }}\n')
    w.append("token: { issuer: portcullis, service: container_registry, expiry: 1h, "
             "signing_key: token.key, certificate: token.crt }\n")
    w.append("users:\n")
    w.append("  - username: alice\n    personal_access_tokens:\n")
    w.append(f'      - {{ name: bench, token_sha256: "{sha(pat)}", scopes: [read_registry, write_registry] }}\n')
    w.append(f'  - username: bob\n    password_hash: "{pw_hash}"\n')
    for u in range(users):
        w.append(f"  - username: user{u}\n")
        if u < users // 10:
            w.append(f'    password_hash: "{pw_hash}"\n')
        mine = range(u, pats, users) if users else ()
        if mine:
            w.append("    personal_access_tokens:\n")
            for t in mine:
                w.append(f'      - {{ name: t{t}, token_sha256: "{sha(salt + str(t))}", scopes: [read_registry] }}\n')
    w.append("groups:\n")
    for g in range(groups):
        w.append(f"  - {{ path: group{g}, visibility: private, members: {{ user{g % max(users, 1)}: reporter }} }}\n")
    w.append("projects:\n")
    w.append("  - path: mygroup/myproject\n    visibility: private\n")
    w.append("    members: { alice: developer, bob: developer }\n")
    w.append("    deploy_tokens:\n")
    w.append(f'      - {{ username: gitlab+deploy-token-bench, token_sha256: "{sha(deploy)}", '
             "scopes: [read_registry, write_registry] }\n")
    for p in range(projects):
        members = ", ".join(f"user{(p * 7 + k) % users}: developer" for k in range(3)) if users else ""
        w.append(f"  - path: group{p % groups}/project{p}\n    visibility: private\n")
        w.append(f"    members: {{ {members} }}\n")
        mine = range(p, deploys, projects) if projects else ()
        if mine:
            w.append("    deploy_tokens:\n")
            for t in mine:
                w.append(f'      - {{ username: gitlab+deploy-token-{t}, token_sha256: "{sha(salt + "d" + str(t))}", '
                         "scopes: [read_registry] }\n")
    with open(out, "w") as f:
        f.write("".join(w))


if __name__ == "__main__":
    main()
