//! Does the registry trust the gateway's tokens?
//!
//! The gateway mints a short-lived token with no access and presents it on `/v2/`. A registry
//! that answers 200 trusts it; one without auth answers 200 without any token; one that refuses
//! a token the gateway considers valid is told apart by what it does reveal: the `service` of
//! its own challenge, and its clock (the `Date` header). What it does not reveal (an unknown
//! key or another issuer) is named with both fixes.

use std::time::{Duration, SystemTime};

use http::{header, Request, StatusCode};
use time::OffsetDateTime;

use crate::auth::token::Tokens;
use crate::body;
use crate::config::TokenHeader;
use crate::proxy::forward::Upstream;
use crate::telemetry::metrics::{metrics, Diagnosis};

/// How far the registry's clock may be from ours before it is reported (its own leeway is 60 s).
const SKEW_REPORTED: Duration = Duration::from_secs(30);

/// What the probe found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Trust {
    /// The registry accepted a gateway token.
    Trusted,
    /// The registry has no auth of its own: the gateway is its only guard.
    NoAuth,
    /// The registry refused a token the gateway considers valid; each line a likely cause and
    /// its fix.
    Refused(Vec<String>),
    /// The registry could not be asked.
    Unreachable(String),
}

impl Trust {
    pub fn is_problem(&self) -> bool {
        matches!(self, Trust::Refused(_) | Trust::Unreachable(_))
    }
}

/// Probe the registry.
pub async fn probe(upstream: &Upstream, tokens: &Tokens, issuer: &str) -> Trust {
    let get = |bearer: Option<String>| {
        let mut request = Request::get(format!("{}/v2/", upstream.origin()));
        if let Some(token) = bearer {
            request = request.header(header::AUTHORIZATION, format!("Bearer {token}"));
        }
        request.body(body::empty())
    };
    let Ok(anonymous) = get(None) else {
        return Trust::Unreachable("cannot build the probe request".into());
    };
    let answer = match upstream.send(anonymous).await {
        Ok(answer) => answer,
        Err(error) => return Trust::Unreachable(error.to_string()),
    };
    if answer.status() == StatusCode::OK {
        return Trust::NoAuth;
    }
    let challenge = challenge_of(answer.headers());
    let token = match tokens.issue(
        "portcullis-trust-check",
        Vec::new(),
        None,
        SystemTime::now(),
    ) {
        Ok(issued) => issued.token,
        Err(error) => return Trust::Unreachable(format!("cannot sign a probe token: {error}")),
    };
    let Ok(probe) = get(Some(token)) else {
        return Trust::Unreachable("cannot build the probe request".into());
    };
    let answer = match upstream.send(probe).await {
        Ok(answer) => answer,
        Err(error) => return Trust::Unreachable(error.to_string()),
    };
    match answer.status() {
        StatusCode::OK => Trust::Trusted,
        StatusCode::UNAUTHORIZED => {
            let date = answer
                .headers()
                .get(header::DATE)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            Trust::Refused(causes(
                tokens.service(),
                issuer,
                tokens.header_mode(),
                &challenge,
                date.as_deref(),
                OffsetDateTime::now_utc(),
            ))
        }
        other => Trust::Unreachable(format!("the registry answered the probe with {other}")),
    }
}

/// Say what the probe found, at the level it deserves.
pub fn report(trust: &Trust, trigger: &str) {
    match trust {
        Trust::Trusted => tracing::info!(trigger, "the registry accepts the gateway's tokens"),
        Trust::NoAuth => tracing::info!(
            trigger,
            "the registry has no auth of its own: portcullis is its only guard, so it must not be reachable except through the gateway"
        ),
        Trust::Refused(causes) => {
            metrics().diagnosis(Diagnosis::UpstreamDistrust);
            if causes.iter().any(|c| c.starts_with(CLOCK_SKEW)) {
                metrics().diagnosis(Diagnosis::ClockSkew);
            }
            for cause in causes {
                tracing::warn!(trigger, "the registry refuses tokens the gateway considers valid (clients see 'unauthorized: authentication required'): {cause}");
            }
        }
        Trust::Unreachable(error) => tracing::warn!(trigger, "could not check whether the registry trusts the gateway's tokens: {error}"),
    }
}

/// Run the probe at most once per `RUNTIME_INTERVAL`, when the registry refused a token the
/// gateway had just verified.
pub struct RuntimeCheck {
    last: std::sync::atomic::AtomicU64,
}

/// At most one runtime probe per this interval.
pub const RUNTIME_INTERVAL: Duration = Duration::from_secs(300);

impl Default for RuntimeCheck {
    fn default() -> Self {
        RuntimeCheck {
            last: std::sync::atomic::AtomicU64::new(0),
        }
    }
}

