//! GitLab's JSON shapes (`lib/api/entities/`), and the request parameters, read as Grape reads
//! them: JSON or a form, `scopes` as an array or (deploy tokens) comma separated, errors in
//! Grape's words (`{"error": "name is missing"}`).

use serde_json::{json, Map, Value};
use time::format_description::FormatItem;
use time::macros::format_description;
use time::{Date, OffsetDateTime};

use super::service::{NamespaceView, NewToken, ServiceError, Source, TokenView, UserView};
use crate::auth::directory::{Role, Visibility};
use crate::store::TokenKind;

/// GitLab's timestamps: ISO 8601 in UTC with milliseconds (`2024-05-01T09:27:20.130Z`).
const TIMESTAMP: &[FormatItem<'_>] =
    format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z");

pub fn timestamp(at: OffsetDateTime) -> Value {
    at.to_offset(time::UtcOffset::UTC)
        .format(TIMESTAMP)
        .map(Value::String)
        .unwrap_or(Value::Null)
}

fn day(date: Option<Date>) -> Value {
    date.map(|d| Value::String(d.to_string()))
        .unwrap_or(Value::Null)
}

/// GitLab's numeric access levels.
pub fn access_level(role: Role) -> u8 {
    match role {
        Role::Guest => 10,
        Role::Reporter => 20,
        Role::Developer => 30,
        Role::Maintainer => 40,
        Role::Owner => 50,
    }
}

fn role_of(level: i64) -> Option<Role> {
    Some(match level {
        10 => Role::Guest,
        20 => Role::Reporter,
        30 => Role::Developer,
        40 => Role::Maintainer,
        50 => Role::Owner,
        _ => return None,
    })
}

/// `Entities::PersonalAccessToken` (and `ResourceAccessToken` with `access_level`), plus
/// `source` (`store` or `config`).
pub fn token(view: &TokenView) -> Value {
    if matches!(view.kind, TokenKind::ProjectDeploy | TokenKind::GroupDeploy) {
        return deploy_token(view);
    }
    let mut body = json!({
        "id": view.id,
        "name": view.name,
        "revoked": view.revoked,
        "created_at": view.created_at.map(timestamp).unwrap_or(Value::Null),
        "description": view.description,
        "scopes": view.scopes,
        "user_id": view.user_id,
        "last_used_at": view.last_used_at.map(timestamp).unwrap_or(Value::Null),
        "active": view.active,
        "expires_at": day(view.expires_at),
        "source": source(view.source),
    });
    if let Some(role) = view.access_level {
        body["access_level"] = json!(access_level(role));
    }
    body
}

/// `Entities::DeployToken`.
fn deploy_token(view: &TokenView) -> Value {
    json!({
        "id": view.id,
        "name": view.name,
        "username": view.username,
        "expires_at": view.expires_at.map(|d| timestamp(d.midnight().assume_utc())).unwrap_or(Value::Null),
        "scopes": view.scopes,
        "revoked": view.revoked,
        "expired": !view.revoked && !view.active,
        "source": source(view.source),
    })
}

/// The `...WithToken` entities: the secret, this once.
pub fn token_with_secret(view: &TokenView, secret: &str) -> Value {
    let mut body = token(view);
    body["token"] = json!(secret);
    body
}

fn source(source: Source) -> &'static str {
    match source {
        Source::Store => "store",
        Source::Config => "config",
    }
}

/// `Entities::UserBasic` (`/users`), and with `current` the fields of `/user`.
pub fn user(view: &UserView, web: &str, current: bool) -> Value {
    let mut body = json!({
        "id": view.id,
        "username": view.username,
        "name": view.username,
        "state": if view.blocked { "blocked" } else { "active" },
        "locked": false,
        "avatar_url": Value::Null,
        "web_url": format!("{web}/{}", view.username),
    });
    if current {
        body["is_admin"] = json!(view.admin);
        body["bot"] = json!(view.bot);
    }
    body
}

/// `Entities::Project` / `Entities::Group`, the fields clients need to find ids.
pub fn namespace(view: &NamespaceView, web: &str) -> Value {
    let path = view.namespace.path().as_str();
    let (parent, name) = path.rsplit_once('/').unwrap_or(("", path));
    let visibility = match view.visibility {
        Visibility::Private => "private",
        Visibility::Internal => "internal",
        Visibility::Public => "public",
    };
    match &view.namespace {
        super::service::Namespace::Project(_) => json!({
            "id": view.namespace.id(),
            "name": name,
            "path": name,
            "path_with_namespace": path,
            "name_with_namespace": path.replace('/', " / "),
            "visibility": visibility,
            "web_url": format!("{web}/{path}"),
            "container_registry_enabled": true,
            "namespace": {
                "id": crate::auth::scope::stable_id("namespace", parent),
                "path": parent.rsplit('/').next().unwrap_or(parent),
                "full_path": parent,
                "kind": "group",
            },
        }),
        super::service::Namespace::Group(_) => json!({
            "id": view.namespace.id(),
            "name": name,
            "path": name,
            "full_path": path,
            "full_name": path.replace('/', " / "),
            "visibility": visibility,
            "web_url": format!("{web}/groups/{path}"),
            "parent_id": if parent.is_empty() { Value::Null } else { json!(crate::auth::scope::stable_id("namespace", parent)) },
        }),
    }
}

