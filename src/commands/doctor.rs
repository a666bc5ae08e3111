//! `portcullis doctor URL`: walk the client side of login and push against any registry
//! (portcullis, GitLab's, others) and say, step by step, what works and how to fix what does
//! not: DNS, TCP, TLS and certificate trust, the `/v2/` challenge and its realm, the realm's
//! reachability, the token request, the token's claims, a `/v2/` call with the token, and an
//! upload session start and cancel when a repository is given.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use http::{header, Request, StatusCode};
use http_body_util::BodyExt;
use serde::Serialize;

use crate::body;
use crate::config::UpstreamSettings;
use crate::diagnose::trust::{self, param};
use crate::proxy::forward::Upstream;

const STEP_TIMEOUT: Duration = Duration::from_secs(10);

pub struct DoctorOptions {
    pub url: String,
    pub username: Option<String>,
    pub password: Option<String>,
    pub repository: Option<String>,
    pub ca: Option<std::path::PathBuf>,
    /// Send credentials to a plain-HTTP realm on another origin than `url` (refused otherwise).
    pub allow_insecure_realm: bool,
}

/// One step's outcome.
#[derive(Debug, Clone, Serialize)]
pub struct Step {
    pub step: &'static str,
    pub ok: bool,
    /// Passed, but something is unsafe (shown as WARN).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub warning: bool,
    pub detail: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
}

struct Walk {
    steps: Vec<Step>,
}

impl Walk {
    fn pass(&mut self, step: &'static str, detail: impl Into<String>) {
        self.steps.push(Step {
            step,
            ok: true,
            warning: false,
            detail: detail.into(),
            fix: None,
        });
    }

    fn warn(&mut self, step: &'static str, detail: impl Into<String>, fix: impl Into<String>) {
        self.steps.push(Step {
            step,
            ok: true,
            warning: true,
            detail: detail.into(),
            fix: Some(fix.into()),
        });
    }

    fn fail(
        &mut self,
        step: &'static str,
        detail: impl Into<String>,
        fix: impl Into<String>,
    ) -> Vec<Step> {
        self.steps.push(Step {
            step,
            ok: false,
            warning: false,
            detail: detail.into(),
            fix: Some(fix.into()),
        });
        std::mem::take(&mut self.steps)
    }
}

