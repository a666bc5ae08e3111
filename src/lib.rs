//! portcullis: an authenticating gateway in front of an unmodified container registry.
//!
//! Clients see one address. Behind it runs a registry that speaks the docker token protocol
//! (or no auth at all). The gateway answers `/jwt/auth` itself with GitLab's credential
//! semantics, checks every `/v2/` request's Bearer token when its headers arrive, and streams
//! bodies to and from the registry without buffering them.
//!
//! The modules follow the path of a request:
//!
//! - [`config`]: `gateway.yaml`: types, `${VAR}` expansion, validation that names the key.
//! - [`server`]: listening, TLS (rustls, ALPN h2/http1.1), HTTP/1.1 + HTTP/2 per connection,
//!   served on one single-threaded runtime per core.
//! - [`router`]: which requests go where: `/jwt/auth` to [`auth`], `/v2/` to [`proxy`].
//! - [`auth`]: credentials, scopes, GitLab's policy, JWT signing and verification, the endpoint.
//! - [`proxy`]: what a `/v2/` request needs, streaming forwarding, header rewriting.
//! - [`diagnose`]: upload sessions, expired-mid-push diagnosis, push grace.
//! - [`shared`]: state several replicas share on Redis (bans, upload sessions, detector
//!   observations, revocations), in process when there is no Redis or it does not answer.
//! - [`telemetry`]: logging set-up and the one-line-per-request access log layer.
//! - [`page`]: the token page (`/-/profile/personal_access_tokens`): sessions, CSRF, HTML.
//! - [`pem`]: reading PEM certificate files.
//! - [`bounded`]: the capped map every client-grown bookkeeping table is kept in.
//! - [`error`]: the one place that renders errors in the registry's JSON shape.
//! - [`api`]: GitLab's REST API v4, the token subset: the token service and its handlers.
//! - [`store`]: the token store (SQLite, PostgreSQL) and its in-memory mirror.
//! - [`commands`]: the CLI sub-commands (`init`, `check`, `token generate`, `hash-password`).

pub mod alloc;
pub mod api;
pub mod auth;
pub mod body;
pub mod bounded;
pub mod commands;
pub mod config;
pub mod diagnose;
pub mod error;
pub mod page;
pub mod pem;
pub mod proxy;
pub mod router;
pub mod server;
pub mod shared;
pub mod store;
pub mod telemetry;

pub use router::Gateway;
