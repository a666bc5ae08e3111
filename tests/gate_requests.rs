//! The gate reads a request as the registry will (issue 14, items 1 and 2).
//!
//! The differential test: variants of real requests against a private repository (every
//! character percent-encoded once and twice, `%2F`, dot segments, double slashes, case,
//! trailing slashes, `;params`, absolute form, repeated, re-encoded and reordered parameters,
//! parameters moved into form and multipart bodies) are sent twice: straight to a real
//! registry with no auth, which says what each variant really does, and through the gateway
//! with a token that has NO scope on that repository. Every variant the registry serves (it
//! returns the repository's manifest, blob, tags or catalog entry, writes a tag, starts an
//! upload, deletes a manifest, mounts a blob out of it) must be refused by the gateway.

use crate::support;

use std::cell::Cell;

use aws_lc_rs::digest;
use support::gateway::secrets::*;
use support::gateway::GatewayOptions;
use support::raw::{RawReply, RawRequest};
use support::stack::{RegistryAuth, Stack, StackOptions};

/// alice has no role on it.
const SECRET: &str = "mygroup/second";
/// alice is a developer here: she may push to it and to image paths below it.
const MINE: &str = "mygroup/myproject";
const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";

fn sha256(bytes: &[u8]) -> String {
    let d = digest::digest(&digest::SHA256, bytes);
    let hex: String = d.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256:{hex}")
}

/// The path and query of a Location the registry gave (absolute or not).
fn location_target(location: &str) -> String {
    match location.split_once("://") {
        Some((_, rest)) => rest[rest.find('/').unwrap()..].to_owned(),
        None => location.to_owned(),
    }
}

/// Content written straight into the registry (no auth), as a client push would.
struct Seed {
    port: u16,
    layer: Vec<u8>,
    layer_digest: String,
    manifest: Vec<u8>,
    manifest_digest: String,
    victim: Vec<u8>,
    victim_digest: String,
}

impl Seed {
    fn push(port: u16) -> Seed {
        let config = br#"{"architecture":"amd64","os":"linux"}"#.to_vec();
        let layer = b"the secret layer of mygroup/second".to_vec();
        let victim_layer = b"a layer only the victim manifest has".to_vec();
        for blob in [&config, &layer, &victim_layer] {
            put_blob(port, SECRET, blob);
        }
        let manifest = |layer: &[u8]| {
            format!(
                r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{}","size":{}}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"{}","size":{}}}]}}"#,
                sha256(&config),
                config.len(),
                sha256(layer),
                layer.len()
            )
            .into_bytes()
        };
        let seed = Seed {
            port,
            layer_digest: sha256(&layer),
            manifest: manifest(&layer),
            manifest_digest: sha256(&manifest(&layer)),
            victim: manifest(&victim_layer),
            victim_digest: sha256(&manifest(&victim_layer)),
            layer,
        };
        put_manifest(port, SECRET, "t", &seed.manifest);
        seed.restore_victim();
        seed
    }

    /// The manifest the DELETE variants try to remove, (re)written.
    fn restore_victim(&self) {
        put_manifest(self.port, SECRET, "victim", &self.victim);
    }
}

fn put_blob(port: u16, repo: &str, data: &[u8]) {
    let start = RawRequest::new("POST", &format!("/v2/{repo}/blobs/uploads/")).send(port);
    assert_eq!(start.status, 202, "seed upload: {}", start.text());
    let location = location_target(start.header("location").unwrap());
    let done = RawRequest::new("PUT", &format!("{location}&digest={}", sha256(data)))
        .header("Content-Type", "application/octet-stream")
        .body(data)
        .send(port);
    assert_eq!(done.status, 201, "seed blob: {}", done.text());
}

