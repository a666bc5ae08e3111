//! The token page's HTML: plain, accessible, self-contained.
//!
//! Every string that did not come from this file goes through [`esc`] (token names,
//! usernames, project paths, messages). No external assets: the stylesheet and the one small
//! script (the copy buttons) are inline, and the Content-Security-Policy allows exactly those
//! two by their SHA-256 ([`content_security_policy`]), so an injected tag could run nothing.
//! Every page works without JavaScript: the copy buttons are `hidden` until the script shows
//! them, and the secret is in a read-only text field to select and copy by hand.

use std::fmt::Write;
use std::sync::LazyLock;

use base64::Engine;
use time::{Date, OffsetDateTime};

use super::backend::{Namespace, NamespaceTokenKind, TokenRow};
use super::session::{Flash, Revealed};
use crate::auth::directory::NamespaceKind;

const CSS: &str = "
:root{color-scheme:light dark;font-family:system-ui,sans-serif;line-height:1.5}
body{margin:0 auto;max-width:72rem;padding:0 1rem 3rem}
header{display:flex;justify-content:space-between;align-items:center;border-bottom:1px solid #8884;padding:.5rem 0}
header p{margin:0}
.brand{font-weight:700}
h1{font-size:1.6rem}h2{font-size:1.25rem;margin-top:2rem}h3{font-size:1.05rem}
label{display:block;font-weight:600;margin-top:.75rem}
input[type=text],input[type=password],input[type=date],select{font:inherit;padding:.35rem .5rem;width:100%;max-width:28rem;box-sizing:border-box}
fieldset{border:1px solid #8886;margin-top:.75rem;max-width:28rem}
fieldset label{font-weight:400;margin:.2rem 0}
button{font:inherit;padding:.35rem .9rem;margin-top:.75rem;cursor:pointer}
:focus-visible{outline:3px solid #1f75cb;outline-offset:2px}
table{border-collapse:collapse;width:100%;margin-top:.5rem}
th,td{text-align:left;border-bottom:1px solid #8884;padding:.4rem .5rem;vertical-align:top}
tbody th,td.user{overflow-wrap:anywhere;min-width:8rem}
td button{margin:0}
caption{text-align:left;font-weight:600}
.notice,.alert,.secret{border-left:4px solid;padding:.5rem 1rem;margin:1rem 0}
.notice{border-color:#108548}.alert{border-color:#dd2b0e}.secret{border-color:#1f75cb}
.secret input{font-family:ui-monospace,monospace}
pre{overflow-x:auto;padding:.5rem;border:1px solid #8886}
.hint{color:#737278;font-size:.9rem;margin:.2rem 0}
";

const SCRIPT: &str = "
document.querySelectorAll('button[data-copy]').forEach(function(b){
b.hidden=false;
b.addEventListener('click',function(){
var t=document.getElementById(b.getAttribute('data-copy'));
var v=t.value!==undefined?t.value:t.textContent;
var done=function(){b.textContent='Copied';};
if(navigator.clipboard){navigator.clipboard.writeText(v).then(done,function(){t.select&&t.select();});}
else{t.select&&t.select();}
});});
";

fn sha256_b64(text: &str) -> String {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, text.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(digest.as_ref())
}

/// Nothing but this file's stylesheet and script; forms post only here; no framing.
pub fn content_security_policy() -> &'static str {
    static CSP: LazyLock<String> = LazyLock::new(|| {
        format!(
            "default-src 'none'; style-src 'sha256-{}'; script-src 'sha256-{}'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
            sha256_b64(CSS),
            sha256_b64(SCRIPT)
        )
    });
    &CSP
}

/// HTML-escape text for element content and quoted attribute values.
pub fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Who is signed in, for the header (and the sign-out form's CSRF token).
pub struct SignedIn<'a> {
    pub username: &'a str,
    pub csrf: &'a str,
}

/// A whole page around `main`.
pub fn layout(title: &str, who: Option<&SignedIn<'_>>, main: &str) -> String {
    let account = match who {
        Some(who) => format!(
            "<form method=\"post\" action=\"{SIGN_OUT}\"><p>Signed in as <strong>{user}</strong> {csrf}<button type=\"submit\">Sign out</button></p></form>",
            SIGN_OUT = super::SIGN_OUT_PATH,
            user = esc(who.username),
            csrf = csrf_field(who.csrf),
        ),
        None => String::new(),
    };
    format!(
        "<!doctype html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n<title>{title} · portcullis</title>\n<style>{CSS}</style>\n</head>\n<body>\n<header><p class=\"brand\">portcullis</p>{account}</header>\n<main>\n<h1>{title}</h1>\n{main}</main>\n<script>{SCRIPT}</script>\n</body>\n</html>\n",
        title = esc(title),
    )
}

fn csrf_field(token: &str) -> String {
    format!(
        "<input type=\"hidden\" name=\"authenticity_token\" value=\"{}\">",
        esc(token)
    )
}

fn flash(flash: Option<&Flash>) -> String {
    match flash {
        Some(Flash::Notice(text)) => {
            format!("<p class=\"notice\" role=\"status\">{}</p>\n", esc(text))
        }
        Some(Flash::Alert(text)) => {
            format!("<p class=\"alert\" role=\"alert\">{}</p>\n", esc(text))
        }
        None => String::new(),
    }
}

/// The sign-in form. `pre` is the double-submit token of its cookie.
pub fn sign_in(pre: &str, message: Option<&Flash>, username: &str) -> String {
    let main = format!(
        "{flash}<p>Sign in to manage your personal access tokens for this registry.</p>\n<form method=\"post\" action=\"{action}\">\n{csrf}\n<label for=\"username\">Username</label>\n<input type=\"text\" id=\"username\" name=\"username\" autocomplete=\"username\" required maxlength=\"255\" value=\"{username}\" autofocus>\n<label for=\"password\">Password or personal access token</label>\n<input type=\"password\" id=\"password\" name=\"password\" autocomplete=\"current-password\" required>\n<p class=\"hint\">A token must have the <code>api</code> scope.</p>\n<button type=\"submit\">Sign in</button>\n</form>\n",
        flash = flash(message),
        action = super::SIGN_IN_PATH,
        csrf = csrf_field(pre),
        username = esc(username),
    );
    layout("Sign in", None, &main)
}

/// A page that only says what went wrong (403 CSRF, 413, 404, ...).
pub fn message(title: &str, text: &str, who: Option<&SignedIn<'_>>) -> String {
    let main = format!(
        "<p class=\"alert\" role=\"alert\">{}</p>\n<p><a href=\"{}\">Back to your access tokens</a></p>\n",
        esc(text),
        super::PAGE_PATH
    );
    layout(title, who, &main)
}

fn date(date: Option<Date>) -> String {
    date.map(|d| d.to_string())
        .unwrap_or_else(|| "Never".into())
}

fn when(at: Option<OffsetDateTime>, otherwise: &str) -> String {
    at.map(|at| format!("{} {:02}:{:02} UTC", at.date(), at.hour(), at.minute()))
        .unwrap_or_else(|| otherwise.into())
}

/// Everything the tokens page shows.
pub struct TokensView<'a> {
    pub who: SignedIn<'a>,
    /// `host[:port]` for the `docker login` line.
    pub registry_host: &'a str,
    pub flash: Option<&'a Flash>,
    pub revealed: Option<&'a Revealed>,
    pub personal: &'a [TokenRow],
    /// A store error while listing, shown instead of the table.
    pub personal_error: Option<String>,
    pub namespaces: &'a [NamespaceView],
    /// Longest lifetime the store allows, in days, for the hint.
    pub max_lifetime_days: Option<u32>,
}

/// One project or group the user maintains, with its tokens.
pub struct NamespaceView {
    pub namespace: Namespace,
    pub deploy: Result<Vec<TokenRow>, String>,
    pub access: Result<Vec<TokenRow>, String>,
}

const PERSONAL_SCOPES: &[(&str, &str)] = &[
    ("read_registry", "pull images"),
    ("write_registry", "push images"),
    ("read_api", "read the API, pull images"),
    ("api", "the API, pull, push and delete images"),
];
const DEPLOY_SCOPES: &[(&str, &str)] = &[
    ("read_registry", "pull images"),
    ("write_registry", "push images"),
];
const ROLES: &[&str] = &["guest", "reporter", "developer", "maintainer", "owner"];

fn scope_boxes(prefix: &str, scopes: &[(&str, &str)]) -> String {
    let mut out = String::from("<fieldset>\n<legend>Scopes</legend>\n");
    for (name, what) in scopes {
        let _ = writeln!(
            out,
            "<label><input type=\"checkbox\" name=\"scopes\" value=\"{name}\" id=\"{prefix}-{name}\"> <code>{name}</code>: {what}</label>"
        );
    }
    out.push_str("</fieldset>\n");
    out
}

fn expiry_field(prefix: &str, max_days: Option<u32>) -> String {
    let hint = match max_days {
        Some(days) => format!("Empty: the longest allowed, {days} days."),
        None => "Empty: the longest allowed.".into(),
    };
    format!(
        "<label for=\"{prefix}-expires\">Expiration date</label>\n<input type=\"date\" id=\"{prefix}-expires\" name=\"expires_at\" aria-describedby=\"{prefix}-expires-hint\">\n<p class=\"hint\" id=\"{prefix}-expires-hint\">{hint}</p>\n"
    )
}

fn token_table(
    caption: &str,
    rows: &[TokenRow],
    revoke_action: &str,
    hidden: &str,
    csrf: &str,
    show_username: bool,
) -> String {
    if rows.is_empty() {
        return format!("<p>{}: none.</p>\n", esc(caption));
    }
    let mut out = format!(
        "<table>\n<caption>{}</caption>\n<thead><tr><th scope=\"col\">Name</th>{}<th scope=\"col\">Scopes</th><th scope=\"col\">Created</th><th scope=\"col\">Last used</th><th scope=\"col\">Expires</th><th scope=\"col\">Status</th><th scope=\"col\"><span class=\"hint\">Action</span></th></tr></thead>\n<tbody>\n",
        esc(caption),
        if show_username { "<th scope=\"col\">Username</th>" } else { "" }
    );
    for row in rows {
        let status = if row.revoked {
            "Revoked"
        } else if row.active {
            "Active"
        } else {
            "Expired"
        };
        let action = if row.from_config {
            "<span class=\"hint\">in gateway.yaml</span>".to_owned()
        } else if row.active {
            format!(
                "<form method=\"post\" action=\"{revoke_action}\">{csrf}{hidden}<input type=\"hidden\" name=\"id\" value=\"{id}\"><button type=\"submit\" aria-label=\"Revoke {label}\">Revoke</button></form>",
                csrf = csrf_field(csrf),
                id = row.id,
                label = esc(&row.name),
            )
        } else {
            String::new()
        };
        let mut scopes = row
            .scopes
            .iter()
            .map(|s| esc(s))
            .collect::<Vec<_>>()
            .join(", ");
        if let Some(role) = row.role {
            let _ = write!(scopes, " (as {role})");
        }
        let _ = writeln!(
            out,
            "<tr><th scope=\"row\">{name}</th>{username}<td>{scopes}</td><td>{created}</td><td>{used}</td><td>{expires}</td><td>{status}</td><td>{action}</td></tr>",
            name = esc(&row.name),
            username = if show_username {
                format!(
                    "<td class=\"user\">{}</td>",
                    esc(row.username.as_deref().unwrap_or(""))
                )
            } else {
                String::new()
            },
            // gateway.yaml records neither when a token was made nor when it was used.
            created = when(row.created_at, "Unknown"),
            used = when(
                row.last_used_at,
                if row.from_config { "Not recorded" } else { "Never" }
            ),
            expires = date(row.expires_at),
        );
    }
    out.push_str("</tbody>\n</table>\n");
    out
}

fn revealed(revealed: &Revealed, host: &str) -> String {
    let login = format!(
        "docker login {} -u {} --password-stdin",
        host, revealed.username
    );
    format!(
        "<section class=\"secret\" aria-labelledby=\"new-token-heading\">\n<h2 id=\"new-token-heading\">Your new {label}</h2>\n<p>Copy it now: it is shown only this once.</p>\n<label for=\"new-token\">Token</label>\n<input type=\"text\" id=\"new-token\" readonly value=\"{secret}\" autocomplete=\"off\" spellcheck=\"false\">\n<button type=\"button\" data-copy=\"new-token\" hidden>Copy token</button>\n<p>Log in with docker (paste the token when it waits for the password on standard input):</p>\n<pre><code id=\"docker-login\">{login}</code></pre>\n<button type=\"button\" data-copy=\"docker-login\" hidden>Copy command</button>\n</section>\n",
        label = esc(&revealed.label),
        secret = esc(&revealed.secret),
        login = esc(&login),
    )
}

fn namespace_section(view: &NamespaceView, csrf: &str, max_days: Option<u32>) -> String {
    let ns = &view.namespace;
    let (kind, kind_value) = match ns.kind {
        NamespaceKind::Project => ("Project", "project"),
        NamespaceKind::Group => ("Group", "group"),
    };
    let path = esc(ns.path.as_str());
    let slug: String = ns
        .path
        .as_str()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    let hidden = |token_kind: &str| {
        format!(
            "<input type=\"hidden\" name=\"namespace\" value=\"{path}\"><input type=\"hidden\" name=\"namespace_kind\" value=\"{kind_value}\"><input type=\"hidden\" name=\"token_kind\" value=\"{token_kind}\">"
        )
    };
    let mut out = format!("<section aria-labelledby=\"ns-{kind_value}-{slug}\">\n<h2 id=\"ns-{kind_value}-{slug}\">{kind} {path}</h2>\n");
    for (token_kind, title, value) in [
        (NamespaceTokenKind::Deploy, "Deploy tokens", "deploy"),
        (NamespaceTokenKind::Access, "Access tokens", "access"),
    ] {
        let rows = match token_kind {
            NamespaceTokenKind::Deploy => &view.deploy,
            NamespaceTokenKind::Access => &view.access,
        };
        let _ = writeln!(out, "<h3>{title}</h3>");
        match rows {
            Ok(rows) => out.push_str(&token_table(
                &format!("{title} of {}", ns.path.as_str()),
                rows,
                super::NAMESPACE_REVOKE_PATH,
                &hidden(value),
                csrf,
                true,
            )),
            Err(text) => {
                let _ = writeln!(out, "<p class=\"alert\" role=\"alert\">{}</p>", esc(text));
            }
        }
        let prefix = format!("{value}-{kind_value}-{slug}");
        let extra = match token_kind {
            NamespaceTokenKind::Deploy => format!(
                "<label for=\"{prefix}-username\">Username (optional)</label>\n<input type=\"text\" id=\"{prefix}-username\" name=\"username\" maxlength=\"255\">\n"
            ),
            NamespaceTokenKind::Access => {
                let mut select = format!(
                    "<label for=\"{prefix}-role\">Role</label>\n<select id=\"{prefix}-role\" name=\"role\">\n"
                );
                for role in ROLES {
                    let selected = if *role == "developer" { " selected" } else { "" };
                    let _ = writeln!(select, "<option value=\"{role}\"{selected}>{role}</option>");
                }
                select.push_str("</select>\n");
                select
            }
        };
        let scopes = match token_kind {
            NamespaceTokenKind::Deploy => DEPLOY_SCOPES,
            NamespaceTokenKind::Access => PERSONAL_SCOPES,
        };
        let singular = match token_kind {
            NamespaceTokenKind::Deploy => "deploy token",
            NamespaceTokenKind::Access => "access token",
        };
        let article = match token_kind {
            NamespaceTokenKind::Deploy => "a",
            NamespaceTokenKind::Access => "an",
        };
        let _ = write!(
            out,
            "<details>\n<summary>Add {article} {singular}</summary>\n<form method=\"post\" action=\"{action}\">\n{csrf}{hidden}\n<label for=\"{prefix}-name\">Name</label>\n<input type=\"text\" id=\"{prefix}-name\" name=\"name\" required maxlength=\"255\">\n{extra}{scopes}{expiry}<button type=\"submit\">Create {singular}</button>\n</form>\n</details>\n",
            action = super::NAMESPACE_PATH,
            csrf = csrf_field(csrf),
            hidden = hidden(value),
            scopes = scope_boxes(&prefix, scopes),
            expiry = expiry_field(&prefix, max_days),
        );
    }
    out.push_str("</section>\n");
    out
}

/// The signed-in page: the new secret (once), the create form, the lists.
pub fn tokens(view: &TokensView<'_>) -> String {
    let mut main = flash(view.flash);
    if let Some(secret) = view.revealed {
        main.push_str(&revealed(secret, view.registry_host));
    }
    let _ = write!(
        main,
        "<section aria-labelledby=\"add-heading\">\n<h2 id=\"add-heading\">Add a personal access token</h2>\n<p>Use it as the password of <code>docker login</code>, <code>podman login</code> or any registry client.</p>\n<form method=\"post\" action=\"{action}\">\n{csrf}\n<label for=\"token-name\">Token name</label>\n<input type=\"text\" id=\"token-name\" name=\"name\" required maxlength=\"255\">\n{scopes}{expiry}<button type=\"submit\">Create personal access token</button>\n</form>\n</section>\n",
        action = super::PAGE_PATH,
        csrf = csrf_field(view.who.csrf),
        scopes = scope_boxes("personal", PERSONAL_SCOPES),
        expiry = expiry_field("personal", view.max_lifetime_days),
    );
    main.push_str("<section aria-labelledby=\"list-heading\">\n<h2 id=\"list-heading\">Your personal access tokens</h2>\n");
    match &view.personal_error {
        Some(text) => {
            let _ = writeln!(main, "<p class=\"alert\" role=\"alert\">{}</p>", esc(text));
        }
        None => main.push_str(&token_table(
            "Personal access tokens",
            view.personal,
            super::REVOKE_PATH,
            "",
            view.who.csrf,
            false,
        )),
    }
    main.push_str("</section>\n");
    for ns in view.namespaces {
        main.push_str(&namespace_section(
            ns,
            view.who.csrf,
            view.max_lifetime_days,
        ));
    }
    layout("Personal access tokens", Some(&view.who), &main)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping_covers_every_html_metacharacter() {
        assert_eq!(
            esc("<script>alert('x')</script> & \"q\""),
            "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; &quot;q&quot;"
        );
    }

    #[test]
    fn the_policy_names_the_exact_inline_style_and_script() {
        let csp = content_security_policy();
        assert!(csp.starts_with("default-src 'none'; "), "{csp}");
        assert!(csp.contains(&sha256_b64(CSS)) && csp.contains(&sha256_b64(SCRIPT)));
        let page = layout("t", None, "");
        assert!(page.contains(&format!("<style>{CSS}</style>")));
        assert!(page.contains(&format!("<script>{SCRIPT}</script>")));
        assert!(!csp.contains("unsafe"));
    }
}