/// Run every step; stop at the first failure (the next steps depend on it).
pub async fn doctor(options: &DoctorOptions) -> Vec<Step> {
    let mut walk = Walk { steps: Vec::new() };
    let uri: http::Uri = match options.url.trim_end_matches('/').parse() {
        Ok(uri) => uri,
        Err(e) => {
            return walk.fail(
                "url",
                format!("{:?} is not a URL: {e}", options.url),
                "write it as https://host[:port]",
            )
        }
    };
    let (Some(scheme), Some(host)) = (uri.scheme_str(), uri.host()) else {
        return walk.fail(
            "url",
            format!("{:?} has no scheme or host", options.url),
            "write it as https://host[:port]",
        );
    };
    let port = uri
        .port_u16()
        .unwrap_or(if scheme == "https" { 443 } else { 80 });
    let origin = format!(
        "{scheme}://{}",
        uri.authority().map(|a| a.as_str()).unwrap_or(host)
    );

    // DNS and TCP.
    let addresses: Vec<std::net::SocketAddr> = match tokio::net::lookup_host((host, port)).await {
        Ok(found) => found.collect(),
        Err(e) => {
            return walk.fail(
                "dns",
                format!("{host} does not resolve: {e}"),
                "check the name, /etc/hosts and the resolver",
            )
        }
    };
    walk.pass(
        "dns",
        format!(
            "{host} -> {}",
            addresses
                .iter()
                .map(|a| a.ip().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    );
    match tokio::time::timeout(STEP_TIMEOUT, tokio::net::TcpStream::connect((host, port))).await {
        Ok(Ok(_)) => walk.pass("tcp", format!("connected to {host}:{port}")),
        Ok(Err(e)) => {
            return walk.fail(
                "tcp",
                format!("cannot connect to {host}:{port}: {e}"),
                "is the registry (or gateway) listening there, and is a firewall in the way?",
            )
        }
        Err(_) => {
            return walk.fail(
                "tcp",
                format!("no answer from {host}:{port} within {STEP_TIMEOUT:?}"),
                "a firewall may be dropping the connection",
            )
        }
    }

    let settings = UpstreamSettings {
        url: origin.parse().unwrap_or(uri.clone()),
        ca: options.ca.clone(),
        connect_timeout: STEP_TIMEOUT,
        response_timeout: STEP_TIMEOUT,
    };
    let client = match super::doctor_tls::client_config(&settings)
        .and_then(|tls| Upstream::with_tls(&settings, tls).map_err(|e| e.to_string()))
    {
        Ok(client) => client,
        Err(e) => return walk.fail("tls", e, "check --ca-file"),
    };
    let get = |url: String, authorization: Option<String>| {
        let mut request = Request::get(url);
        if let Some(value) = authorization {
            request = request.header(header::AUTHORIZATION, value);
        }
        request.body(body::empty()).expect("a GET request")
    };

    // TLS and the /v2/ challenge (the first HTTP exchange).
    let answer = match client.send(get(format!("{origin}/v2/"), None)).await {
        Ok(answer) => answer,
        Err(e) if scheme == "https" => {
            let (detail, fix) = tls_failure(&e.to_string(), host);
            return walk.fail("tls", detail, fix);
        }
        Err(e) => {
            return walk.fail(
                "http",
                format!("GET /v2/ failed: {e}"),
                "is this an HTTP registry endpoint? try https://",
            )
        }
    };
    if scheme == "https" {
        walk.pass("tls", "handshake done, certificate trusted");
    }
    let status = answer.status();
    let challenge = trust::challenge_of(answer.headers());
    if status == StatusCode::OK {
        walk.pass(
            "challenge",
            "GET /v2/ answered 200 without credentials: this registry has no auth",
        );
        return walk.steps;
    }
    let (realm, service) = (param(&challenge, "realm"), param(&challenge, "service"));
    let Some(realm) = realm.filter(|_| {
        status == StatusCode::UNAUTHORIZED && challenge.to_ascii_lowercase().starts_with("bearer")
    }) else {
        return walk.fail(
            "challenge",
            format!("GET /v2/ answered {status} with challenge {challenge:?}"),
            "a registry answers 401 with `WWW-Authenticate: Bearer realm=...,service=...`; if this is a proxy, check that it forwards /v2/ to the registry",
        );
    };
    walk.pass(
        "challenge",
        format!(
            "401 Bearer realm={realm:?} service={:?}",
            service.as_deref().unwrap_or("")
        ),
    );

    // The realm is reachable.
    match client.send(get(realm.clone(), None)).await {
        Ok(answer) => walk.pass("realm", format!("{realm} answers ({})", answer.status())),
        Err(e) => {
            return walk.fail(
                "realm",
                format!("the token endpoint {realm} cannot be reached: {e}"),
                "the registry's realm names an address clients cannot reach: behind portcullis it is rewritten to public_url + /jwt/auth; elsewhere fix the registry's auth.token.realm",
            )
        }
    }

    // Clients send their password to the realm: over plain HTTP to a host other than the one
    // they were told to use, anyone on the way reads it (and a registry could name any host).
    let insecure_realm = realm
        .parse::<http::Uri>()
        .ok()
        .filter(|r| r.scheme_str() != Some("https") && !same_origin(r, &uri))
        .map(|r| {
            format!(
                "{}://{}",
                r.scheme_str().unwrap_or("?"),
                r.authority().map(|a| a.as_str()).unwrap_or("?")
            )
        });
    const INSECURE_FIX: &str = "make the realm https (behind portcullis: an https public_url; elsewhere the registry's auth.token.realm)";
    if let Some(realm_origin) = &insecure_realm {
        walk.warn(
            "realm",
            format!("WARNING: the realm {realm_origin} is plain HTTP on another origin than {origin}: clients send their passwords there unencrypted"),
            INSECURE_FIX,
        );
    }

    // The token request.
    let Some(username) = options.username.as_deref() else {
        walk.pass("token", "skipped (no -u USER given)");
        return walk.steps;
    };
    if let Some(realm_origin) = &insecure_realm {
        if !options.allow_insecure_realm {
            return walk.fail(
                "token",
                format!("refused to send the credentials of {username:?} over plain HTTP to {realm_origin}, another origin than {origin}"),
                format!("{INSECURE_FIX}, or pass --allow-insecure-realm if the network between here and {realm_origin} is trusted"),
            );
        }
        walk.warn(
            "token",
            format!("WARNING: sending the credentials of {username:?} over plain HTTP to {realm_origin} (--allow-insecure-realm)"),
            INSECURE_FIX,
        );
    }
    let repository = options.repository.as_deref();
    let mut url = format!("{realm}?account={username}");
    if let Some(service) = &service {
        url.push_str(&format!("&service={service}"));
    }
    if let Some(repository) = repository {
        // delete too, to cancel the test upload (distribution asks delete for any DELETE);
        // the token endpoint leaves it out for those who may not delete.
        url.push_str(&format!("&scope=repository:{repository}:pull,push,delete"));
    }
    let basic = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!(
            "{username}:{}",
            options.password.as_deref().unwrap_or("")
        ))
    );
    let answer = match client.send(get(url, Some(basic))).await {
        Ok(answer) => answer,
        Err(e) => {
            return walk.fail(
                "token",
                format!("the token request failed: {e}"),
                "see the realm step",
            )
        }
    };
    let status = answer.status();
    let text = String::from_utf8_lossy(
        &answer
            .into_body()
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default(),
    )
    .into_owned();
    if status != StatusCode::OK {
        let fix = match status {
            StatusCode::FORBIDDEN if text.contains("access forbidden") => "the token endpoint got no credentials: something between this client and it removes the Authorization header (a proxy, or a redirect); pass it through",
            StatusCode::FORBIDDEN => "the client or user is refused (too many failed logins?)",
            StatusCode::UNAUTHORIZED => "the username, password or token is not accepted (see the message); a token needs read_registry (and write_registry to push)",
            _ => "see the message",
        };
        return walk.fail("token", format!("{status}: {}", text.trim()), fix);
    }
    let body: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
    let Some(token) = body["token"]
        .as_str()
        .or(body["access_token"].as_str())
        .map(str::to_owned)
    else {
        return walk.fail(
            "token",
            format!("200 without a token: {}", text.trim()),
            "the token endpoint does not speak the docker token protocol",
        );
    };
    walk.pass("token", format!("200, expires_in {}", body["expires_in"]));

    // The token's claims.
    let claims = token
        .split('.')
        .nth(1)
        .and_then(|part| {
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(part.trim_end_matches('='))
                .ok()
        })
        .and_then(|bytes| serde_json::from_slice::<serde_json::Value>(&bytes).ok());
    let Some(claims) = claims else {
        return walk.fail(
            "claims",
            "the token is not a JWT the doctor can read",
            "registries of the docker token protocol use JWTs",
        );
    };
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs() as i64;
    let (iat, nbf, exp) = (
        claims["iat"].as_i64().unwrap_or(0),
        claims["nbf"].as_i64().unwrap_or(0),
        claims["exp"].as_i64().unwrap_or(0),
    );
    let naming = key_naming(&token);
    let summary = format!(
        "iss={} aud={} lifetime={}s access={}; {} bytes, {}",
        claims["iss"],
        claims["aud"],
        exp - iat,
        claims["access"],
        token.len(),
        naming.describe()
    );
    if nbf > now + 60 || exp < now {
        return walk.fail(
            "claims",
            format!(
                "{summary}; nbf/exp vs the local clock: nbf in {}s, exp in {}s",
                nbf - now,
                exp - now
            ),
            "the clocks of this machine and the token service disagree: synchronise them (NTP)",
        );
    }
    if let (Some(service), Some(aud)) = (&service, claims["aud"].as_str()) {
        if aud != service {
            return walk.fail("claims", summary, format!("aud {aud:?} is not the registry's service {service:?}: token service and registry disagree on the service name"));
        }
    }
    if let Some(repository) = repository.filter(|r| !grants_anything_on(&claims, r)) {
        return walk.fail(
            "claims",
            format!("{summary}; the token grants {username:?} nothing on {repository:?}: either no project owns {repository:?}, or {username:?} has no role on the project that does"),
            format!("behind portcullis, the gateway's log says which: grep it for `{NO_PROJECT_LOG}` with repository={repository:?} (its `nearest` field names the configured path nearest to it: add the project to gateway.yaml's projects or use a path under that one); no such line means the project exists and {username:?} needs a role on it (developer or more to push)"),
        );
    }
    if repository.is_some() && !claims["access"].to_string().contains("push") {
        return walk.fail("claims", summary, "the token does not grant push on the repository: check the user's role and the token's scopes");
    }
    walk.pass("claims", summary);

    // A /v2/ call with the token.
    let bearer = format!("Bearer {token}");
    match client.send(get(format!("{origin}/v2/"), Some(bearer.clone()))).await {
        Ok(answer) if answer.status() == StatusCode::OK => walk.pass("v2", "GET /v2/ with the token: 200"),
        Ok(answer) if matches!(answer.status(), StatusCode::BAD_GATEWAY | StatusCode::SERVICE_UNAVAILABLE | StatusCode::GATEWAY_TIMEOUT) => {
            return walk.fail(
                "v2",
                format!("GET /v2/ with the token: {}: the registry behind {origin} is unreachable", answer.status()),
                "start the registry, or point the gateway at where it listens (upstream.url; `portcullis check --upstream` on the gateway's machine says what it finds)",
            )
        }
        Ok(answer) => {
            let mut fix = "the registry refuses the token service's tokens: its auth.token.rootcertbundle/issuer/service must match the token service (behind portcullis: `portcullis check --upstream`), or the Authorization header is stripped on /v2/".to_owned();
            if naming == KeyNaming::LibtrustKid {
                fix.push_str("; the token names its key by a libtrust kid alone (portcullis token.header: kid), which distribution 2.8 and Zot accept and distribution 3.x refuses: for 3.x use token.header: x5c or jwks");
            }
            return walk.fail(
                "v2",
                format!("GET /v2/ with the token: {}", answer.status()),
                fix,
            );
        }
        Err(e) => return walk.fail("v2", e.to_string(), "see the tcp/tls steps"),
    }

    // An upload session: start and cancel.
    if let Some(repository) = repository {
        let mut start = Request::post(format!("{origin}/v2/{repository}/blobs/uploads/"));
        start = start.header(header::AUTHORIZATION, bearer.clone());
        let answer = match client
            .send(start.body(body::empty()).expect("a POST request"))
            .await
        {
            Ok(answer) => answer,
            Err(e) => return walk.fail("upload", e.to_string(), "see the tcp/tls steps"),
        };
        if answer.status() != StatusCode::ACCEPTED {
            return walk.fail(
                "upload",
                format!("POST /v2/{repository}/blobs/uploads/: {}", answer.status()),
                "the token does not allow pushing there, or the registry is read-only",
            );
        }
        let location = answer
            .headers()
            .get(header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        let absolute = if location.starts_with('/') {
            format!("{origin}{location}")
        } else {
            location.clone()
        };
        if !absolute.starts_with(&origin) {
            return walk.fail("upload", format!("the upload Location names another address: {location}"), "clients send the next request of the upload without their token: set the registry's http.host to the address clients use (behind portcullis this is rewritten)");
        }
        let access = claims["access"].to_string();
        if !access.contains("\"delete\"") && !access.contains("\"*\"") {
            walk.warn(
                "upload",
                "session started (202), NOT cancelled: cancelling an upload needs delete on the repository, which this token lacks; the session stays open until the registry purges it (it counts in upload_sessions_open)",
                "run the doctor as a maintainer with a password or an api token to test the cancel too; otherwise nothing to fix",
            );
            return walk.steps;
        }
        let mut cancel = Request::delete(absolute);
        cancel = cancel.header(header::AUTHORIZATION, bearer);
        match client
            .send(cancel.body(body::empty()).expect("a DELETE request"))
            .await
        {
            Ok(answer) if answer.status().is_success() => walk.pass(
                "upload",
                format!("session started (202) and cancelled ({})", answer.status()),
            ),
            Ok(answer) => {
                let fix = if answer.status() == StatusCode::UNAUTHORIZED {
                    "the cancel (DELETE on the upload's Location) came back without the right to the upload: something between this client and the registry drops the Authorization header on DELETE, or the token does not cover the Location's repository"
                } else {
                    "see the registry's log for the cancel"
                };
                return walk.fail(
                    "upload",
                    format!(
                        "session started (202) but the cancel was refused ({}): the session stays open until the registry purges it (it counts in upload_sessions_open)",
                        answer.status()
                    ),
                    fix,
                );
            }
            Err(e) => {
                return walk.fail(
                    "upload",
                    format!("cancelling the session failed: {e}"),
                    "see the tcp/tls steps",
                )
            }
        }
    }
    walk.steps
}

/// The start of the gateway's log line for a repository no project owns (src/auth/endpoint.rs),
/// quoted so operators can grep for it.
const NO_PROJECT_LOG: &str = "no project owns this repository, so nothing is granted on it";

/// Does the token's `access` claim grant any action on `repository`?
/// How a token's header names the key that signed it: which registries can verify it.
#[derive(Debug, Clone, PartialEq, Eq)]
enum KeyNaming {
    /// A certificate chain (`x5c`) of this many certificates, with or without a `kid`.
    X5c(usize),
    /// Only a libtrust `kid` (twelve groups of four): distribution 2.8, Zot.
    LibtrustKid,
    /// Only another `kid` (an RFC 7638 thumbprint): distribution 3.x's `auth.token.jwks`.
    OtherKid,
    /// A `jwk` in the header.
    Jwk,
    /// Nothing readable.
    Unknown,
}

impl KeyNaming {
    fn describe(&self) -> String {
        match self {
            KeyNaming::X5c(n) => format!("the header carries the signing certificate chain (x5c, {n} certificate(s))"),
            KeyNaming::LibtrustKid => "the header names the key by its libtrust kid alone (no certificate: distribution 2.8 and Zot verify it, distribution 3.x does not)".into(),
            KeyNaming::OtherKid => "the header names the key by a kid alone (an RFC 7638 thumbprint: distribution 3.x with auth.token.jwks)".into(),
            KeyNaming::Jwk => "the header carries the public key (jwk)".into(),
            KeyNaming::Unknown => "the header names no key".into(),
        }
    }
}

fn key_naming(token: &str) -> KeyNaming {
    let header = token
        .split('.')
        .next()
        .and_then(|part| {
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(part.trim_end_matches('='))
                .ok()
        })
        .and_then(|bytes| serde_json::from_slice::<serde_json::Value>(&bytes).ok())
        .unwrap_or_default();
    if let Some(chain) = header["x5c"].as_array().filter(|c| !c.is_empty()) {
        return KeyNaming::X5c(chain.len());
    }
    if header.get("jwk").is_some() {
        return KeyNaming::Jwk;
    }
    match header["kid"].as_str() {
        Some(kid) if is_libtrust_kid(kid) => KeyNaming::LibtrustKid,
        Some(_) => KeyNaming::OtherKid,
        None => KeyNaming::Unknown,
    }
}

/// Twelve colon-separated groups of four base32 characters.
fn is_libtrust_kid(kid: &str) -> bool {
    let groups: Vec<&str> = kid.split(':').collect();
    groups.len() == 12
        && groups.iter().all(|g| {
            g.len() == 4
                && g.bytes()
                    .all(|b| b.is_ascii_uppercase() || (b'2'..=b'7').contains(&b))
        })
}

fn grants_anything_on(claims: &serde_json::Value, repository: &str) -> bool {
    claims["access"].as_array().is_some_and(|entries| {
        entries.iter().any(|entry| {
            entry["type"] == "repository"
                && entry["name"] == repository
                && entry["actions"].as_array().is_some_and(|a| !a.is_empty())
        })
    })
}

/// A TLS failure as a sentence and its fix, from rustls's error names.
fn tls_failure(error: &str, host: &str) -> (String, String) {
    const TRUST: &str = "give the CA that signed it with --ca-file (clients need it too: /etc/docker/certs.d/HOST:PORT/ca.crt for docker, --cert-dir for podman/skopeo)";
    // openssl's subjectAltName for the host: an address is an IP entry, a name a DNS one.
    let san = if host
        .trim_matches(['[', ']'])
        .parse::<std::net::IpAddr>()
        .is_ok()
    {
        format!("IP:{}", host.trim_matches(['[', ']']))
    } else {
        format!("DNS:{host}")
    };
    let (what, fix) = if error.contains("CaUsedAsEndEntity") {
        ("the server's certificate is a CA certificate (basicConstraints CA:TRUE, what a plain `openssl req -x509` makes) that is not one of the certificates given with --ca-file: docker, podman, skopeo and buildah accept such a certificate only when it is itself the one they trust".to_owned(),
         format!("give that very certificate with --ca-file (and to the clients: /etc/docker/certs.d/HOST:PORT/ca.crt for docker, --cert-dir for podman/skopeo), or make a server certificate: openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 365 -subj /CN={host} -addext subjectAltName={san} -addext basicConstraints=critical,CA:FALSE -keyout tls.key -out tls.crt"))
    } else if error.contains("UnknownIssuer") {
        (
            "the server's certificate is signed by a CA this machine does not trust".to_owned(),
            TRUST.to_owned(),
        )
    } else if error.contains("NotValidForName") {
        (
            format!("the server's certificate is not valid for {host}"),
            format!("make a certificate whose subjectAltName names {host} ({san})"),
        )
    } else if error.contains("Expired") {
        (
            "the server's certificate has expired".to_owned(),
            "renew it (portcullis reloads tls.cert on SIGHUP)".to_owned(),
        )
    } else if error.contains("NotValidYet") {
        (
            "the server's certificate is not valid yet".to_owned(),
            "check this machine's clock and the server's (NTP)".to_owned(),
        )
    } else if error.contains("InvalidContentType") || error.contains("CorruptMessage") {
        (
            "the server does not speak TLS on this port".to_owned(),
            "use http:// for a plain-HTTP listener, or the port TLS listens on".to_owned(),
        )
    } else {
        (
            "the TLS handshake or first request failed".to_owned(),
            TRUST.to_owned(),
        )
    };
    (format!("{what} ({error})"), fix)
}

/// Same scheme, host (ignoring case) and port (the scheme's default when absent).
fn same_origin(a: &http::Uri, b: &http::Uri) -> bool {
    let port = |u: &http::Uri| {
        u.port_u16().or(match u.scheme_str() {
            Some("https") => Some(443),
            Some("http") => Some(80),
            _ => None,
        })
    };
    a.scheme_str()
        .zip(b.scheme_str())
        .is_some_and(|(x, y)| x.eq_ignore_ascii_case(y))
        && a.host()
            .zip(b.host())
            .is_some_and(|(x, y)| x.eq_ignore_ascii_case(y))
        && port(a) == port(b)
}

/// The steps as terminal lines (with colours when `colour`).
pub fn render(steps: &[Step], colour: bool) -> String {
    let (green, yellow, red, reset) = if colour {
        ("\x1b[32m", "\x1b[33m", "\x1b[31m", "\x1b[0m")
    } else {
        ("", "", "", "")
    };
    let mut out = String::new();
    for step in steps {
        if step.warning {
            out.push_str(&format!(
                "{yellow}WARN{reset} {:<9} {}\n",
                step.step, step.detail
            ));
            if let Some(fix) = &step.fix {
                out.push_str(&format!("     {:<9} fix: {fix}\n", ""));
            }
        } else if step.ok {
            out.push_str(&format!(
                "{green}PASS{reset} {:<9} {}\n",
                step.step, step.detail
            ));
        } else {
            out.push_str(&format!(
                "{red}FAIL{reset} {:<9} {}\n",
                step.step, step.detail
            ));
            if let Some(fix) = &step.fix {
                out.push_str(&format!("     {:<9} fix: {fix}\n", ""));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::tls_failure;
    use super::{key_naming, KeyNaming};

    fn token_with_header(header: &str) -> String {
        use base64::Engine as _;
        let b64 = |t: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(t);
        format!("{}.{}.sig", b64(header), b64("{}"))
    }

    #[test]
    fn the_key_naming_is_read_from_the_header() {
        let kid = "FSPJ:5U5F:YWCV:LJTX:DJKD:63SZ:4SYA:MVDT:VKJP:XBDH:4GPD:I5RB";
        for (header, naming) in [
            (
                format!(r#"{{"alg":"ES256","kid":"{kid}","x5c":["MIIB","MIIC"]}}"#),
                KeyNaming::X5c(2),
            ),
            (
                format!(r#"{{"alg":"ES256","kid":"{kid}"}}"#),
                KeyNaming::LibtrustKid,
            ),
            (
                r#"{"alg":"ES256","kid":"onAjRypKr0uS7MD9ovOeeTMfrBYJRN6n9H3s5qHt3hw"}"#.into(),
                KeyNaming::OtherKid,
            ),
            (r#"{"alg":"ES256","jwk":{}}"#.into(), KeyNaming::Jwk),
            (r#"{"alg":"ES256"}"#.into(), KeyNaming::Unknown),
            ("not json".into(), KeyNaming::Unknown),
        ] {
            assert_eq!(key_naming(&token_with_header(&header)), naming, "{header}");
        }
        assert_eq!(key_naming("%%%"), KeyNaming::Unknown);
    }

    /// openssl needs `IP:` for an address in subjectAltName (`DNS:127.0.0.1` names no IP).
    #[test]
    fn the_certificate_fix_names_an_address_as_an_ip_entry() {
        let (_, fix) = tls_failure("Other(OtherError(CaUsedAsEndEntity))", "127.0.0.1");
        assert!(fix.contains("subjectAltName=IP:127.0.0.1 "), "{fix}");
        let (_, fix) = tls_failure("Other(OtherError(CaUsedAsEndEntity))", "registry.example");
        assert!(
            fix.contains("subjectAltName=DNS:registry.example "),
            "{fix}"
        );
    }
}
