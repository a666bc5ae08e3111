//! The query string read once, the way the registry reads it, refusing what it could read
//! another way.
//!
//! distribution reads its parameters with Go's `r.FormValue` (`mount`, `from`, `digest`,
//! `_state`) and `r.URL.Query()` (`n`, `last`). Go keeps the FIRST of repeated keys, skips a
//! pair that holds a `;` or a malformed escape, and decodes keys as well as values. Rather
//! than copy each quirk and hope, a query with any of those shapes is refused: a repeated key
//! (decoded: `fr%6Fm` is `from`), a `;`, a malformed escape. What is left has one reading.

use super::path::hex_pair;

/// Why a query cannot be read unambiguously.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QueryError {
    #[error("the query has a malformed percent-escape")]
    MalformedEscape,
    #[error("the query has a ';', which registries read differently")]
    Semicolon,
    #[error("the query repeats the parameter {0:?}")]
    Repeated(String),
    #[error("the query has more than {MAX_PARAMS} parameters")]
    TooMany,
}

/// The registry API uses at most four parameters on one request; the bound keeps the
/// repeated-key check cheap whatever a client sends.
pub const MAX_PARAMS: usize = 16;

/// The decoded parameters of a query, each key at most once.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Params(Vec<(String, String)>);

impl Params {
    pub fn parse(query: Option<&str>) -> Result<Params, QueryError> {
        let Some(query) = query else {
            return Ok(Params::default());
        };
        if query.contains(';') {
            return Err(QueryError::Semicolon);
        }
        let mut params: Vec<(String, String)> = Vec::new();
        for pair in query.split('&').filter(|pair| !pair.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            let key = unescape(key)?;
            let value = unescape(value)?;
            if params.len() == MAX_PARAMS {
                return Err(QueryError::TooMany);
            }
            if params.iter().any(|(k, _)| *k == key) {
                return Err(QueryError::Repeated(key));
            }
            params.push((key, value));
        }
        Ok(Params(params))
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// Go's `QueryUnescape`: `+` is a space, `%XX` a byte; the result must be text.
fn unescape(text: &str) -> Result<String, QueryError> {
    if !text.contains(['%', '+']) {
        return Ok(text.to_owned());
    }
    let raw = text.as_bytes();
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        match raw[i] {
            b'%' => {
                out.push(hex_pair(raw.get(i + 1..i + 3)).ok_or(QueryError::MalformedEscape)?);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            byte => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8(out).map_err(|_| QueryError::MalformedEscape)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_and_values_are_decoded() {
        let params = Params::parse(Some("mount=sha256%3Aab&fr%6Fm=other%2Fbase&n=")).unwrap();
        assert_eq!(params.get("mount"), Some("sha256:ab"));
        assert_eq!(params.get("from"), Some("other/base"));
        assert_eq!(params.get("n"), Some(""));
        assert_eq!(params.get("last"), None);
        assert_eq!(
            Params::parse(Some("a+b=c+d&&")).unwrap().get("a b"),
            Some("c d")
        );
        assert_eq!(Params::parse(None).unwrap(), Params::default());
    }

    #[test]
    fn shapes_with_two_readings_are_refused() {
        assert_eq!(
            Params::parse(Some("mount=x&from=secret/app&from=mine/app")),
            Err(QueryError::Repeated("from".into()))
        );
        assert_eq!(
            Params::parse(Some("from=mine/app&fr%6fm=secret/app")),
            Err(QueryError::Repeated("from".into()))
        );
        assert_eq!(
            Params::parse(Some("mount=x;from=secret/app")),
            Err(QueryError::Semicolon)
        );
        assert_eq!(
            Params::parse(Some("from=%zz")),
            Err(QueryError::MalformedEscape)
        );
        let many: Vec<String> = (0..=MAX_PARAMS).map(|i| format!("k{i}=v")).collect();
        assert_eq!(
            Params::parse(Some(&many.join("&"))),
            Err(QueryError::TooMany)
        );
        assert_eq!(
            Params::parse(Some("from=%ff")),
            Err(QueryError::MalformedEscape)
        );
    }
}
