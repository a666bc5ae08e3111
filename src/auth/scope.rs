//! The scope grammar of the token protocol and repository names.
//!
//! `type[(class)]:name:action[,action]`. The name may carry a `host:port/` prefix, so a scope
//! is split on its FIRST and LAST colon, never on every colon. Parsing happens once, at the
//! edge; the types below cannot hold an invalid name.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Longest repository name distribution accepts.
const MAX_NAME_LEN: usize = 255;

/// A valid repository name: path components `[a-z0-9]+(?:(?:[._]|__|[-]*)[a-z0-9]+)*` joined
/// by `/`, optionally behind a registry host (`host[:port]/`) when it came from a scope.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RepositoryName(String);

/// Why a repository name was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("repository name is empty")]
    Empty,
    #[error("repository name is longer than {MAX_NAME_LEN} characters")]
    TooLong,
    #[error("invalid repository name component {0:?}: use lowercase letters, digits and single separators (. _ __ -)")]
    Component(String),
}

impl RepositoryName {
    /// A name as it appears in a `/v2/<name>/...` path: path components only.
    pub fn parse(name: &str) -> Result<Self, NameError> {
        check_length(name)?;
        // As bytes, as `DecodedPath::parse` splits the path: cheaper than `str::split`.
        for component in name.as_bytes().split(|&b| b == b'/') {
            if !is_path_component(component) {
                // Cut at an ASCII '/', the component is whole UTF-8: the lossy copy is exact.
                let component = String::from_utf8_lossy(component).into_owned();
                return Err(NameError::Component(component));
            }
        }
        Ok(RepositoryName(name.to_owned()))
    }

    /// A name as it may appear in a scope: path components, possibly behind a registry host.
    pub fn parse_in_scope(name: &str) -> Result<Self, NameError> {
        if let Some((first, rest)) = name.split_once('/') {
            if !is_path_component(first.as_bytes()) && is_domain(first) {
                check_length(name)?;
                RepositoryName::parse(rest)?;
                return Ok(RepositoryName(name.to_owned()));
            }
        }
        RepositoryName::parse(name)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// True when this name is `prefix` itself or lies below it (`prefix/...`).
    pub fn is_within(&self, prefix: &RepositoryName) -> bool {
        match self.0.strip_prefix(prefix.as_str()) {
            Some(rest) => rest.is_empty() || rest.starts_with('/'),
            None => false,
        }
    }
}

impl fmt::Display for RepositoryName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

fn check_length(name: &str) -> Result<(), NameError> {
    if name.is_empty() {
        Err(NameError::Empty)
    } else if name.len() > MAX_NAME_LEN {
        Err(NameError::TooLong)
    } else {
        Ok(())
    }
}

/// `[a-z0-9]+(?:(?:[._]|__|[-]*)[a-z0-9]+)*`, without a regex on the hot path.
fn is_path_component(bytes: &[u8]) -> bool {
    let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    let mut i = 0;
    loop {
        // One run of [a-z0-9]+.
        let start = i;
        while i < bytes.len() && alnum(bytes[i]) {
            i += 1;
        }
        if i == start {
            return false;
        }
        if i == bytes.len() {
            return true;
        }
        // One separator: '.', '_', '__', or '-'+.
        let sep_start = i;
        while i < bytes.len() && !alnum(bytes[i]) {
            i += 1;
        }
        match &bytes[sep_start..i] {
            b"." | b"_" | b"__" => {}
            dashes if dashes.iter().all(|&b| b == b'-') => {}
            _ => return false,
        }
    }
}

/// A registry host as it may prefix a name: DNS labels joined by '.', optional `:port`. As in
/// distribution's reference grammar, only a component with a '.' or a ':', or `localhost`,
/// counts as a host; anything else is a (possibly invalid) path component.
fn is_domain(text: &str) -> bool {
    if !(text.contains('.') || text.contains(':') || text == "localhost") {
        return false;
    }
    let (host, port) = match text.rsplit_once(':') {
        Some((host, port)) => (host, Some(port)),
        None => (text, None),
    };
    if let Some(port) = port {
        if port.is_empty() || port.len() > 5 || !port.bytes().all(|b| b.is_ascii_digit()) {
            return false;
        }
    }
    !host.is_empty()
        && host.split('.').all(|label| {
            let b = label.as_bytes();
            !b.is_empty()
                && b[0].is_ascii_alphanumeric()
                && b[b.len() - 1].is_ascii_alphanumeric()
                && b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'-')
        })
}

