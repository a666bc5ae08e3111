//! The fast way from `gateway.yaml`'s text to [`GatewayFile`]: straight from the parser's
//! events, without serde_yaml's `Value` tree in between.
//!
//! At 100,000 projects the tree was most of a load (a `Value` per node, an `IndexMap` per
//! mapping, then the walk and the drop), so start-up and `portcullis check` took seconds. This
//! path is only ever taken when it reads the file exactly as the tree path would; anything it
//! is not sure of makes it give up, and the caller falls back to the tree path, whose errors
//! (every shape problem, with its key) stay exactly as they were. It gives up on:
//! - `${` in a string value (environment expansion works on the tree; in a comment it is
//!   harmless, and the annotated `gateway.yaml` people start from has some);
//! - a YAML tag (`!something`), which the tree keeps as a `Value::Tagged`;
//! - a scalar other than a string where a string is wanted: read directly, serde_yaml gives a
//!   `String` field the text of an unquoted `123`, `true` or `null`, which the tree path refuses
//!   (so every string is asked for as "any", as the tree is built, and only a string passes);
//! - the same key twice in one mapping (the tree refuses it; a `BTreeMap` read directly would
//!   keep the last one);
//! - any error at all, of serde_yaml or of the file's structs.
//!
//! The wrapper below is a serde `Deserializer` around serde_yaml's that does those checks at
//! every level; the structs in [`super::file`] need no change for it.

use std::collections::HashSet;
use std::fmt;
use std::hash::{Hash, Hasher};

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};

use super::file::GatewayFile;

/// `GatewayFile` read straight from `text`, or `None` when the tree path must read it.
pub(super) fn read(text: &str) -> Option<GatewayFile> {
    read_as(text)
}

/// Any of the file's structs read straight from `text` under the same rules as [`read`]
/// (for [`super::split`]'s pieces), or `None` when the tree path must read it.
pub(super) fn read_as<T: serde::de::DeserializeOwned>(text: &str) -> Option<T> {
    if has_tag(text) {
        return None;
    }
    T::deserialize(Strict(serde_yaml::Deserializer::from_str(text))).ok()
}

/// A `!` where a YAML tag could start: at the start of the text or after a space, a line
/// break or a flow indicator. Over-cautious on purpose (a `!` in a comment or a quoted string
/// counts too): a false alarm only costs the slow path.
fn has_tag(text: &str) -> bool {
    let bytes = text.as_bytes();
    bytes.iter().enumerate().any(|(at, &b)| {
        b == b'!'
            && (at == 0
                || matches!(
                    bytes[at - 1],
                    b' ' | b'\t' | b'\n' | b'\r' | b'[' | b'{' | b',' | b':' | b'-' | b'?'
                ))
    })
}

/// A string value with `${` in it: the tree path expands it (or reports the variable unset).
fn no_variable<E: de::Error>(text: &str) -> Result<(), E> {
    match text.contains("${") {
        true => Err(give_up("an environment variable")),
        false => Ok(()),
    }
}

/// Why the direct path gave up; never shown to anyone (the tree path reports instead).
fn give_up<E: de::Error>(what: &str) -> E {
    E::custom(format_args!("not read directly: {what}"))
}

/// serde_yaml's deserializer, asked only what the tree path would ask of a `Value`.
struct Strict<D>(D);

