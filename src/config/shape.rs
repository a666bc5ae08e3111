//! From the YAML tree to [`GatewayFile`], reporting every key of the wrong shape at once.
//!
//! serde stops at its first error. To list them all, each error is recorded under the key it
//! blames (a missing `token.certificate` is `token.certificate`, not its parent `token`), that
//! key is taken out of the tree (or, when it is required, given a stand-in value), and the tree
//! is read again. The messages speak YAML (a whole number, a mapping), never Rust types.

use std::collections::HashMap;

use serde_path_to_error::Segment;
use serde_yaml::{Mapping, Value};

use super::file::GatewayFile;
use super::Problem;

/// Each round fixes one key, so this bounds the work a pathological file can cause.
const MAX_ROUNDS: usize = 256;

/// One step of a key's path.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Step {
    Key(String),
    Index(usize),
}

/// What reading the tree found: the file once every blamed key was dropped or stood in for
/// (`None` if that failed), and those keys: validation problems at or under them are not real.
pub(super) struct Shape {
    pub(super) file: Option<GatewayFile>,
    pub(super) blamed: Vec<String>,
}

pub(super) fn read(mut tree: Value, problems: &mut Vec<Problem>) -> Shape {
    let mut blamed: Vec<Vec<Step>> = Vec::new();
    let mut attempts: HashMap<Vec<Step>, usize> = HashMap::new();
    let mut file = None;
    for _ in 0..MAX_ROUNDS {
        // Read from a borrow: a copy of the tree each round was the biggest allocation of a
        // large directory's load.
        let error = match serde_path_to_error::deserialize::<_, GatewayFile>(&tree) {
            Ok(read) => {
                file = Some(read);
                break;
            }
            Err(error) => error,
        };
        let mut path: Vec<Step> = Vec::new();
        for segment in error.path().iter() {
            match segment {
                Segment::Seq { index } => path.push(Step::Index(*index)),
                Segment::Map { key } => path.push(Step::Key(key.clone())),
                Segment::Enum { .. } | Segment::Unknown => {}
            }
        }
        let message = error.into_inner().to_string();
        let missing = field_in(&message, "missing field `");
        if let Some(field) = &missing {
            path.push(Step::Key(field.clone()));
        }
        let repeated = blamed.iter().any(|b| path.starts_with(b));
        if !repeated {
            problems.push(Problem::new(key_of(&path), plain(&message)));
            blamed.push(path.clone());
        }
        let fixed = if message.starts_with("unknown field") {
            remove(&mut tree, &path)
        } else if missing.is_some() || repeated || matches!(path.last(), Some(Step::Index(_))) {
            let attempt = attempts.entry(path.clone()).or_default();
            *attempt += 1;
            stand_in(*attempt).is_some_and(|value| put(&mut tree, &path, value))
        } else {
            // A wrong value of an optional key: without it, the rest of the file can be read.
            remove(&mut tree, &path)
        };
        if !fixed || path.is_empty() {
            break;
        }
    }
    Shape {
        file,
        blamed: blamed.iter().map(|p| key_of(p)).collect(),
    }
}

/// Values tried in turn for a required key, until one has the type its struct wants.
fn stand_in(attempt: usize) -> Option<Value> {
    match attempt {
        1 => Some(Value::String(String::new())),
        2 => Some(Value::Mapping(Mapping::new())),
        3 => Some(Value::Sequence(Vec::new())),
        4 => Some(Value::Bool(false)),
        5 => Some(Value::Number(0.into())),
        _ => None,
    }
}

/// `users[0].personal_access_tokens[1].name`.
fn key_of(path: &[Step]) -> String {
    let mut key = String::new();
    for step in path {
        match step {
            Step::Key(name) if key.is_empty() => key.push_str(name),
            Step::Key(name) => {
                key.push('.');
                key.push_str(name);
            }
            Step::Index(index) => key.push_str(&format!("[{index}]")),
        }
    }
    key
}

/// The name between backticks after `prefix`, as serde writes it.
fn field_in(message: &str, prefix: &str) -> Option<String> {
    let rest = message.strip_prefix(prefix)?;
    Some(rest[..rest.find('`')?].to_owned())
}