/// The actions of the protocol. Unknown action words are dropped: they grant nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Action {
    Pull,
    Push,
    Delete,
    /// `*`: every action (only `registry:catalog:*` and administrators use it).
    All,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Pull => "pull",
            Action::Push => "push",
            Action::Delete => "delete",
            Action::All => "*",
        }
    }

    fn parse(word: &str) -> Option<Action> {
        match word {
            "pull" => Some(Action::Pull),
            "push" => Some(Action::Push),
            "delete" => Some(Action::Delete),
            "*" => Some(Action::All),
            _ => None,
        }
    }
}

/// A small ordered set of actions.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Actions(u8);

impl Actions {
    pub const NONE: Actions = Actions(0);

    pub fn of(actions: &[Action]) -> Actions {
        actions.iter().fold(Actions::NONE, |set, a| set.with(*a))
    }

    fn bit(action: Action) -> u8 {
        1 << (action as u8)
    }

    pub fn with(self, action: Action) -> Actions {
        Actions(self.0 | Self::bit(action))
    }

    pub fn contains(self, action: Action) -> bool {
        self.0 & Self::bit(action) != 0
    }

    /// True when every action of `other` is in `self` (`*` covers everything).
    pub fn covers(self, other: Actions) -> bool {
        self.contains(Action::All) || self.0 & other.0 == other.0
    }

    pub fn union(self, other: Actions) -> Actions {
        Actions(self.0 | other.0)
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    pub fn iter(self) -> impl Iterator<Item = Action> {
        [Action::Pull, Action::Push, Action::Delete, Action::All]
            .into_iter()
            .filter(move |a| self.contains(*a))
    }
}

impl fmt::Display for Actions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let words: Vec<&str> = self.iter().map(Action::as_str).collect();
        f.write_str(&words.join(","))
    }
}

/// What a scope asks for.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Resource {
    /// `repository[(class)]:<name>`.
    Repository(RepositoryName),
    /// `registry:catalog`.
    Catalog,
    /// Any other resource type or registry resource: parsed, never granted.
    Other { kind: String, name: String },
}

impl Resource {
    /// The `type` of the resource in a token's `access` claim.
    pub fn kind(&self) -> &str {
        match self {
            Resource::Repository(_) => "repository",
            Resource::Catalog => "registry",
            Resource::Other { kind, .. } => kind,
        }
    }

    /// The `name` of the resource in a token's `access` claim.
    pub fn name(&self) -> &str {
        match self {
            Resource::Repository(name) => name.as_str(),
            Resource::Catalog => "catalog",
            Resource::Other { name, .. } => name,
        }
    }
}

/// One requested scope: a resource and the actions asked for on it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scope {
    pub resource: Resource,
    pub actions: Actions,
}

/// Why a scope string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScopeError {
    #[error("malformed scope {0:?}: expected type:name:action[,action]")]
    Malformed(String),
    #[error("invalid repository name in scope {scope:?}: {error}")]
    Name { scope: String, error: NameError },
}

impl Scope {
    /// Parse one scope, `type[(class)]:name:actions`.
    pub fn parse(text: &str) -> Result<Scope, ScopeError> {
        let malformed = || ScopeError::Malformed(text.to_owned());
        let (kind, rest) = text.split_once(':').ok_or_else(malformed)?;
        let (name, actions) = rest.rsplit_once(':').ok_or_else(malformed)?;
        let (bare_kind, has_class) = match kind.split_once('(') {
            Some((bare, class)) if class.ends_with(')') && class.len() > 1 => (bare, true),
            Some(_) => return Err(malformed()),
            None => (kind, false),
        };
        let valid_word =
            |w: &str| !w.is_empty() && w.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
        if !valid_word(bare_kind) || name.is_empty() {
            return Err(malformed());
        }
        // GitLab's `CRAS#process_scope` grants only the exact types `repository` and
        // `registry`: `repository(plugin)` is another type, parsed and granted nothing.
        let kind = if has_class { kind } else { bare_kind };
        let actions = Actions::of(
            &actions
                .split(',')
                .filter_map(|word| Action::parse(word.trim()))
                .collect::<Vec<_>>(),
        );
        let resource = match (kind, name) {
            // `ContainerRegistry::Path` downcases the name (`@path = path.to_s.downcase`).
            ("repository", name) => Resource::Repository(
                RepositoryName::parse_in_scope(&name.to_ascii_lowercase()).map_err(|error| {
                    ScopeError::Name {
                        scope: text.to_owned(),
                        error,
                    }
                })?,
            ),
            ("registry", "catalog") => Resource::Catalog,
            (kind, name) => Resource::Other {
                kind: kind.to_owned(),
                name: name.to_owned(),
            },
        };
        Ok(Scope { resource, actions })
    }

