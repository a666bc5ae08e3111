//! Scope strings and repository names, as `/jwt/auth?scope=...` and `/v2/<name>/...` bring them.
//!
//! Never panics, and what parses means one thing: a parsed scope printed and parsed again is
//! the same scope, and a valid name is valid in both grammars and lies within itself.
#![no_main]

use libfuzzer_sys::fuzz_target;
use portcullis::auth::scope::{RepositoryName, Resource, Scope};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(scope) = Scope::parse(text) {
        let printed = scope.to_string();
        let again = Scope::parse(&printed)
            .unwrap_or_else(|e| panic!("{printed:?} (from {text:?}) does not parse again: {e}"));
        assert_eq!(again, scope, "{text:?} printed as {printed:?}");
        if let Resource::Repository(name) = &scope.resource {
            assert!(name.is_within(name));
        }
    }
    // The query string's `scope` parameters, each possibly holding several scopes.
    if let Ok(scopes) = Scope::parse_all(text.split('&')) {
        for (i, a) in scopes.iter().enumerate() {
            assert!(
                scopes[i + 1..].iter().all(|b| b.resource != a.resource),
                "{text:?}: scopes on one resource were not merged"
            );
        }
    }
    if let Ok(name) = RepositoryName::parse(text) {
        assert!(name.as_str().len() <= 255);
        assert!(
            !name.as_str().contains(':'),
            "{text:?}: a path name with a colon"
        );
        assert_eq!(RepositoryName::parse_in_scope(text).as_ref(), Ok(&name));
    }
    if let Ok(name) = RepositoryName::parse_in_scope(text) {
        assert!(name.as_str().len() <= 255);
    }
});
