//! Which grants an ID token's claims earn: pure matching, no I/O.
//!
//! A rule matches when every claim it lists is present and matches its pattern; every rule
//! that matches adds its grant (the union). A pattern is the claim's exact text, where `*`
//! stands for any run of characters (`/` included): `myorg/*`, `refs/heads/release-*`.
//! Nested claims are named with `/` between the levels (`kubernetes.io/namespace`); a claim
//! that is a list matches when one of its items does; `true`, `false` and numbers match as
//! the text they are written as.

use serde_json::{Map, Value};

use crate::auth::scope::{Actions, RepositoryName};

/// What a matching rule grants: `actions` on every repository whose owning project is at or
/// below `path`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    pub path: RepositoryName,
    pub actions: Actions,
}

/// One claim a rule wants, and the glob its value must match.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimPattern {
    pub claim: String,
    pattern: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub claims: Vec<ClaimPattern>,
    pub grant: Grant,
}

/// The grants a token earned, and the claims that earned them (for the audit log).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Earned {
    pub grants: Vec<Grant>,
    /// `claim=value` of every claim a matching rule looked at, without duplicates.
    pub matched: Vec<String>,
}

/// Why no rule matched, for the log: each rule's first claim that failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NoMatch {
    pub failed: Vec<String>,
}

impl ClaimPattern {
    pub fn new(claim: String, pattern: String) -> ClaimPattern {
        ClaimPattern { claim, pattern }
    }

    pub fn pattern(&self) -> &str {
        &self.pattern
    }

    /// The claim's value as text, if it is there and matches; `Err` with what it was.
    fn check(&self, claims: &Map<String, Value>) -> Result<String, String> {
        let value =
            lookup(claims, &self.claim).ok_or_else(|| format!("{} is absent", self.claim))?;
        let texts: Vec<String> = match value {
            Value::Array(items) => items.iter().filter_map(scalar).collect(),
            other => scalar(other).into_iter().collect(),
        };
        texts
            .iter()
            .find(|t| glob(&self.pattern, t))
            .map(|t| format!("{}={t}", self.claim))
            .ok_or_else(|| {
                format!(
                    "{} is {:?}, not {:?}",
                    self.claim,
                    texts.join(","),
                    self.pattern
                )
            })
    }
}

/// A top-level claim, or a nested one named with `/` between the levels.
fn lookup<'a>(claims: &'a Map<String, Value>, name: &str) -> Option<&'a Value> {
    if let Some(value) = claims.get(name) {
        return Some(value);
    }
    let mut parts = name.split('/');
    let mut value = claims.get(parts.next()?)?;
    for part in parts {
        value = value.as_object()?.get(part)?;
    }
    Some(value)
}

fn scalar(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Bool(b) => Some(b.to_string()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// `*` matches any run of characters; everything else itself. Linear in practice: the classic
/// greedy match with one backtrack point, never exponential.
pub fn glob(pattern: &str, text: &str) -> bool {
    let (p, t): (Vec<char>, Vec<char>) = (pattern.chars().collect(), text.chars().collect());
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && p[pi] == '*' {
            star = Some((pi, ti));
            pi += 1;
        } else if pi < p.len() && p[pi] == t[ti] {
            pi += 1;
            ti += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

/// Every rule that matches `claims` adds its grant.
pub fn evaluate(rules: &[Rule], claims: &Map<String, Value>) -> Result<Earned, NoMatch> {
    let mut earned = Earned::default();
    let mut failed = Vec::new();
    for (i, rule) in rules.iter().enumerate() {
        let checked: Result<Vec<String>, String> =
            rule.claims.iter().map(|c| c.check(claims)).collect();
        match checked {
            Ok(matched) => {
                earned.grants.push(rule.grant.clone());
                for m in matched {
                    if !earned.matched.contains(&m) {
                        earned.matched.push(m);
                    }
                }
            }
            Err(why) => failed.push(format!("rules[{i}]: {why}")),
        }
    }
    if earned.grants.is_empty() {
        Err(NoMatch { failed })
    } else {
        Ok(earned)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::scope::Action;

    #[test]
    fn globs_match_runs_and_nothing_else() {
        for (pattern, text, expected) in [
            ("myorg/app", "myorg/app", true),
            ("myorg/app", "myorg/app2", false),
            ("myorg/*", "myorg/app", true),
            ("myorg/*", "myorg/a/b", true),
            ("myorg/*", "myorgx/app", false),
            ("refs/heads/release-*", "refs/heads/release-1.2", true),
            ("*main", "refs/heads/main", true),
            ("a*b*c", "axxbyyc", true),
            ("a*b*c", "axxbyy", false),
            ("", "", true),
            ("x", "", false),
        ] {
            assert_eq!(glob(pattern, text), expected, "{pattern:?} {text:?}");
        }
        // No exponential blow-up on adversarial input.
        let long = "a".repeat(5000);
        assert!(!glob("*a*a*a*a*a*a*a*b", &long));
    }

    fn rule(claims: &[(&str, &str)], path: &str, actions: &[Action]) -> Rule {
        Rule {
            claims: claims
                .iter()
                .map(|(c, p)| ClaimPattern::new((*c).into(), (*p).into()))
                .collect(),
            grant: Grant {
                path: RepositoryName::parse(path).unwrap(),
                actions: Actions::of(actions),
            },
        }
    }

    #[test]
    fn every_matching_rule_adds_its_grant_and_a_miss_names_the_claim() {
        let rules = vec![
            rule(
                &[("repository", "myorg/app"), ("ref", "refs/heads/main")],
                "g/app",
                &[Action::Pull, Action::Push],
            ),
            rule(&[("repository_owner", "myorg")], "g", &[Action::Pull]),
            rule(&[("kubernetes.io/namespace", "ci")], "k", &[Action::Pull]),
        ];
        let claims: Map<String, Value> = serde_json::from_str(
            r#"{"repository":"myorg/app","ref":"refs/heads/main","repository_owner":"myorg","kubernetes.io":{"namespace":"ci"}}"#,
        )
        .unwrap();
        let earned = evaluate(&rules, &claims).unwrap();
        assert_eq!(earned.grants.len(), 3);
        assert!(earned.matched.contains(&"ref=refs/heads/main".to_owned()));
        let claims: Map<String, Value> = serde_json::from_str(
            r#"{"repository":"myorg/app","ref":"refs/heads/dev","aud":["x"]}"#,
        )
        .unwrap();
        let miss = evaluate(&rules, &claims).unwrap_err();
        assert_eq!(
            miss.failed[0],
            "rules[0]: ref is \"refs/heads/dev\", not \"refs/heads/main\""
        );
        assert_eq!(miss.failed[1], "rules[1]: repository_owner is absent");
    }
}
