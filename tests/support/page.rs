//! A browser-like client of the token page over curl: keeps the cookies the gateway sets,
//! reads each form's authenticity token from the HTML, posts forms as a browser does.

use std::collections::HashMap;

use super::http::{request, Reply};

pub const PAGE: &str = "/-/profile/personal_access_tokens";
pub const PAGE_REVOKE: &str = "/-/profile/personal_access_tokens/revoke";
pub const NAMESPACE: &str = "/-/profile/personal_access_tokens/namespace_tokens";
pub const NAMESPACE_REVOKE: &str = "/-/profile/personal_access_tokens/namespace_tokens/revoke";

pub struct PageClient {
    pub base: String,
    /// Cookies set so far (name -> value); a `Max-Age=0` removes one.
    pub cookies: HashMap<String, String>,
    /// Every `Set-Cookie` line seen, for the flag checks.
    pub set_cookies: Vec<String>,
    /// The body of the last page.
    pub last: String,
}

impl PageClient {
    pub fn new(base: &str) -> PageClient {
        PageClient {
            base: base.to_owned(),
            cookies: HashMap::new(),
            set_cookies: Vec::new(),
            last: String::new(),
        }
    }

    fn cookie_header(&self) -> Option<String> {
        (!self.cookies.is_empty()).then(|| {
            self.cookies
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join("; ")
        })
    }

    fn remember(&mut self, reply: &Reply) {
        if let Some(lines) = reply.header("set-cookie") {
            for line in lines.lines() {
                self.set_cookies.push(line.to_owned());
                let pair = line.split(';').next().unwrap_or("");
                if let Some((name, value)) = pair.split_once('=') {
                    if value.is_empty() || line.contains("Max-Age=0") {
                        self.cookies.remove(name);
                    } else {
                        self.cookies.insert(name.to_owned(), value.to_owned());
                    }
                }
            }
        }
        self.last = reply.body.clone();
    }

    pub fn get(&mut self, path: &str) -> Reply {
        let mut req = request("GET", &format!("{}{path}", self.base)).arg("-k");
        if let Some(cookie) = self.cookie_header() {
            req = req.header("Cookie", &cookie);
        }
        let reply = req.send();
        self.remember(&reply);
        reply
    }

    /// POST a form with the browser's Origin (`origin: None` sends none).
    pub fn post_with(
        &mut self,
        path: &str,
        fields: &[(&str, &str)],
        origin: Option<&str>,
    ) -> Reply {
        let body = form_urlencoded::Serializer::new(String::new())
            .extend_pairs(fields)
            .finish();
        let mut req = request("POST", &format!("{}{path}", self.base))
            .arg("-k")
            .header("Content-Type", "application/x-www-form-urlencoded")
            .body(&body);
        if let Some(origin) = origin {
            req = req.header("Origin", origin);
        }
        if let Some(cookie) = self.cookie_header() {
            req = req.header("Cookie", &cookie);
        }
        let reply = req.send();
        self.remember(&reply);
        reply
    }

    /// POST from the page itself: its own origin.
    pub fn post(&mut self, path: &str, fields: &[(&str, &str)]) -> Reply {
        let origin = self.base.clone();
        self.post_with(path, fields, Some(&origin))
    }

    /// The authenticity token of the last page's forms.
    pub fn csrf(&self) -> String {
        authenticity_token(&self.last).expect("an authenticity_token on the last page")
    }

    /// Open the sign-in form and send it; the reply to the POST.
    pub fn sign_in(&mut self, username: &str, secret: &str) -> Reply {
        let form = self.get(PAGE);
        assert_eq!(form.status, 200, "{}", form.body);
        let token = self.csrf();
        self.post(
            "/-/sign_in",
            &[
                ("authenticity_token", &token),
                ("username", username),
                ("password", secret),
            ],
        )
    }

    /// Sign in and follow the redirect; panics unless both work.
    pub fn signed_in(base: &str, username: &str, secret: &str) -> PageClient {
        let mut client = PageClient::new(base);
        let reply = client.sign_in(username, secret);
        assert_eq!(reply.status, 303, "sign-in failed: {}", reply.body);
        let page = client.get(PAGE);
        assert!(page.body.contains("Signed in as"), "{}", page.body);
        client
    }

    /// The session cookie's value.
    pub fn session(&self) -> Option<&str> {
        self.cookies.get("portcullis_session").map(String::as_str)
    }
}

/// The first `authenticity_token` value in an HTML page.
pub fn authenticity_token(html: &str) -> Option<String> {
    let marker = "name=\"authenticity_token\" value=\"";
    let start = html.find(marker)? + marker.len();
    let end = html[start..].find('"')? + start;
    Some(html[start..end].to_owned())
}

/// The value of the read-only field holding a new token's secret.
pub fn revealed_secret(html: &str) -> Option<String> {
    let marker = "id=\"new-token\" readonly value=\"";
    let start = html.find(marker)? + marker.len();
    let end = html[start..].find('"')? + start;
    Some(html[start..end].to_owned())
}

/// HTML-escape as the page does (to find a name in it).
pub fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}