fn put_manifest(port: u16, repo: &str, reference: &str, manifest: &[u8]) {
    let reply = RawRequest::new("PUT", &format!("/v2/{repo}/manifests/{reference}"))
        .header("Content-Type", OCI_MANIFEST)
        .body(manifest)
        .send(port);
    assert_eq!(reply.status, 201, "seed manifest: {}", reply.text());
}

/// What a base request does to the secret repository when it is served.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Effect {
    ReadsManifest,
    ReadsManifestHead,
    ReadsBlob,
    ListsTags,
    ListsCatalog,
    WritesTag,
    StartsUpload,
    DeletesManifest,
    MountsBlob,
}

/// Did this answer serve the secret repository's content or change it?
fn served(effect: Effect, reply: &RawReply, seed: &Seed) -> bool {
    match effect {
        Effect::ReadsManifest => reply.status == 200 && reply.body == seed.manifest,
        Effect::ReadsManifestHead => {
            reply.status == 200
                && reply.header("docker-content-digest") == Some(&seed.manifest_digest)
        }
        Effect::ReadsBlob => reply.status == 200 && reply.body == seed.layer,
        Effect::ListsTags => reply.status == 200 && reply.text().contains(SECRET),
        Effect::ListsCatalog => reply.status == 200 && reply.text().contains(SECRET),
        Effect::WritesTag => reply.status == 201,
        Effect::StartsUpload => {
            reply.status == 202
                && reply
                    .header("location")
                    .is_some_and(|l| l.contains(&format!("/v2/{SECRET}/blobs/uploads/")))
        }
        Effect::DeletesManifest => reply.status == 202,
        Effect::MountsBlob => reply.status == 201,
    }
}

/// Percent-encode one byte, upper-case hex.
fn enc(byte: u8) -> String {
    format!("%{byte:02X}")
}

/// The path variants of one request path (`/v2/...`).
fn path_variants(path: &str, port: u16) -> Vec<String> {
    let bytes = path.as_bytes();
    let mut out = vec![path.to_owned()];
    for i in 1..bytes.len() {
        let (before, after) = (&path[..i], &path[i + 1..]);
        out.push(format!("{before}{}{after}", enc(bytes[i])));
        out.push(format!("{before}%25{:02X}{after}", bytes[i]));
        out.push(format!(
            "{before}{}{after}",
            enc(bytes[i]).to_ascii_lowercase()
        ));
    }
    let rest = &path[4..];
    let all = |keep_slash: bool| -> String {
        rest.bytes()
            .map(|b| match b {
                b'/' if keep_slash => "/".to_owned(),
                b => enc(b),
            })
            .collect()
    };
    out.push(format!("/v2/{}", all(true)));
    out.push(format!("/v2/{}", all(false)));
    for (i, _) in path.match_indices('/').skip(1) {
        let (before, after) = (&path[..i], &path[i..]);
        for insert in ["/", "/.", "/x/..", "/%2e", "/x/%2e%2e", "/%2E%2E/v2", "/.."] {
            out.push(format!("{before}{insert}{after}"));
        }
        out.push(format!("{before};x=1{after}"));
    }
    out.push(format!("{path}/"));
    out.push(format!("{path};x=1"));
    out.push(path.replacen("/v2/", "/V2/", 1));
    out.push(
        path.replace("manifests", "Manifests")
            .replace("blobs", "Blobs"),
    );
    out.push(path.replace("mygroup", "MYGROUP"));
    out.push(format!("/v2/../{}", &path[1..]));
    out.push(format!("//{}", &path[1..]));
    for absolute in [
        path.to_owned(),
        path.replacen("manifests", "manifest%73", 1),
    ] {
        out.push(format!("http://127.0.0.1:{port}{absolute}"));
    }
    out.sort();
    out.dedup();
    out
}

struct Base {
    method: &'static str,
    path: String,
    query: Option<String>,
    content_type: Option<&'static str>,
    body: Vec<u8>,
    effect: Effect,
}