impl<'de, D: Deserializer<'de>> Deserializer<'de> for Strict<D> {
    type Error = D::Error;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, D::Error> {
        self.0.deserialize_any(Wrap(visitor))
    }

    fn deserialize_str<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, D::Error> {
        self.0.deserialize_any(OnlyStr {
            visitor,
            seen: None,
        })
    }

    fn deserialize_string<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, D::Error> {
        self.deserialize_str(visitor)
    }

    fn deserialize_identifier<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, D::Error> {
        self.deserialize_str(visitor)
    }

    fn deserialize_char<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, D::Error> {
        self.deserialize_str(visitor)
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, D::Error> {
        self.0.deserialize_option(Wrap(visitor))
    }

    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, D::Error> {
        self.0.deserialize_seq(Wrap(visitor))
    }

    fn deserialize_map<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, D::Error> {
        self.0.deserialize_map(Wrap(visitor))
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, D::Error> {
        self.0.deserialize_struct(name, fields, Wrap(visitor))
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, D::Error> {
        self.0.deserialize_ignored_any(visitor)
    }

    // Numbers and booleans as the tree gets them: what the parser makes of the scalar.
    fn deserialize_bool<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, D::Error> {
        self.deserialize_any(visitor)
    }
    fn deserialize_i8<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, D::Error> {
        self.deserialize_any(visitor)
    }
    fn deserialize_i16<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, D::Error> {
        self.deserialize_any(visitor)
    }
    fn deserialize_i32<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, D::Error> {
        self.deserialize_any(visitor)
    }
    fn deserialize_i64<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, D::Error> {
        self.deserialize_any(visitor)
    }
    fn deserialize_u8<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, D::Error> {
        self.deserialize_any(visitor)
    }
    fn deserialize_u16<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, D::Error> {
        self.deserialize_any(visitor)
    }
    fn deserialize_u32<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, D::Error> {
        self.deserialize_any(visitor)
    }
    fn deserialize_u64<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, D::Error> {
        self.deserialize_any(visitor)
    }
    fn deserialize_f32<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, D::Error> {
        self.deserialize_any(visitor)
    }
    fn deserialize_f64<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, D::Error> {
        self.deserialize_any(visitor)
    }

    // Nothing in the file's structs asks for these: give up rather than guess.
    fn deserialize_bytes<V: Visitor<'de>>(self, _: V) -> Result<V::Value, D::Error> {
        Err(give_up("bytes"))
    }
    fn deserialize_byte_buf<V: Visitor<'de>>(self, _: V) -> Result<V::Value, D::Error> {
        Err(give_up("bytes"))
    }
    fn deserialize_unit<V: Visitor<'de>>(self, _: V) -> Result<V::Value, D::Error> {
        Err(give_up("a unit"))
    }
    fn deserialize_unit_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        _: V,
    ) -> Result<V::Value, D::Error> {
        Err(give_up("a unit struct"))
    }
    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        _: V,
    ) -> Result<V::Value, D::Error> {
        Err(give_up("a newtype struct"))
    }
    fn deserialize_tuple<V: Visitor<'de>>(self, _: usize, _: V) -> Result<V::Value, D::Error> {
        Err(give_up("a tuple"))
    }
    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        _: usize,
        _: V,
    ) -> Result<V::Value, D::Error> {
        Err(give_up("a tuple struct"))
    }
    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _: &'static str,
        _: &'static [&'static str],
        _: V,
    ) -> Result<V::Value, D::Error> {
        Err(give_up("an enum"))
    }

    fn is_human_readable(&self) -> bool {
        self.0.is_human_readable()
    }
}

/// A visitor whose nested mappings, lists and optional values are read through [`Strict`] too.
struct Wrap<V>(V);