impl RuntimeCheck {
    /// True when a probe may run now (and records that it does).
    pub fn due(&self) -> bool {
        use std::sync::atomic::Ordering;
        let now = SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        let last = self.last.load(Ordering::Relaxed);
        (last == 0 || now.saturating_sub(last) >= RUNTIME_INTERVAL.as_secs())
            && self
                .last
                .compare_exchange(last, now.max(1), Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
    }
}

/// How a clock-skew cause starts.
const CLOCK_SKEW: &str = "clock skew";

/// The likely causes of a refusal, from what the registry reveals.
pub fn causes(
    service: &str,
    issuer: &str,
    mode: TokenHeader,
    challenge: &str,
    date: Option<&str>,
    now: OffsetDateTime,
) -> Vec<String> {
    let mut causes = Vec::new();
    if let Some(theirs) = param(challenge, "service").filter(|s| s != service) {
        causes.push(format!(
            "service mismatch: the registry expects tokens for service {theirs:?}, the gateway issues them for {service:?}: set token.service to {theirs:?}, or the registry's auth.token.service to {service:?}"
        ));
    }
    if let Some(their_time) = date.and_then(parse_http_date) {
        let skew = their_time - now;
        if skew.unsigned_abs() > SKEW_REPORTED {
            causes.push(format!(
                "{CLOCK_SKEW}: the registry's clock is {}s {} the gateway's (its Date header says {}); tokens look {} to it: synchronise both clocks (NTP)",
                skew.whole_seconds().abs(),
                if skew.is_negative() { "behind" } else { "ahead of" },
                date.unwrap_or_default(),
                if skew.is_negative() { "not yet valid" } else { "expired" }
            ));
        }
    }
    if causes.is_empty() && mode == TokenHeader::Kid {
        causes.push(format!(
            "the registry does not trust the gateway's signing key or issuer: with token.header: kid tokens carry only the signing key's libtrust kid and no certificate; distribution 2.8 finds that kid among the keys of its auth.token.rootcertbundle, which must be the gateway's certificate (token.certificate; `portcullis init` prints the block), and its auth.token.issuer must be {issuer:?}; Zot verifies with its http.auth.bearer.cert, which must be that certificate; distribution 3.x refuses such tokens (it looks kids up by RFC 7638 thumbprint): for it set token.header: x5c (the default, with rootcertbundle) or jwks (with an auth.token.jwks file)"
        ));
    }
    if causes.is_empty() {
        causes.push(format!(
            "the registry does not trust the gateway's signing key or issuer: its auth.token.rootcertbundle must be the gateway's certificate (token.certificate; `portcullis init` prints the block) and its auth.token.issuer must be {issuer:?}; with token.header: x5c (the default) tokens carry the certificate, which distribution 2.8, 3.x and Zot (its http.auth.bearer.cert) check against that certificate; a distribution 3.x given only an auth.token.jwks file (a local copy of public_url/jwt/jwks.json, which it does not fetch) refuses x5c tokens and needs token.header: jwks"
        ));
    }
    causes
}

/// The `WWW-Authenticate` value of an answer, or "".
pub fn challenge_of(headers: &http::HeaderMap) -> String {
    headers
        .get(header::WWW_AUTHENTICATE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned()
}

/// A parameter of a `Bearer k="v",...` challenge.
pub fn param(challenge: &str, name: &str) -> Option<String> {
    let start = challenge.find(&format!("{name}=\""))? + name.len() + 2;
    let end = challenge[start..].find('"')? + start;
    Some(challenge[start..end].to_owned())
}

/// An HTTP date (`Wed, 25 Nov 2026 08:13:17 GMT`).
fn parse_http_date(text: &str) -> Option<OffsetDateTime> {
    let format = time::macros::format_description!(
        "[weekday repr:short], [day] [month repr:short] [year] [hour]:[minute]:[second] GMT"
    );
    time::PrimitiveDateTime::parse(text.trim(), format)
        .ok()
        .map(|t| t.assume_utc())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> OffsetDateTime {
        parse_http_date("Wed, 25 Nov 2026 08:00:00 GMT").unwrap()
    }

    #[test]
    fn a_service_mismatch_is_read_from_the_registrys_challenge() {
        let causes = causes(
            "container_registry",
            "portcullis",
            TokenHeader::X5c,
            r#"Bearer realm="x",service="other""#,
            None,
            now(),
        );
        assert_eq!(causes.len(), 1);
        assert!(causes[0].starts_with("service mismatch") && causes[0].contains("\"other\""));
    }

    #[test]
    fn clock_skew_is_read_from_the_date_header() {
        let causes = causes(
            "s",
            "i",
            TokenHeader::X5c,
            r#"Bearer service="s""#,
            Some("Wed, 25 Nov 2026 07:58:00 GMT"),
            now(),
        );
        assert!(
            causes[0].starts_with("clock skew: the registry's clock is 120s behind"),
            "{causes:?}"
        );
        let ok = super::causes(
            "s",
            "i",
            TokenHeader::X5c,
            r#"Bearer service="s""#,
            Some("Wed, 25 Nov 2026 08:00:10 GMT"),
            now(),
        );
        assert!(
            ok[0].contains("rootcertbundle"),
            "small skew is not blamed: {ok:?}"
        );
    }

    #[test]
    fn otherwise_the_key_or_issuer_is_named_with_both_fixes() {
        let causes = causes(
            "s",
            "portcullis",
            TokenHeader::X5c,
            r#"Bearer service="s""#,
            None,
            now(),
        );
        assert!(causes[0].contains("rootcertbundle") && causes[0].contains("\"portcullis\""));
    }

    #[test]
    fn in_kid_mode_the_registries_that_accept_it_are_named() {
        let causes = causes(
            "s",
            "portcullis",
            TokenHeader::Kid,
            r#"Bearer service="s""#,
            None,
            now(),
        );
        assert_eq!(causes.len(), 1);
        assert!(
            causes[0].contains("token.header: kid")
                && causes[0].contains("distribution 2.8")
                && causes[0].contains("distribution 3.x refuses")
                && causes[0].contains("rootcertbundle"),
            "{causes:?}"
        );
    }
}
