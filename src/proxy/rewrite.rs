//! Header rewriting between the registry's view of the world and the client's.
//!
//! The registry's challenge names its own realm (often an internal host): clients must be sent
//! to the gateway's `/jwt/auth` instead. Upload `Location`s that still name the registry's
//! internal address would make clients drop their token on the next request, so they are
//! pointed at the public URL. Everything else passes byte for byte.

use http::HeaderValue;

/// Replace the `realm` of a `Bearer` challenge, keeping every other parameter (service, scope,
/// error) as the registry sent it. Non-Bearer challenges are returned unchanged.
pub fn rewrite_challenge(value: &HeaderValue, realm: &str) -> Option<HeaderValue> {
    let text = value.to_str().ok()?;
    let (scheme, params) = text.trim_start().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let mut out = format!("Bearer realm=\"{realm}\"");
    let mut saw_realm = false;
    for (name, raw) in auth_params(params) {
        if name.eq_ignore_ascii_case("realm") {
            saw_realm = true;
            continue;
        }
        out.push(',');
        out.push_str(name);
        out.push('=');
        out.push_str(raw);
    }
    if !saw_realm {
        return None;
    }
    HeaderValue::from_str(&out).ok()
}

/// Split `a="x, y",b=z` into `(name, raw value including quotes)` pairs, honouring quotes.
fn auth_params(text: &str) -> Vec<(&str, &str)> {
    let mut params = Vec::new();
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        while i < bytes.len() && (bytes[i] == b',' || bytes[i] == b' ') {
            i += 1;
        }
        let name_start = i;
        while i < bytes.len() && bytes[i] != b'=' && bytes[i] != b',' {
            i += 1;
        }
        let name = text[name_start..i].trim();
        if i >= bytes.len() || bytes[i] != b'=' {
            continue;
        }
        i += 1;
        // Whitespace after '=' (RFC 9110's BWS) comes before the quote: skipped here, a value
        // ` "a,b"` would be read unquoted, split at the comma and re-emitted as a quoted string
        // with another meaning (found by fuzz/fuzz_targets/rewrite.rs).
        while i < bytes.len() && (bytes[i] == b' ' || bytes[i] == b'\t') {
            i += 1;
        }
        let value_start = i;
        if i < bytes.len() && bytes[i] == b'"' {
            i += 1;
            while i < bytes.len() && bytes[i] != b'"' {
                if bytes[i] == b'\\' {
                    i += 1;
                }
                i += 1;
            }
            i = (i + 1).min(bytes.len());
        } else {
            while i < bytes.len() && bytes[i] != b',' {
                i += 1;
            }
        }
        if !name.is_empty() {
            params.push((name, text[value_start..i].trim()));
        }
    }
    params
}

/// Point an absolute `Location` into the registry API (`/v2/...`) that names another origin
/// (the registry's internal address, or whatever its `http.host` says) at the public origin.
///
/// Relative Locations are left alone, and so are absolute ones outside `/v2/`: a registry may
/// redirect blob downloads to its storage (presigned S3 URLs), and those must reach the client
/// unchanged.
pub fn rewrite_location(value: &HeaderValue, public_origin: &str) -> Option<HeaderValue> {
    let text = value.to_str().ok()?;
    let (scheme, rest) = text.split_once("://")?;
    if !scheme.eq_ignore_ascii_case("http") && !scheme.eq_ignore_ascii_case("https") {
        return None;
    }
    let path_start = rest.find('/')?;
    let (authority, path) = rest.split_at(path_start);
    if !path.starts_with("/v2/")
        || format!("{scheme}://{authority}").eq_ignore_ascii_case(public_origin)
    {
        return None;
    }
    HeaderValue::from_str(&format!("{public_origin}{path}")).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const REALM: &str = "https://registry.example.com:4567/jwt/auth";

    fn challenge(text: &str) -> Option<String> {
        rewrite_challenge(&HeaderValue::from_str(text).unwrap(), REALM)
            .map(|v| v.to_str().unwrap().to_owned())
    }

    #[test]
    fn realm_is_replaced_and_everything_else_kept() {
        assert_eq!(
            challenge(r#"Bearer realm="http://internal.invalid/auth",service="container_registry",scope="repository:g/app:pull,push",error="insufficient_scope""#).as_deref(),
            Some(r#"Bearer realm="https://registry.example.com:4567/jwt/auth",service="container_registry",scope="repository:g/app:pull,push",error="insufficient_scope""#)
        );
    }

    #[test]
    fn quoted_commas_do_not_split_parameters() {
        assert_eq!(
            challenge(r#"Bearer service="s",realm="http://x/a,b",scope="repository:a:pull,push""#)
                .as_deref(),
            Some(
                r#"Bearer realm="https://registry.example.com:4567/jwt/auth",service="s",scope="repository:a:pull,push""#
            )
        );
    }

    #[test]
    fn a_quoted_value_after_whitespace_stays_one_quoted_value() {
        assert_eq!(
            challenge(
                r#"Bearer realm="http://x/auth", scope= "repository:a:pull,push",service="s""#
            )
            .as_deref(),
            Some(
                r#"Bearer realm="https://registry.example.com:4567/jwt/auth",scope="repository:a:pull,push",service="s""#
            )
        );
    }

    #[test]
    fn other_schemes_and_realmless_challenges_are_untouched() {
        assert_eq!(challenge(r#"Basic realm="Registry Realm""#), None);
        assert_eq!(challenge(r#"Bearer service="s""#), None);
    }

    #[test]
    fn internal_locations_point_at_the_public_url() {
        let rewrite = |text: &str| {
            rewrite_location(
                &HeaderValue::from_str(text).unwrap(),
                "https://registry.example.com:4567",
            )
            .map(|v| v.to_str().unwrap().to_owned())
        };
        assert_eq!(
            rewrite("http://127.0.0.1:5000/v2/g/app/blobs/uploads/u?_state=s").as_deref(),
            Some("https://registry.example.com:4567/v2/g/app/blobs/uploads/u?_state=s")
        );
        assert_eq!(
            rewrite("http://registry.internal:5000/v2/g/app/blobs/uploads/u").as_deref(),
            Some("https://registry.example.com:4567/v2/g/app/blobs/uploads/u")
        );
        assert_eq!(rewrite("/v2/g/app/blobs/uploads/u"), None);
        assert_eq!(rewrite("https://registry.example.com:4567/v2/x"), None);
        assert_eq!(rewrite("https://bucket.s3.amazonaws.com/docker/registry/v2/blobs/sha256/ab/data?X-Amz-Signature=1"), None);
        assert_eq!(rewrite("ftp://127.0.0.1:5000/v2/x"), None);
    }
}
