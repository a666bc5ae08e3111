//! distribution's route grammar (`registry/api/v2/descriptors.go`, `routes.go`), matched on
//! a decoded path without regexes.
//!
//! The routes, with their path variables' character classes:
//!
//! | route | path |
//! |---|---|
//! | base | `/v2/` |
//! | catalog | `/v2/_catalog` |
//! | tags | `/v2/{name}/tags/list` |
//! | manifest | `/v2/{name}/manifests/{tag \| digest}` |
//! | blob | `/v2/{name}/blobs/{digest}` |
//! | blob-upload | `/v2/{name}/blobs/uploads/` |
//! | blob-upload-chunk | `/v2/{name}/blobs/uploads/{uuid: [a-zA-Z0-9-_.=]+}` |
//! | referrers (OCI 1.1) | `/v2/{name}/referrers/{digest}` |
//!
//! A tag, digest or uuid never holds a '/', so the route is fixed by the LAST segments of the
//! path and the name is everything before its marker: no path matches two routes, which is
//! what lets gorilla/mux's first-match and this reading agree.

/// A route of the registry API and the parts of the path it binds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Matched<'a> {
    Base,
    Catalog,
    Tags { name: &'a str },
    Manifest { name: &'a str, reference: &'a str },
    Blob { name: &'a str, digest: &'a str },
    UploadStart { name: &'a str },
    UploadChunk { name: &'a str, uuid: &'a str },
    Referrers { name: &'a str, digest: &'a str },
}

/// Match the part of a decoded path after `/v2/` against the routes; `None` when the
/// registry has no such route (it would answer 404). Names are returned unchecked: the
/// caller parses them as repository names.
pub fn match_route(rest: &str) -> Option<Matched<'_>> {
    match rest {
        "" => return Some(Matched::Base),
        "_catalog" => return Some(Matched::Catalog),
        _ => {}
    }
    let (head, last) = rest.rsplit_once('/')?;
    let (name, marker) = head.rsplit_once('/')?;
    if name.is_empty() {
        return None;
    }
    match (marker, last) {
        ("tags", "list") => Some(Matched::Tags { name }),
        ("manifests", reference) if is_tag(reference) || is_digest(reference) => {
            Some(Matched::Manifest { name, reference })
        }
        ("blobs", digest) if is_digest(digest) => Some(Matched::Blob { name, digest }),
        ("referrers", digest) if is_digest(digest) => Some(Matched::Referrers { name, digest }),
        ("uploads", uuid) => {
            let name = name.strip_suffix("/blobs")?;
            if name.is_empty() {
                None
            } else if uuid.is_empty() {
                Some(Matched::UploadStart { name })
            } else if is_uuid(uuid) {
                Some(Matched::UploadChunk { name, uuid })
            } else {
                None
            }
        }
        _ => None,
    }
}

/// `[\w][\w.-]{0,127}` (reference.TagRegexp).
pub fn is_tag(text: &str) -> bool {
    let word = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    let bytes = text.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 128
        && word(bytes[0])
        && bytes[1..]
            .iter()
            .all(|&b| word(b) || b == b'.' || b == b'-')
}

/// `[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*[:][[:xdigit:]]{32,}`
/// (reference.DigestRegexp).
pub fn is_digest(text: &str) -> bool {
    let Some((algorithm, hex)) = text.split_once(':') else {
        return false;
    };
    let algorithm_ok = algorithm.split(['-', '_', '+', '.']).all(|part| {
        let b = part.as_bytes();
        !b.is_empty() && b[0].is_ascii_alphabetic() && b.iter().all(u8::is_ascii_alphanumeric)
    });
    algorithm_ok && hex.len() >= 32 && hex.bytes().all(|b| b.is_ascii_hexdigit())
}

/// `[a-zA-Z0-9-_.=]+` (the upload uuid variable).
pub fn is_uuid(text: &str) -> bool {
    !text.is_empty()
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'='))
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn the_routes_of_distributions_router_test() {
        // The cases of distribution's routes_test.go that concern names, tags and digests.
        assert_eq!(match_route(""), Some(Matched::Base));
        assert_eq!(
            match_route("foo/manifests/bar"),
            Some(Matched::Manifest {
                name: "foo",
                reference: "bar"
            })
        );
        assert_eq!(
            match_route("foo/bar/manifests/tags"),
            Some(Matched::Manifest {
                name: "foo/bar",
                reference: "tags"
            })
        );
        assert_eq!(
            match_route("foo/bar/manifests/manifests/tags"),
            Some(Matched::Manifest {
                name: "foo/bar/manifests",
                reference: "tags"
            })
        );
        assert_eq!(
            match_route("foo/bar/manifests/tags/list"),
            Some(Matched::Tags {
                name: "foo/bar/manifests"
            })
        );
        assert_eq!(
            match_route(&format!("foo/bar/blobs/{D}")),
            Some(Matched::Blob {
                name: "foo/bar",
                digest: D
            })
        );
        assert_eq!(
            match_route("foo/bar/blobs/uploads/"),
            Some(Matched::UploadStart { name: "foo/bar" })
        );
        assert_eq!(
            match_route("foo/bar/blobs/uploads/D95306FA-FAD3-4E36-8D41-CF1C93EF8286"),
            Some(Matched::UploadChunk {
                name: "foo/bar",
                uuid: "D95306FA-FAD3-4E36-8D41-CF1C93EF8286"
            })
        );
        assert_eq!(
            match_route(
                "foo/bar/blobs/uploads/RDk1MzA2RkEtRkFEMy00RTM2LThENDEtQ0YxQzkzRUY4Mjg2IA_-=="
            ),
            Some(Matched::UploadChunk {
                name: "foo/bar",
                uuid: "RDk1MzA2RkEtRkFEMy00RTM2LThENDEtQ0YxQzkzRUY4Mjg2IA_-=="
            })
        );
        assert_eq!(
            match_route("foo/bar/blobs/uploads/totalandcompletejunk++$$-=="),
            None
        );
    }

    #[test]
    fn anything_else_is_no_route() {
        for path in [
            "something",
            "_catalog/",
            "g/app/manifests/",
            "g/app/manifests",
            "g/app/tags/list/",
            "g/app/tags/lis",
            "g/app/blobs/sha256:short",
            "g/app/blobs/uploads",
            "g/app/uploads/x",
            "blobs/uploads/x",
            "/manifests/t",
            "g/app/manifests/t;x=1",
            "g/app/manifests/.t",
            "g/app/blobs/uploads/a%b",
        ] {
            assert_eq!(match_route(path), None, "{path}");
        }
        let long_tag = "t".repeat(129);
        assert_eq!(match_route(&format!("g/manifests/{long_tag}")), None);
    }

    #[test]
    fn digests_follow_the_reference_grammar() {
        assert!(is_digest(D));
        assert!(is_digest("sha256+b64u.x:0123456789abcdef0123456789abcdef"));
        assert!(!is_digest("sha256:0123"));
        assert!(!is_digest("256:0123456789abcdef0123456789abcdef"));
        assert!(!is_digest("sha256:0123456789abcdef0123456789abcdeg"));
        assert!(!is_digest("sha--256:0123456789abcdef0123456789abcdef"));
    }
}
