//! GitLab's REST API v4, the token subset (issue 18), on the public listener under `/api/v4`.
//!
//! - [`service`]: the token service: who may list, make, revoke and rotate which tokens
//!   (typed; the token page calls it too).
//! - [`rest`]: the HTTP handlers: routes, authentication as GitLab does it, JSON shapes,
//!   pagination headers, GitLab's error bodies.

pub mod json;
pub mod rest;
pub mod service;