impl<'de, V: Visitor<'de>> Visitor<'de> for Wrap<V> {
    type Value = V::Value;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        self.0.expecting(f)
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<V::Value, E> {
        self.0.visit_bool(v)
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<V::Value, E> {
        self.0.visit_i64(v)
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<V::Value, E> {
        self.0.visit_u64(v)
    }
    fn visit_i128<E: de::Error>(self, v: i128) -> Result<V::Value, E> {
        self.0.visit_i128(v)
    }
    fn visit_u128<E: de::Error>(self, v: u128) -> Result<V::Value, E> {
        self.0.visit_u128(v)
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<V::Value, E> {
        self.0.visit_f64(v)
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<V::Value, E> {
        no_variable(v)?;
        self.0.visit_str(v)
    }
    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<V::Value, E> {
        no_variable(v)?;
        self.0.visit_borrowed_str(v)
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<V::Value, E> {
        no_variable(&v)?;
        self.0.visit_string(v)
    }
    fn visit_unit<E: de::Error>(self) -> Result<V::Value, E> {
        self.0.visit_unit()
    }
    fn visit_none<E: de::Error>(self) -> Result<V::Value, E> {
        self.0.visit_none()
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<V::Value, D::Error> {
        self.0.visit_some(Strict(d))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<V::Value, A::Error> {
        self.0.visit_seq(StrictSeq(seq))
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<V::Value, A::Error> {
        self.0.visit_map(StrictMap {
            map,
            seen: Keys::default(),
        })
    }
    fn visit_bytes<E: de::Error>(self, _: &[u8]) -> Result<V::Value, E> {
        Err(give_up("bytes"))
    }
    fn visit_newtype_struct<D: Deserializer<'de>>(self, _: D) -> Result<V::Value, D::Error> {
        Err(give_up("a newtype struct"))
    }
    fn visit_enum<A: de::EnumAccess<'de>>(self, _: A) -> Result<V::Value, A::Error> {
        Err(give_up("a tagged value"))
    }
}

/// A visitor that takes a string and nothing else (the parser's unquoted `123` is a number
/// here, as in the tree), recording it when it is a mapping's key.
struct OnlyStr<'k, V> {
    visitor: V,
    seen: Option<&'k mut Keys>,
}

impl<'de, V: Visitor<'de>> OnlyStr<'_, V> {
    /// A key is recorded; a value must hold nothing to expand.
    fn note<E: de::Error>(&mut self, text: &str) -> Result<(), E> {
        match &mut self.seen {
            Some(seen) => match seen.insert(text) {
                true => Ok(()),
                false => Err(give_up("a key given twice")),
            },
            None => no_variable(text),
        }
    }
}

impl<'de, V: Visitor<'de>> Visitor<'de> for OnlyStr<'_, V> {
    type Value = V::Value;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        self.visitor.expecting(f)
    }
    fn visit_str<E: de::Error>(mut self, v: &str) -> Result<V::Value, E> {
        self.note(v)?;
        self.visitor.visit_str(v)
    }
    fn visit_borrowed_str<E: de::Error>(mut self, v: &'de str) -> Result<V::Value, E> {
        self.note(v)?;
        self.visitor.visit_borrowed_str(v)
    }
    fn visit_string<E: de::Error>(mut self, v: String) -> Result<V::Value, E> {
        self.note(&v)?;
        self.visitor.visit_string(v)
    }
}

/// The keys of one mapping so far, by hash: two keys with the same hash count as the same key,
/// which at worst sends a file to the tree path for nothing.
#[derive(Default)]
struct Keys {
    few: Vec<u64>,
    many: HashSet<u64>,
}

impl Keys {
    /// Below this many keys a scan of a list beats hashing into a set.
    const FEW: usize = 16;

    /// `false` when `key` was there already.
    fn insert(&mut self, key: &str) -> bool {
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        key.hash(&mut hasher);
        let hash = hasher.finish();
        if self.few.len() < Self::FEW {
            if self.few.contains(&hash) {
                return false;
            }
            self.few.push(hash);
            return true;
        }
        !self.few.contains(&hash) && self.many.insert(hash)
    }
}

struct StrictSeq<A>(A);

impl<'de, A: SeqAccess<'de>> SeqAccess<'de> for StrictSeq<A> {
    type Error = A::Error;

    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, A::Error> {
        self.0.next_element_seed(StrictSeed(seed))
    }

    fn size_hint(&self) -> Option<usize> {
        self.0.size_hint()
    }
}

struct StrictMap<A> {
    map: A,
    seen: Keys,
}

impl<'de, A: MapAccess<'de>> MapAccess<'de> for StrictMap<A> {
    type Error = A::Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, A::Error> {
        self.map.next_key_seed(KeySeed {
            seed,
            seen: &mut self.seen,
        })
    }

    fn next_value_seed<T: DeserializeSeed<'de>>(&mut self, seed: T) -> Result<T::Value, A::Error> {
        self.map.next_value_seed(StrictSeed(seed))
    }

    fn size_hint(&self) -> Option<usize> {
        self.map.size_hint()
    }
}

/// A value read through [`Strict`].
struct StrictSeed<T>(T);

impl<'de, T: DeserializeSeed<'de>> DeserializeSeed<'de> for StrictSeed<T> {
    type Value = T::Value;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<T::Value, D::Error> {
        self.0.deserialize(Strict(d))
    }
}

/// A mapping's key: a string (a field's name or a `members` username), recorded.
struct KeySeed<'k, K> {
    seed: K,
    seen: &'k mut Keys,
}

impl<'de, K: DeserializeSeed<'de>> DeserializeSeed<'de> for KeySeed<'_, K> {
    type Value = K::Value;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<K::Value, D::Error> {
        self.seed.deserialize(Key { d, seen: self.seen })
    }
}

