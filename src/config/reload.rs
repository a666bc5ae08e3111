//! What a reload can and cannot change.
//!
//! Users, groups, projects and their tokens are swapped in place; the TLS certificate is
//! re-read from its (unchanged) paths by the server itself. Everything else (addresses,
//! TLS files, the upstream, the signing key, limits, logging) is bound to listeners, clients and
//! keys built at start-up: a change there is reported as needing a restart, never half-applied.

use super::Config;

/// The keys whose change in `new` only takes effect after a restart.
pub fn changes_needing_restart(old: &Config, new: &Config) -> Vec<&'static str> {
    let mut changed = Vec::new();
    let mut compare = |key: &'static str, a: String, b: String| {
        if a != b {
            changed.push(key);
        }
    };
    compare("listen", old.listen.to_string(), new.listen.to_string());
    compare(
        "public_url",
        old.public_url.origin(),
        new.public_url.origin(),
    );
    compare("tls", format!("{:?}", old.tls), format!("{:?}", new.tls));
    compare(
        "upstream",
        format!("{:?}", old.upstream),
        format!("{:?}", new.upstream),
    );
    compare(
        "token",
        format!("{:?}", old.token),
        format!("{:?}", new.token),
    );
    compare(
        "server",
        format!("{:?}", old.server),
        format!("{:?}", new.server),
    );
    compare(
        "push_grace",
        format!("{:?}", old.push_grace),
        format!("{:?}", new.push_grace),
    );
    compare(
        "brute_force",
        format!("{:?}", old.brute_force),
        format!("{:?}", new.brute_force),
    );
    compare(
        "metrics",
        format!("{:?}", old.metrics_listen),
        format!("{:?}", new.metrics_listen),
    );
    compare(
        "audit",
        format!("{:?}", old.audit),
        format!("{:?}", new.audit),
    );
    compare(
        "log",
        format!("{:?}{:?}", old.log_format, old.log_level),
        format!("{:?}{:?}", new.log_format, new.log_level),
    );
    compare(
        "federation",
        format!("{:?}", old.federation),
        format!("{:?}", new.federation),
    );
    compare(
        "ci",
        format!("{:?}", old.ci_signing_key),
        format!("{:?}", new.ci_signing_key),
    );
    compare(
        "shared_state",
        format!(
            "{:?}",
            old.shared_state
                .as_ref()
                .map(|s| (&s.redis, &s.key_prefix, s.timeout))
        ),
        format!(
            "{:?}",
            new.shared_state
                .as_ref()
                .map(|s| (&s.redis, &s.key_prefix, s.timeout))
        ),
    );
    compare("page", format!("{:?}", old.page), format!("{:?}", new.page));
    changed
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn load(text: &str) -> Config {
        Config::from_yaml(text, Path::new("/etc/gateway.yaml"), &|_| None).unwrap()
    }

    #[test]
    fn only_settings_outside_the_directory_need_a_restart() {
        let base = "public_url: https://r.example\nupstream: { url: http://127.0.0.1:5000 }\ntoken: { signing_key: k, certificate: c }\n";
        let old = load(base);
        let users = load(&format!("{base}users: [{{ username: alice }}]\n"));
        assert!(changes_needing_restart(&old, &users).is_empty());
        let moved = load(
            &base
                .replace("127.0.0.1:5000", "127.0.0.1:5001")
                .replace("r.example", "s.example"),
        );
        assert_eq!(
            changes_needing_restart(&old, &moved),
            vec!["public_url", "upstream"]
        );
    }
}