fn bases(seed: &Seed) -> Vec<Base> {
    let base = |method, path: String, effect| Base {
        method,
        path,
        query: None,
        content_type: None,
        body: Vec::new(),
        effect,
    };
    vec![
        base(
            "GET",
            format!("/v2/{SECRET}/manifests/t"),
            Effect::ReadsManifest,
        ),
        base(
            "HEAD",
            format!("/v2/{SECRET}/manifests/t"),
            Effect::ReadsManifestHead,
        ),
        base(
            "GET",
            format!("/v2/{SECRET}/manifests/{}", seed.manifest_digest),
            Effect::ReadsManifest,
        ),
        base(
            "GET",
            format!("/v2/{SECRET}/blobs/{}", seed.layer_digest),
            Effect::ReadsBlob,
        ),
        base("GET", format!("/v2/{SECRET}/tags/list"), Effect::ListsTags),
        base("GET", "/v2/_catalog".into(), Effect::ListsCatalog),
        Base {
            content_type: Some(OCI_MANIFEST),
            body: seed.manifest.clone(),
            ..base(
                "PUT",
                format!("/v2/{SECRET}/manifests/evil"),
                Effect::WritesTag,
            )
        },
        base(
            "POST",
            format!("/v2/{SECRET}/blobs/uploads/"),
            Effect::StartsUpload,
        ),
        base(
            "DELETE",
            format!("/v2/{SECRET}/manifests/{}", seed.victim_digest),
            Effect::DeletesManifest,
        ),
    ]
}

/// Mount requests: `from` moved, repeated, re-encoded, into form and multipart bodies. Each
/// mounts into a fresh repository of alice's own project, so a 201 can only mean the blob
/// came out of the secret repository.
fn mount_variants(seed: &Seed) -> Vec<(Option<String>, Option<&'static str>, Vec<u8>)> {
    let b = &seed.layer_digest;
    let s = SECRET;
    let m = MINE;
    let form = Some("application/x-www-form-urlencoded");
    let multipart = |fields: &[(&str, &str)]| {
        let mut body = String::new();
        for (name, value) in fields {
            body.push_str(&format!(
                "--XyZ\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n"
            ));
        }
        body.push_str("--XyZ--\r\n");
        body.into_bytes()
    };
    let q = |text: String| Some(text);
    vec![
        (q(format!("mount={b}&from={s}")), None, vec![]),
        (q(format!("from={s}&mount={b}")), None, vec![]),
        (q(format!("mount={b}&from={s}&from={m}")), None, vec![]),
        (q(format!("mount={b}&from={m}&from={s}")), None, vec![]),
        (q(format!("mount={b}&fr%6Fm={s}")), None, vec![]),
        (q(format!("mount={b}&from={m}&fr%6Fm={s}")), None, vec![]),
        (q(format!("mount={b}&from={m};from={s}")), None, vec![]),
        (q(format!("%6Dount={b}&from={s}")), None, vec![]),
        (q(format!("mount={b}&from=mygroup%2Fsecond")), None, vec![]),
        (q(format!("mount={b}&from={s}&mount={b}")), None, vec![]),
        (
            q(format!("mount={}", b.replace(':', "%3A"))),
            form,
            format!("from={s}").into_bytes(),
        ),
        (
            q(format!("mount={b}&from={m}")),
            form,
            format!("from={s}").into_bytes(),
        ),
        (None, form, format!("mount={b}&from={s}").into_bytes()),
        (
            None,
            Some("application/x-www-form-urlencoded; charset=utf-8"),
            format!("mount={b}&from={s}").into_bytes(),
        ),
        (
            None,
            Some("multipart/form-data; boundary=XyZ"),
            multipart(&[("mount", b), ("from", s)]),
        ),
        (
            q(format!("mount={b}")),
            Some("Multipart/Form-Data; boundary=XyZ"),
            multipart(&[("from", s)]),
        ),
    ]
}