/// serde's message in the words of a YAML file.
fn plain(message: &str) -> String {
    if message.starts_with("missing field") {
        return "is required but missing".to_owned();
    }
    if let Some(unknown) = field_in(message, "unknown field `") {
        let expected: Vec<&str> = message
            .split_once("expected ")
            .map(|(_, list)| list.split(", ").map(|n| n.trim_matches('`')).collect())
            .unwrap_or_default();
        let near = expected
            .iter()
            .filter(|name| distance(name, &unknown) <= if unknown.len() > 4 { 2 } else { 1 })
            .min_by_key(|name| distance(name, &unknown));
        return match near {
            Some(name) => format!("{message}; did you mean `{name}`?"),
            None => message.to_owned(),
        };
    }
    let mut text = message.to_owned();
    for (rust, yaml) in [
        ("expected usize", "expected a whole number of 0 or more"),
        ("expected u64", "expected a whole number of 0 or more"),
        ("expected u32", "expected a whole number of 0 or more"),
        ("expected u16", "expected a whole number of 0 or more"),
        ("expected a sequence", "expected a list"),
        ("expected a boolean", "expected true or false"),
        ("unit value", "nothing"),
    ] {
        text = text.replace(rust, yaml);
    }
    match text.strip_suffix("expected a map") {
        Some(start) => format!("{start}expected a mapping"),
        None => text,
    }
}

/// Levenshtein distance, for "did you mean".
pub(crate) fn distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let above = row[j + 1];
            row[j + 1] = (above + 1)
                .min(row[j] + 1)
                .min(diagonal + usize::from(ca != *cb));
            diagonal = above;
        }
    }
    row[b.len()]
}

/// The parent of `path`'s last step, walking from the root.
fn parent<'a>(tree: &'a mut Value, path: &[Step]) -> Option<&'a mut Value> {
    let mut node = tree;
    for step in path.get(..path.len().checked_sub(1)?)? {
        node = match step {
            Step::Key(key) => node.as_mapping_mut()?.get_mut(key.as_str())?,
            Step::Index(index) => node.as_sequence_mut()?.get_mut(*index)?,
        };
    }
    Some(node)
}

fn remove(tree: &mut Value, path: &[Step]) -> bool {
    match (parent(tree, path), path.last()) {
        (Some(Value::Mapping(map)), Some(Step::Key(key))) => {
            map.shift_remove(key.as_str()).is_some()
        }
        _ => false,
    }
}

fn put(tree: &mut Value, path: &[Step], value: Value) -> bool {
    match (parent(tree, path), path.last()) {
        (Some(Value::Mapping(map)), Some(Step::Key(key))) => {
            map.insert(Value::String(key.clone()), value);
            true
        }
        (Some(Value::Sequence(list)), Some(Step::Index(index))) if *index < list.len() => {
            list[*index] = value;
            true
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problems(yaml: &str) -> Vec<String> {
        let mut found = Vec::new();
        read(serde_yaml::from_str(yaml).unwrap(), &mut found);
        found.iter().map(|p| p.to_string()).collect()
    }

    #[test]
    fn every_unknown_key_is_listed_with_a_suggestion() {
        let found = problems(
            "public_url: x\nupstrem: { url: y }\nupstream: { url: y, timeout: 1 }\ntoken: { signing_key: k, certificate: c }\nfoo: 1\n",
        );
        assert_eq!(found.len(), 3, "{found:#?}");
        assert!(found[0].starts_with("upstrem: unknown field `upstrem`"));
        assert!(found[0].ends_with("did you mean `upstream`?"), "{found:?}");
        assert!(found
            .iter()
            .any(|p| p.starts_with("upstream.timeout: unknown field")));
        assert!(found.iter().any(|p| p.starts_with("foo: unknown field")));
    }

    #[test]
    fn a_missing_key_is_blamed_itself_and_types_are_named_in_yaml_words() {
        let found = problems(
            "public_url: x\nupstream: { url: y }\ntoken: { signing_key: k }\ntls: a\nserver: { workers: -1, idle_timeout: 5 }\nusers: [{ username: a, personal_access_tokens: [{ name: t, scopes: [] }] }]\n",
        );
        let expected = [
            "token.certificate: is required but missing",
            "tls: invalid type: string \"a\", expected a mapping with cert and key",
            "server.workers: invalid value: integer `-1`, expected a whole number of 0 or more",
            "server.idle_timeout: 5 has no unit: write a duration such as 5m or 5s",
            "users[0].personal_access_tokens[0].token_sha256: is required but missing",
        ];
        for line in expected {
            assert!(
                found.iter().any(|p| p.starts_with(line)),
                "no {line:?} in {found:#?}"
            );
        }
        assert_eq!(found.len(), expected.len(), "{found:#?}");
        assert!(!found
            .iter()
            .any(|p| p.contains("struct") || p.contains("usize")));
    }
}