struct Key<'k, D> {
    d: D,
    seen: &'k mut Keys,
}

impl<'de, D: Deserializer<'de>> Deserializer<'de> for Key<'_, D> {
    type Error = D::Error;

    fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, D::Error> {
        Err(give_up("a key that is not a string"))
    }

    fn deserialize_str<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, D::Error> {
        self.d.deserialize_any(OnlyStr {
            visitor,
            seen: Some(self.seen),
        })
    }

    fn deserialize_string<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, D::Error> {
        self.deserialize_str(visitor)
    }

    fn deserialize_identifier<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, D::Error> {
        self.deserialize_str(visitor)
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char bytes byte_buf option unit
        unit_struct newtype_struct seq tuple tuple_struct map struct enum ignored_any
    }
}

/// What the tree path makes of `text` (no environment): the file, if it has no problem.
fn read_through_tree(text: &str) -> Option<GatewayFile> {
    let mut value: serde_yaml::Value = serde_yaml::from_str(text).ok()?;
    if value.is_null() {
        return None;
    }
    let mut problems = Vec::new();
    super::env::expand_tree(&mut value, "", &|_| None, &mut problems);
    let shape = super::shape::read(value, &mut problems);
    shape.file.filter(|_| problems.is_empty())
}

/// Whether the direct path agrees with the tree path on `text`: when it reads a file at all,
/// the tree path reads the same one, without a problem. `Err` says how they differ. For the
/// tests and the `config` fuzz target.
pub(super) fn agrees_with_tree(text: &str) -> Result<(), String> {
    let Some(direct) = read(text) else {
        return Ok(());
    };
    let direct = format!("{direct:#?}");
    match read_through_tree(text) {
        None => Err(format!(
            "read directly as {direct}, refused by the tree path"
        )),
        Some(tree) => {
            let tree = format!("{tree:#?}");
            if tree == direct {
                Ok(())
            } else {
                Err(format!("read directly as {direct}, by the tree as {tree}"))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = "public_url: https://registry.example.com:4567\nupstream: { url: \"http://127.0.0.1:5000\" }\ntoken: { signing_key: token.key, certificate: token.crt }\n";

    fn with(extra: &str) -> String {
        format!("{MINIMAL}{extra}")
    }

    /// The direct path reads `text`, and the tree path reads the same.
    fn both_read(text: &str) {
        assert!(read(text).is_some(), "not read directly:\n{text}");
        agrees_with_tree(text).unwrap();
    }

    /// The direct path leaves `text` to the tree path.
    fn left_to_tree(text: &str) {
        assert!(read(text).is_none(), "read directly:\n{text}");
        agrees_with_tree(text).unwrap();
    }

    #[test]
    fn the_repositorys_files_read_the_same_both_ways() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let mut files = vec![root.join("gateway.yaml")];
        for dir in ["examples", "examples/kubernetes", "tests/fixtures", "bench"] {
            if let Ok(entries) = std::fs::read_dir(root.join(dir)) {
                for entry in entries.flatten() {
                    let path = entry.path();
                    if path.extension().is_some_and(|e| e == "yaml" || e == "yml") {
                        files.push(path);
                    }
                }
            }
        }
        let mut read_directly = 0;
        for file in &files {
            let text = std::fs::read_to_string(file).unwrap();
            agrees_with_tree(&text).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
            read_directly += usize::from(read(&text).is_some());
        }
        assert!(read_directly >= 1, "no file of {files:?} was read directly");
        both_read(&std::fs::read_to_string(root.join("gateway.yaml")).unwrap());
    }

    #[test]
    fn a_directory_reads_the_same_both_ways() {
        both_read(&with(
            "users:\n  - username: alice\n    password_hash: \"$2y$05$abcdefghijklmnopqrstuu5dJ0K2j8eJ1Gq8zq2bYb5xkqP5g3s6\"\n    admin: true\n    personal_access_tokens:\n      - { name: ci, token_sha256: \"0ba5ff8a838ac4bb71696741536efa4c657b04b048ef5f46aecb3bb162533e6c\", scopes: [read_registry], expires_at: 2030-01-01 }\ngroups:\n  - { path: g, visibility: internal, members: { alice: owner } }\nprojects:\n  - path: g/p\n    members: { alice: developer, bob: reporter }\n    deploy_tokens: [{ username: gitlab+deploy-token-1, token_sha256: \"ab\", scopes: [read_registry] }]\n    container_protection: { tags: [{ tag_name_pattern: \"^v\", minimum_access_level_for_push: maintainer, minimum_access_level_for_delete: owner }] }\nserver: { workers: 2, idle_timeout: 5m, behind_tls_proxy: true }\nempty_later:\n"
            .replace("empty_later:\n", "log:\n").as_str(),
        ));
        // Anchors, aliases, block scalars, quoting styles, empty values.
        both_read(&with(
            "users:\n  - &u { username: 'a''b', blocked: false }\n  - username: >-\n      folded\n      name\nprojects:\n  - path: \"x/y\"\n    members: &m { 'a''b': developer }\n  - { path: x/z, members: *m, deploy_tokens: }\n",
        ));
    }

    #[test]
    fn unquoted_numbers_booleans_and_nulls_in_string_fields_are_left_to_the_tree() {
        for extra in [
            "users: [{ username: 123 }]\n",
            "users: [{ username: true }]\n",
            "users: [{ username: 1.5 }]\n",
            "users: [{ username: ~ }]\n",
            "users: [{ username: null }]\n",
            "users: [{ username: }]\n",
            "log: { level: 5 }\n",
            "projects: [{ path: p, members: { alice: 40 } }]\n",
            "projects: [{ path: p, members: { 7: developer } }]\n",
            "users: [{ username: a, personal_access_tokens: [{ name: 1, token_sha256: x, scopes: [] }] }]\n",
            "token: { previous_certificates: [1, 2] }\n",
        ] {
            left_to_tree(&with(extra));
        }
        // Quoted, they are strings both ways.
        both_read(&with(
            "users: [{ username: \"123\" }, { username: 'true' }]\nlog: { level: \"5\" }\n",
        ));
    }

    #[test]
    fn environment_variables_and_tags_are_left_to_the_tree() {
        left_to_tree(&with("log: { level: \"${LEVEL}\" }\n"));
        left_to_tree(&with("log: { level: \"$${LEVEL}\" }\n"));
        left_to_tree(&with("tokens: { max_lifetime: \"${T}\" }\n"));
        // In a comment it is no variable.
        both_read(&with("# `${VAR}` takes the environment's value\n"));
        left_to_tree(&with("log: { level: !!str 5 }\n"));
        left_to_tree(&with("log: { level: !custom debug }\n"));
        left_to_tree(&with("users: [!u { username: a }]\n"));
        // A lone `$` (a bcrypt hash) and a `!` inside a word are neither.
        both_read(&with("log: { level: \"cost $5 wow!\" }\n"));
    }

    #[test]
    fn unknown_duplicate_and_mistyped_keys_are_left_to_the_tree() {
        for extra in [
            "foo: 1\n",
            "upstrem: { url: y }\n",
            "server: { workers: -1 }\n",
            "server: { workers: \"2\" }\n",
            "server: { idle_timeout: 5 }\n",
            "server: { behind_tls_proxy: \"yes\" }\n",
            "server: { behind_tls_proxy: yes }\n",
            "tls: a\n",
            "users: { username: a }\n",
            "users: [{ username: a, admin: 1 }]\n",
            "projects: [{ path: p, members: { alice: developer, alice: owner } }]\n",
            "projects: [{ path: p, path: q }]\n",
            "log: { level: a }\nlog: { level: b }\n",
            "users: [{ username: a, personal_access_tokens: [{ name: t, scopes: [] }] }]\n",
            "---\nfoo: 1\n",
            "0: x\n",
        ] {
            left_to_tree(&with(extra));
        }
        left_to_tree("");
        left_to_tree("# only a comment\n");
        left_to_tree("[1, 2]\n");
        left_to_tree("public_url: x\n");
    }

    #[test]
    fn many_keys_in_one_mapping_are_still_checked_for_repeats() {
        let mut members: String = (0..100).map(|i| format!("u{i}: developer, ")).collect();
        both_read(&with(&format!(
            "projects: [{{ path: p, members: {{ {members} }} }}]\n"
        )));
        members.push_str("u57: owner");
        left_to_tree(&with(&format!(
            "projects: [{{ path: p, members: {{ {members} }} }}]\n"
        )));
    }
}