#[test]
fn no_variant_the_registry_serves_on_a_private_repository_passes_the_gateway_without_its_scope() {
    let stack = Stack::with(StackOptions {
        registry_auth: RegistryAuth::None,
        ..StackOptions::default()
    });
    let (gateway, registry) = (gateway_port(&stack), stack.registry.port);
    let seed = Seed::push(registry);
    let fresh = Cell::new(0);
    let next_repo = || {
        fresh.set(fresh.get() + 1);
        format!("{MINE}/m{}", fresh.get())
    };
    let mount_repos: Vec<String> = (1..=2 * mount_variants(&seed).len())
        .map(|i| format!("repository:{MINE}/m{i}:pull,push"))
        .collect();
    let mut scopes = vec![
        format!("repository:{SECRET}:pull,push,delete"),
        format!("repository:{MINE}:pull,push"),
        "registry:catalog:*".to_owned(),
    ];
    scopes.extend(mount_repos);
    let scope_refs: Vec<&str> = scopes.iter().map(String::as_str).collect();
    let attacker = stack.token("alice", ALICE_PAT, &scope_refs);
    assert!(
        !Stack::granted(&attacker)
            .iter()
            .any(|g| g.contains(SECRET) || g.contains("catalog")),
        "the attacker's token must carry nothing on {SECRET}: {:?}",
        Stack::granted(&attacker)
    );

    let mut requests: Vec<(RawRequest, Effect)> = Vec::new();
    for base in bases(&seed) {
        for path in path_variants(&base.path, gateway) {
            let target = match &base.query {
                Some(q) => format!("{path}?{q}"),
                None => path,
            };
            let mut request = RawRequest::new(base.method, &target)
                .header("Accept", OCI_MANIFEST)
                .body(&base.body);
            if let Some(ct) = base.content_type {
                request = request.header("Content-Type", ct);
            }
            requests.push((request, base.effect));
        }
    }

    let (mut dangerous, mut passed, mut not_json) = (0, Vec::new(), Vec::new());
    let mut run = |direct: &RawRequest, via_gateway: &RawRequest, effect: Effect| {
        let direct_reply = direct.send(registry);
        let direct_served = served(effect, &direct_reply, &seed);
        if effect == Effect::DeletesManifest && direct_served {
            seed.restore_victim();
        }
        let through = via_gateway.send(gateway);
        if served(effect, &through, &seed) {
            passed.push(format!(
                "{} {} -> {} {}",
                via_gateway.method,
                via_gateway.target,
                through.status,
                through.text().chars().take(120).collect::<String>()
            ));
            if effect == Effect::DeletesManifest {
                seed.restore_victim();
            }
        }
        if direct_served {
            dangerous += 1;
        }
        // A refusal is in the registry's JSON error shape, never a bare status.
        if (400..500).contains(&through.status) && via_gateway.method != "HEAD" {
            let code = serde_json::from_slice::<serde_json::Value>(&through.body)
                .ok()
                .and_then(|body| body["errors"][0]["code"].as_str().map(str::to_owned));
            if code.is_none() {
                not_json.push(format!(
                    "{} {} -> {} {:?}",
                    via_gateway.method,
                    via_gateway.target,
                    through.status,
                    through.text()
                ));
            }
        }
    };
    for (request, effect) in &requests {
        run(request, &request.clone().bearer(&attacker), *effect);
    }
    for (query, content_type, body) in mount_variants(&seed) {
        // Direct and through the gateway each mount into a repository of their own.
        let [direct, through] = [next_repo(), next_repo()].map(|repo| {
            let target = match &query {
                Some(q) => format!("/v2/{repo}/blobs/uploads/?{q}"),
                None => format!("/v2/{repo}/blobs/uploads/"),
            };
            let mut request = RawRequest::new("POST", &target).body(&body);
            if let Some(ct) = content_type {
                request = request.header("Content-Type", ct);
            }
            request
        });
        run(&direct, &through.bearer(&attacker), Effect::MountsBlob);
    }

    eprintln!(
        "{} variants, {dangerous} served by the registry, {} through the gateway",
        requests.len() + mount_variants(&seed).len(),
        passed.len()
    );
    // The corpus holds real attacks: the registry serves many of these variants.
    assert!(
        dangerous >= 100,
        "only {dangerous} variants were served by the registry: the corpus lost its teeth"
    );
    assert!(
        passed.is_empty(),
        "{} of {} variants reached the secret repository through the gateway without its scope:\n{}",
        passed.len(),
        requests.len(),
        passed.join("\n")
    );
    assert!(
        not_json.is_empty(),
        "refusals without the registry's JSON error body:\n{}",
        not_json.join("\n")
    );
}

