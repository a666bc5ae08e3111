//! `${VAR}` expansion in string values of `gateway.yaml`.
//!
//! Expansion happens on parsed string scalars, never on the raw text, so a value taken from the
//! environment can not change the structure of the file. `$${` writes a literal `${`; a lone
//! `$` (as in a bcrypt hash `$2y$05$...`) is left alone.

use serde_yaml::Value;

use super::Problem;

/// Expand every `${VAR}` in the string values of `value`, recording a problem (with the key)
/// for each variable that is not set.
pub fn expand_tree(
    value: &mut Value,
    key: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
    problems: &mut Vec<Problem>,
) {
    let mut path = key.to_owned();
    expand_at(value, &mut path, lookup, problems);
}

/// [`expand_tree`] with the key in one buffer, grown and cut back as the walk goes: a large
/// directory has millions of nodes, and a key string made for each was most of the walk.
fn expand_at(
    value: &mut Value,
    key: &mut String,
    lookup: &dyn Fn(&str) -> Option<String>,
    problems: &mut Vec<Problem>,
) {
    use std::fmt::Write;
    match value {
        Value::String(text) => match expand(text, lookup) {
            Ok(Some(expanded)) => *text = expanded,
            Ok(None) => {}
            Err(message) => problems.push(Problem::new(key.as_str(), message)),
        },
        Value::Sequence(items) => {
            let len = key.len();
            for (index, item) in items.iter_mut().enumerate() {
                let _ = write!(key, "[{index}]");
                expand_at(item, key, lookup, problems);
                key.truncate(len);
            }
        }
        Value::Mapping(map) => {
            let len = key.len();
            for (name, item) in map.iter_mut() {
                if !key.is_empty() {
                    key.push('.');
                }
                match name {
                    Value::String(s) => key.push_str(s),
                    other => key.push_str(serde_yaml::to_string(other).unwrap_or_default().trim()),
                }
                expand_at(item, key, lookup, problems);
                key.truncate(len);
            }
        }
        Value::Tagged(tagged) => expand_at(&mut tagged.value, key, lookup, problems),
        Value::Null | Value::Bool(_) | Value::Number(_) => {}
    }
}

/// Expand one string. `Ok(None)` when it holds nothing to expand (the common case).
pub fn expand(
    text: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<Option<String>, String> {
    if !text.contains("${") {
        return Ok(None);
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let after = &rest[at..];
        if let Some(literal) = after.strip_prefix("$${") {
            out.push_str("${");
            rest = literal;
        } else if let Some(open) = after.strip_prefix("${") {
            let end = open
                .find('}')
                .ok_or_else(|| format!("unterminated ${{ in {text:?}"))?;
            let name = &open[..end];
            let valid =
                !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
            if !valid {
                return Err(format!("invalid variable name {name:?} in ${{...}}"));
            }
            let value =
                lookup(name).ok_or_else(|| format!("environment variable {name} is not set"))?;
            out.push_str(&value);
            rest = &open[end + 1..];
        } else {
            out.push('$');
            rest = &after[1..];
        }
    }
    out.push_str(rest);
    Ok(Some(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "HOST" => Some("registry.example.com".into()),
            "PORT" => Some("4567".into()),
            _ => None,
        }
    }

    #[test]
    fn expands_variables_and_leaves_dollars_alone() {
        assert_eq!(
            expand("https://${HOST}:${PORT}", &env).unwrap().as_deref(),
            Some("https://registry.example.com:4567")
        );
        assert_eq!(expand("$2y$05$abc", &env).unwrap(), None);
        assert_eq!(
            expand("cost $5 ${PORT}", &env).unwrap().as_deref(),
            Some("cost $5 4567")
        );
        assert_eq!(
            expand("$${HOST}", &env).unwrap().as_deref(),
            Some("${HOST}")
        );
    }

    #[test]
    fn names_the_missing_variable() {
        assert_eq!(
            expand("${NOPE}", &env).unwrap_err(),
            "environment variable NOPE is not set"
        );
        assert!(expand("${HOST", &env).unwrap_err().contains("unterminated"));
        assert!(expand("${A-B}", &env)
            .unwrap_err()
            .contains("invalid variable name"));
    }

    #[test]
    fn records_the_key_of_each_problem() {
        let mut value: Value =
            serde_yaml::from_str("a: ${HOST}\nlist: [x, '${MISSING}']\n").unwrap();
        let mut problems = Vec::new();
        expand_tree(&mut value, "", &env, &mut problems);
        assert_eq!(value["a"], Value::String("registry.example.com".into()));
        assert_eq!(problems.len(), 1);
        assert_eq!(problems[0].key, "list[1]");
    }
}