/// Request parameters: a JSON object or a form, and the query string.
#[derive(Debug, Default)]
pub struct Params(Map<String, Value>);

impl Params {
    /// Parse a body (`application/json`, else a form) and add the query's fields.
    pub fn parse(
        body: &[u8],
        json_body: bool,
        query: Option<&str>,
    ) -> Result<Params, ServiceError> {
        let mut map = Map::new();
        if json_body && !body.iter().all(u8::is_ascii_whitespace) {
            match serde_json::from_slice::<Value>(body) {
                Ok(Value::Object(object)) => map = object,
                _ => {
                    return Err(ServiceError::Invalid(
                        "The request body is not a JSON object".into(),
                    ))
                }
            }
        } else if !json_body {
            for (key, value) in form_urlencoded::parse(body) {
                add_form(&mut map, &key, value.into_owned());
            }
        }
        for (key, value) in form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
            if !map.contains_key(key.trim_end_matches("[]")) {
                add_form(&mut map, &key, value.into_owned());
            }
        }
        Ok(Params(map))
    }

    fn get(&self, name: &str) -> Option<&Value> {
        self.0.get(name).filter(|v| !v.is_null())
    }

    pub fn string(&self, name: &str) -> Result<Option<String>, ServiceError> {
        match self.get(name) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(Value::Number(n)) => Ok(Some(n.to_string())),
            Some(_) => Err(ServiceError::Invalid(format!("{name} is invalid"))),
        }
    }

    pub fn required(&self, name: &str) -> Result<String, ServiceError> {
        self.string(name)?
            .ok_or_else(|| ServiceError::Invalid(format!("{name} is missing")))
    }

    pub fn integer(&self, name: &str) -> Result<Option<i64>, ServiceError> {
        match self.get(name) {
            None => Ok(None),
            Some(Value::Number(n)) => n
                .as_i64()
                .map(Some)
                .ok_or_else(|| ServiceError::Invalid(format!("{name} is invalid"))),
            Some(Value::String(s)) if s.is_empty() => Ok(None),
            Some(Value::String(s)) => s
                .trim()
                .parse()
                .map(Some)
                .map_err(|_| ServiceError::Invalid(format!("{name} is invalid"))),
            Some(_) => Err(ServiceError::Invalid(format!("{name} is invalid"))),
        }
    }

    /// An array of strings; `comma` also takes one comma-separated string (deploy tokens).
    pub fn list(&self, name: &str, comma: bool) -> Result<Option<Vec<String>>, ServiceError> {
        match self.get(name) {
            None => Ok(None),
            Some(Value::Array(items)) => items
                .iter()
                .map(|v| v.as_str().map(str::to_owned))
                .collect::<Option<Vec<_>>>()
                .map(Some)
                .ok_or_else(|| ServiceError::Invalid(format!("{name} is invalid"))),
            Some(Value::String(s)) if comma || !s.contains(',') => Ok(Some(
                s.split(',')
                    .map(|p| p.trim().to_owned())
                    .filter(|p| !p.is_empty())
                    .collect(),
            )),
            Some(_) => Err(ServiceError::Invalid(format!("{name} is invalid"))),
        }
    }

    /// A date (`2025-01-31`; a deploy token's DateTime is cut to its day).
    pub fn date(&self, name: &str) -> Result<Option<Date>, ServiceError> {
        let Some(text) = self.string(name)? else {
            return Ok(None);
        };
        if text.is_empty() {
            return Ok(None);
        }
        let day = text.get(..10).unwrap_or_default();
        let format = format_description!("[year]-[month]-[day]");
        let rest_ok = text.len() == 10
            || text
                .as_bytes()
                .get(10)
                .is_some_and(|b| *b == b'T' || *b == b' ');
        match Date::parse(day, format) {
            Ok(date) if rest_ok => Ok(Some(date)),
            _ => Err(ServiceError::Invalid(format!("{name} is invalid"))),
        }
    }

    /// The fields of a token to make.
    pub fn new_token(&self, comma_scopes: bool) -> Result<NewToken, ServiceError> {
        let mut missing = Vec::new();
        let name = self.string("name")?;
        if name.is_none() {
            missing.push("name is missing");
        }
        let scopes = self.list("scopes", comma_scopes)?;
        if scopes.is_none() {
            missing.push("scopes is missing");
        }
        if !missing.is_empty() {
            return Err(ServiceError::Invalid(missing.join(", ")));
        }
        let access_level = match self.integer("access_level")? {
            None => None,
            Some(level) => Some(role_of(level).ok_or_else(|| {
                ServiceError::Invalid("access_level does not have a valid value".into())
            })?),
        };
        Ok(NewToken {
            name: name.unwrap_or_default(),
            scopes: scopes.unwrap_or_default(),
            expires_at: self.date("expires_at")?,
            description: self.string("description")?,
            access_level,
            username: self.string("username")?,
        })
    }
}

fn add_form(map: &mut Map<String, Value>, key: &str, value: String) {
    if let Some(base) = key.strip_suffix("[]") {
        match map
            .entry(base.to_owned())
            .or_insert_with(|| Value::Array(Vec::new()))
        {
            Value::Array(items) => items.push(Value::String(value)),
            other => *other = Value::Array(vec![Value::String(value)]),
        }
    } else {
        map.insert(key.to_owned(), Value::String(value));
    }
}
