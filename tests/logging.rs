//! Log lines cannot be forged or made to keep a secret through what a client sends.

use crate::support;

use support::gateway::secrets::*;
use support::http::{get, request};
use support::stack::{RegistryAuth, Stack, StackOptions};

fn percent(text: &str) -> String {
    text.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

#[test]
fn client_strings_cannot_forge_log_lines_and_a_pasted_token_is_not_logged() {
    for auth in [RegistryAuth::TrustsGateway, RegistryAuth::None] {
        let stack = Stack::with(StackOptions {
            registry_auth: auth,
            ..StackOptions::default()
        });
        let url = format!("{}/jwt/auth?service=container_registry", stack.gateway.url);
        // A newline in the Basic username, the form username and the account parameter.
        let forged = "evil\nINFO forged";
        assert_eq!(get(&url).basic(forged, "x").send().status, 401);
        let form = format!(
            "grant_type=password&service=container_registry&username={}&password=x",
            percent(forged)
        );
        assert_eq!(request("POST", &url).body(&form).send().status, 401);
        let reply = get(&format!("{url}&account={}", percent(forged))).send();
        assert_eq!(reply.status, 403);
        // A token pasted into the username field (and the password into the password field).
        assert_eq!(get(&url).basic(ALICE_PAT, "x").send().status, 401);
        let form = format!(
            "grant_type=password&service=container_registry&username={ALICE_READ_ONLY_PAT}&password=x"
        );
        assert_eq!(request("POST", &url).body(&form).send().status, 401);

        let log = stack.gateway.log();
        assert!(
            log.matches("login refused").count() >= 4,
            "the refusals are logged:\n{log}"
        );
        for line in log.lines() {
            assert!(
                !line.trim_start().starts_with("INFO forged"),
                "forged line:\n{log}"
            );
        }
        for secret in [ALICE_PAT, ALICE_READ_ONLY_PAT] {
            assert!(!log.contains(secret), "{secret} in the log:\n{log}");
        }
        // The operator can still tell the attempts apart, and sees known names.
        assert!(log.contains("user_hash="), "{log}");
        assert_eq!(get(&url).basic("alice", "wrong").send().status, 401);
        assert!(stack.gateway.log().contains("user=\"alice\""));
    }
}