fn gateway_port(stack: &Stack) -> u16 {
    stack
        .gateway
        .host
        .rsplit(':')
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

/// The same reading holds for a client that is allowed: encoded targets are decoded and
/// served, not refused, and what reaches the registry is the decoded target.
#[test]
fn an_allowed_client_gets_encoded_targets_served_as_the_registry_reads_them() {
    let stack = Stack::with(StackOptions {
        registry_auth: RegistryAuth::None,
        ..StackOptions::default()
    });
    let gateway = gateway_port(&stack);
    let seed = Seed::push(stack.registry.port);
    let root = stack.token(
        "root",
        ROOT_PAT,
        &[&format!("repository:{SECRET}:pull"), "registry:catalog:*"],
    );
    for target in [
        format!("/v2/{SECRET}/manifests/t"),
        format!("/v2/{SECRET}/manifest%73/t"),
        "/v2/mygroup/%73econd/manifests/t".to_owned(),
        format!(
            "/v2/{SECRET}/manifests/{}",
            seed.manifest_digest.replace(':', "%3A")
        ),
    ] {
        let reply = RawRequest::new("GET", &target)
            .header("Accept", OCI_MANIFEST)
            .bearer(&root)
            .send(gateway);
        assert!(
            served(Effect::ReadsManifest, &reply, &seed),
            "{target}: {} {}",
            reply.status,
            reply.text()
        );
    }
    let catalog = RawRequest::new("GET", "/v2/_catalo%67")
        .bearer(&root)
        .send(gateway);
    assert!(
        served(Effect::ListsCatalog, &catalog, &seed),
        "{}",
        catalog.status
    );
}

/// Behind a registry with token auth of its own, the registry would refuse these too; the
/// gateway must still read them as requests on the secret repository: refuse them itself,
/// with its challenge naming the scope, and write the refusal to the audit log.
#[test]
fn behind_a_token_auth_registry_encoded_requests_are_refused_and_audited_by_the_gateway() {
    let stack = Stack::with(StackOptions {
        gateway: GatewayOptions {
            extra: "audit: { path: audit.log }\n".into(),
            ..GatewayOptions::new("")
        },
        ..StackOptions::default()
    });
    let gateway = gateway_port(&stack);
    let attacker = stack.token(
        "alice",
        ALICE_PAT,
        &[&format!("repository:{MINE}:pull,push")],
    );
    for (method, target) in [
        ("GET", format!("/v2/{SECRET}/manifest%73/t")),
        ("PUT", format!("/v2/{SECRET}/manifest%73/evil")),
        (
            "DELETE",
            format!("/v2/{SECRET}/blob%73/sha256:{}", "0".repeat(64)),
        ),
        ("GET", "/v2/%5Fcatalog".to_owned()),
    ] {
        let reply = RawRequest::new(method, &target)
            .bearer(&attacker)
            .send(gateway);
        assert_eq!(reply.status, 401, "{method} {target}: {}", reply.text());
        let challenge = reply.header("www-authenticate").unwrap_or_default();
        assert!(
            challenge.contains("error=\"insufficient_scope\"")
                && (challenge.contains(SECRET) || challenge.contains("registry:catalog:*")),
            "{method} {target}: the gateway's own challenge names the scope: {challenge}"
        );
    }
    // Hidden mount sources never reach the registry: refused before it.
    let hidden = RawRequest::new(
        "POST",
        &format!("/v2/{MINE}/blobs/uploads/?mount=sha256:{}", "0".repeat(64)),
    )
    .header("Content-Type", "application/x-www-form-urlencoded")
    .body(format!("from={SECRET}").as_bytes())
    .bearer(&attacker)
    .send(gateway);
    assert_eq!(hidden.status, 400, "{}", hidden.text());
    let audit = stack.gateway.dir().join("audit.log");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let refused = loop {
        let text = std::fs::read_to_string(&audit).unwrap_or_default();
        let refused: Vec<serde_json::Value> = text
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|r| r["event"] == "refused" && r["repository"] == SECRET)
            .collect();
        if refused.len() >= 3 || std::time::Instant::now() > deadline {
            break refused;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    assert_eq!(
        refused.len(),
        3,
        "each encoded request on {SECRET} is an audit refusal: {refused:?}"
    );
}

/// A request framed two ways (Content-Length and chunked) must not let a second request
/// hidden in its body reach the registry unchecked: hyper reads one framing, and the
/// forwarded request carries exactly the body it read.
#[test]
fn a_request_smuggled_inside_a_body_framed_two_ways_never_reaches_the_registry() {
    let stack = Stack::with(StackOptions {
        registry_auth: RegistryAuth::None,
        ..StackOptions::default()
    });
    let gateway = gateway_port(&stack);
    let token = stack.token(
        "alice",
        ALICE_PAT,
        &[&format!("repository:{MINE}:pull,push")],
    );
    let start = RawRequest::new("POST", &format!("/v2/{MINE}/blobs/uploads/"))
        .bearer(&token)
        .send(gateway);
    assert_eq!(start.status, 202, "{}", start.text());
    let location = location_target(start.header("location").unwrap());
    let hidden = "GET /v2/_catalog HTTP/1.1\r\nHost: registry\r\n\r\n";
    for (framing, body) in [
        (
            // Content-Length says 5 ("0\r\n\r\n"); chunked says the rest is one more request.
            "Content-Length: 5\r\nTransfer-Encoding: chunked\r\n",
            format!("0\r\n\r\n{hidden}"),
        ),
        (
            "Transfer-Encoding: chunked\r\nContent-Length: 5\r\n",
            format!("{:x}\r\n{hidden}\r\n0\r\n\r\n", hidden.len()),
        ),
        (
            "Content-Length: 5\r\nContent-Length: 60\r\n",
            format!("hello{hidden}"),
        ),
    ] {
        let head = format!(
            "PATCH {location} HTTP/1.1\r\nHost: 127.0.0.1:{gateway}\r\nAuthorization: Bearer {token}\r\nContent-Type: application/octet-stream\r\n{framing}\r\n"
        );
        let mut stream = std::net::TcpStream::connect(("127.0.0.1", gateway)).unwrap();
        stream
            .set_read_timeout(Some(std::time::Duration::from_secs(10)))
            .unwrap();
        use std::io::{Read, Write};
        stream.write_all(head.as_bytes()).unwrap();
        stream.write_all(body.as_bytes()).unwrap();
        let _ = stream.shutdown(std::net::Shutdown::Write);
        let mut answer = Vec::new();
        let _ = stream.read_to_end(&mut answer);
    }
    std::thread::sleep(std::time::Duration::from_millis(500));
    let log = stack.registry.log();
    assert!(
        log.contains("/blobs/uploads/"),
        "the registry logs the requests it gets (the check below means something):\n{log}"
    );
    assert!(
        !log.contains("_catalog"),
        "a request hidden in a body reached the registry:\n{log}"
    );
}