    /// Parse every scope of a request: each `scope` parameter may hold several, space separated.
    /// Scopes on the same resource are merged.
    pub fn parse_all<'a>(
        params: impl IntoIterator<Item = &'a str>,
    ) -> Result<Vec<Scope>, ScopeError> {
        let mut scopes: Vec<Scope> = Vec::new();
        for text in params.into_iter().flat_map(str::split_whitespace) {
            let scope = Scope::parse(text)?;
            match scopes.iter_mut().find(|s| s.resource == scope.resource) {
                Some(existing) => existing.actions = existing.actions.union(scope.actions),
                None => scopes.push(scope),
            }
        }
        Ok(scopes)
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}",
            self.resource.kind(),
            self.resource.name(),
            self.actions
        )
    }
}

/// One entry of a token's `access` claim, as the registry reads it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResourceAccess {
    #[serde(rename = "type")]
    pub kind: String,
    pub name: String,
    pub actions: Vec<String>,
    /// GitLab's `meta` block (`CRAS.access_metadata`): which project the repository belongs
    /// to. GitLab's own registry uses it for its metadata database; distribution ignores it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub meta: Option<AccessMeta>,
}

/// `CRAS.access_metadata`: `project_path` (lowercase), `project_id`, `root_namespace_id`.
///
/// GitLab's ids are database ids; the gateway has none, so its ids are stable numbers made
/// from the lowercase path (the first 53 bits of its SHA-256, safe as a JSON number): the
/// same path always gets the same id, across restarts and replicas.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessMeta {
    pub project_path: String,
    pub project_id: u64,
    pub root_namespace_id: u64,
}

impl AccessMeta {
    pub fn of(project: &RepositoryName) -> AccessMeta {
        let path = project.as_str().to_ascii_lowercase();
        let root = path.split('/').next().unwrap_or_default();
        AccessMeta {
            project_id: stable_id("project", &path),
            root_namespace_id: stable_id("namespace", root),
            project_path: path,
        }
    }
}

/// A number that names `path` of `kind` the same way every time.
pub(crate) fn stable_id(kind: &str, path: &str) -> u64 {
    let text = format!("portcullis {kind} id\0{path}");
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, text.as_bytes());
    let mut bytes = [0u8; 8];
    bytes.copy_from_slice(&digest.as_ref()[..8]);
    u64::from_be_bytes(bytes) >> 11
}

impl ResourceAccess {
    pub fn new(resource: &Resource, actions: Actions) -> Self {
        ResourceAccess {
            kind: resource.kind().to_owned(),
            name: resource.name().to_owned(),
            actions: actions.iter().map(|a| a.as_str().to_owned()).collect(),
            meta: None,
        }
    }

