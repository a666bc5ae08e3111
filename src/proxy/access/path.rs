//! The request path read once, the way the registry reads it.
//!
//! distribution (Go, gorilla/mux) routes on `URL.Path`, which Go's `url.Parse` has already
//! percent-decoded (`%73` is `s`, `%2F` is `/`), and it answers paths with empty, `.` or `..`
//! segments with a redirect to the cleaned path. A gateway that matched routes on the raw
//! bytes would read `/v2/R/manifest%73/T` as "no route" while the registry reads "manifest T of
//! R". So the path is decoded here exactly once, with Go's rules, and the result is what the
//! gateway checks AND what it forwards: the registry never sees an encoded byte, so no second
//! decoder, Go's or any other registry's, can read it differently.
//!
//! What has two readings is refused instead of guessed at: an encoded `/` (a separator to Go,
//! data to RFC 3986), malformed escapes (Go answers 400), empty, `.` and `..` segments.

use std::fmt;

/// Why a path cannot be read unambiguously.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    #[error("the path has a malformed percent-escape")]
    MalformedEscape,
    #[error("the path has an encoded '/' (%2F), which registries read as a separator")]
    EncodedSlash,
    #[error("the path has an empty, '.' or '..' segment")]
    DotOrEmptySegment,
    #[error("the path decodes to bytes that are not text")]
    NotText,
}

/// A `/v2/...` path after one decoding, with no empty or dot segments.
#[derive(Clone, PartialEq, Eq)]
pub struct DecodedPath(String);

impl DecodedPath {
    /// Decode `raw` (the request target's path) as Go's `url.PathUnescape` does, then refuse
    /// what the registry would redirect or could read two ways.
    pub fn parse(raw: &str) -> Result<DecodedPath, PathError> {
        let decoded = if raw.contains('%') {
            let bytes = unescape(raw.as_bytes())?;
            String::from_utf8(bytes).map_err(|_| PathError::NotText)?
        } else {
            raw.to_owned()
        };
        // The segments between the leading '/' and the end. A trailing '/' is meaningful
        // (`/v2/`, `/blobs/uploads/`), so the last segment may be empty; no other may.
        // Split as bytes: a path has a few short segments, and `str::split`'s searcher costs
        // more to set up per segment than this loop costs per byte (callgrind: 600
        // instructions a request).
        let inner = decoded.strip_prefix('/').unwrap_or(&decoded);
        let mut segments = inner.as_bytes().split(|&b| b == b'/');
        let last = segments.next_back().unwrap_or_default();
        let dot = |segment: &[u8]| segment == b"." || segment == b"..";
        if dot(last) || segments.any(|segment| segment.is_empty() || dot(segment)) {
            return Err(PathError::DotOrEmptySegment);
        }
        Ok(DecodedPath(decoded))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for DecodedPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

/// Go's `unescape(s, encodePath)`: `%XX` (either case) is the byte XX, `+` stays `+`, a `%`
/// not followed by two hex digits is an error. An escaped '/' is refused here, not decoded.
pub(super) fn unescape(raw: &[u8]) -> Result<Vec<u8>, PathError> {
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        if raw[i] == b'%' {
            let byte = hex_pair(raw.get(i + 1..i + 3)).ok_or(PathError::MalformedEscape)?;
            if byte == b'/' {
                return Err(PathError::EncodedSlash);
            }
            out.push(byte);
            i += 3;
        } else {
            out.push(raw[i]);
            i += 1;
        }
    }
    Ok(out)
}

/// The byte of two hex digits, if that is what `pair` is.
pub(super) fn hex_pair(pair: Option<&[u8]>) -> Option<u8> {
    let pair = pair?;
    let digit = |b: u8| char::from(b).to_digit(16);
    Some((digit(pair[0])? * 16 + digit(pair[1])?) as u8)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decoded(raw: &str) -> Result<String, PathError> {
        DecodedPath::parse(raw).map(|p| p.as_str().to_owned())
    }

    #[test]
    fn escapes_are_decoded_once_like_go() {
        assert_eq!(
            decoded("/v2/g/app/manifest%73/t").unwrap(),
            "/v2/g/app/manifests/t"
        );
        assert_eq!(decoded("/v2/%5Fcatalog").unwrap(), "/v2/_catalog");
        assert_eq!(decoded("/v2/%5fcatalog").unwrap(), "/v2/_catalog");
        // Double encoding decodes once: the '%' that is left matches no route later.
        assert_eq!(decoded("/v2/%2573").unwrap(), "/v2/%73");
        // '+' is not a space in a path.
        assert_eq!(decoded("/v2/a+b").unwrap(), "/v2/a+b");
        assert_eq!(decoded("/v2/").unwrap(), "/v2/");
    }

    #[test]
    fn ambiguous_paths_are_refused() {
        assert_eq!(
            decoded("/v2/g/app/manifests%2Ft"),
            Err(PathError::EncodedSlash)
        );
        assert_eq!(decoded("/v2/g%2fapp"), Err(PathError::EncodedSlash));
        for bad in ["/v2/%", "/v2/%7", "/v2/%zz", "/v2/%g0"] {
            assert_eq!(decoded(bad), Err(PathError::MalformedEscape), "{bad}");
        }
        for bad in [
            "/v2//g/app/tags/list",
            "/v2/g/./app/tags/list",
            "/v2/x/../g/app/tags/list",
            "/v2/g/app/%2e%2e/tags/list",
            "/v2/g/app/%2E/tags/list",
            "/v2/..",
            "/v2/g/app/.",
            "//v2/",
            "/v2/g/app//",
            "/./v2/",
        ] {
            assert_eq!(decoded(bad), Err(PathError::DotOrEmptySegment), "{bad}");
        }
        assert_eq!(decoded("/v2/%ff"), Err(PathError::NotText));
        // Only the last segment may be empty; a dot inside a segment is data.
        for good in [
            "/v2/",
            "/",
            "",
            "/v2/g/app/blobs/uploads/",
            "/v2/g/a.b/..x/tags/list",
        ] {
            assert!(decoded(good).is_ok(), "{good}");
        }
    }
}