    /// The actions of this entry that the protocol knows.
    pub fn actions(&self) -> Actions {
        Actions::of(
            &self
                .actions
                .iter()
                .filter_map(|a| Action::parse(a))
                .collect::<Vec<_>>(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn repo(name: &str) -> Resource {
        Resource::Repository(RepositoryName::parse_in_scope(name).unwrap())
    }

    #[test]
    fn path_components_follow_the_distribution_grammar() {
        for ok in [
            "a",
            "abc",
            "a.b",
            "a_b",
            "a__b",
            "a-b",
            "a---b",
            "a1.b2-c3__d4",
            "0",
        ] {
            assert!(is_path_component(ok.as_bytes()), "{ok} should be valid");
        }
        for bad in [
            "", "A", "a..b", "a___b", "-a", "a-", "a.", "_a", "a b", "a.-b", "a/b", "ä",
        ] {
            assert!(
                !is_path_component(bad.as_bytes()),
                "{bad:?} should be invalid"
            );
        }
    }

    #[test]
    fn repository_names_are_validated_whole() {
        assert!(RepositoryName::parse("mygroup/myproject/app").is_ok());
        assert_eq!(RepositoryName::parse(""), Err(NameError::Empty));
        assert!(
            matches!(RepositoryName::parse("Group/app"), Err(NameError::Component(c)) if c == "Group")
        );
        assert!(RepositoryName::parse("a//b").is_err());
        assert!(RepositoryName::parse("a/").is_err());
        assert_eq!(
            RepositoryName::parse(&"a".repeat(256)),
            Err(NameError::TooLong)
        );
        assert!(RepositoryName::parse(&"a".repeat(255)).is_ok());
        // A host prefix is only accepted in scopes.
        assert!(RepositoryName::parse("localhost:5000/app").is_err());
        assert!(RepositoryName::parse_in_scope("localhost:5000/app").is_ok());
        assert!(RepositoryName::parse_in_scope("registry.example.com/group/app").is_ok());
    }

    #[test]
    fn names_within_a_project_are_on_component_boundaries() {
        let project = RepositoryName::parse("group/app").unwrap();
        assert!(RepositoryName::parse("group/app")
            .unwrap()
            .is_within(&project));
        assert!(RepositoryName::parse("group/app/sub")
            .unwrap()
            .is_within(&project));
        assert!(!RepositoryName::parse("group/application")
            .unwrap()
            .is_within(&project));
        assert!(!RepositoryName::parse("group").unwrap().is_within(&project));
    }

    #[test]
    fn scopes_split_on_first_and_last_colon() {
        let s = Scope::parse("repository:registry.example.com:4567/group/app:pull,push").unwrap();
        assert_eq!(s.resource, repo("registry.example.com:4567/group/app"));
        assert_eq!(s.actions, Actions::of(&[Action::Pull, Action::Push]));

        // GitLab CRAS#process_scope: only the exact type `repository` is a repository.
        let s = Scope::parse("repository(plugin):group/plugin:pull").unwrap();
        assert!(
            matches!(s.resource, Resource::Other { ref kind, .. } if kind == "repository(plugin)")
        );

        assert_eq!(
            Scope::parse("registry:catalog:*").unwrap().resource,
            Resource::Catalog
        );
        assert_eq!(
            Scope::parse("repository:a/b:*").unwrap().actions,
            Actions::of(&[Action::All])
        );
    }

    #[test]
    fn unknown_types_and_actions_parse_but_carry_nothing_known() {
        let s = Scope::parse("helmchart:foo:pull").unwrap();
        assert!(matches!(s.resource, Resource::Other { ref kind, .. } if kind == "helmchart"));
        let s = Scope::parse("repository:a/b:pull,frobnicate").unwrap();
        assert_eq!(s.actions, Actions::of(&[Action::Pull]));
        let s = Scope::parse("registry:metrics:*").unwrap();
        assert!(matches!(s.resource, Resource::Other { .. }));
    }

    #[test]
    fn malformed_scopes_are_refused_with_the_text() {
        for bad in [
            "",
            "repository",
            "repository:app",
            ":a:pull",
            "repository(:a:pull",
            "repo sitory:a:pull",
        ] {
            assert!(Scope::parse(bad).is_err(), "{bad:?}");
        }
        // GitLab ContainerRegistry::Path downcases names rather than refusing them.
        assert_eq!(
            Scope::parse("repository:UPPER/case:pull").unwrap().resource,
            repo("upper/case")
        );
        assert!(matches!(
            Scope::parse("repository:a..b/c:pull"),
            Err(ScopeError::Name { .. })
        ));
    }

    #[test]
    fn several_scopes_per_parameter_and_per_request_merge_by_resource() {
        let scopes = Scope::parse_all([
            "repository:a/b:pull repository:c/d:pull",
            "repository:a/b:push",
        ])
        .unwrap();
        assert_eq!(scopes.len(), 2);
        assert_eq!(
            scopes[0].actions,
            Actions::of(&[Action::Pull, Action::Push])
        );
        assert_eq!(scopes[0].to_string(), "repository:a/b:pull,push");
    }

    #[test]
    fn access_entries_round_trip_actions() {
        let access = ResourceAccess::new(&repo("a/b"), Actions::of(&[Action::Push, Action::Pull]));
        assert_eq!(access.actions, vec!["pull", "push"]);
        assert!(access.actions().covers(Actions::of(&[Action::Pull])));
        assert!(!access.actions().covers(Actions::of(&[Action::Delete])));
        assert!(Actions::of(&[Action::All]).covers(Actions::of(&[Action::Delete, Action::Pull])));
    }
}
