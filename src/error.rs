//! The registry's JSON error shape, rendered in one place.
//!
//! Every refusal the gateway produces itself (bad credentials, missing scope, malformed input,
//! an unreachable registry) leaves through [`ApiError::into_response`], so clients always get
//! `{"errors":[{"code","message","detail"}]}` with the status and challenge they expect from
//! a registry. Nothing here ever echoes a credential.

use http::{header, HeaderValue, Response, StatusCode};
use serde_json::json;

use crate::body::{full, Body};

/// The error codes of the distribution API that the gateway emits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    /// Authentication required, or the credentials/token were not accepted.
    Unauthorized,
    /// Access refused after authentication (GitLab's `access forbidden`).
    Denied,
    /// The repository name in the path or scope is not a valid name.
    NameInvalid,
    /// The request is not one the gateway or registry supports.
    Unsupported,
    /// The upstream registry could not be reached or did not answer in time.
    Unavailable,
    /// The client is sending too much (headers too large, too many attempts, too many
    /// requests at once).
    TooManyRequests,
    /// A request body over its size limit.
    SizeInvalid,
    /// The gateway failed on its own (a handler panicked): nothing the client did wrong.
    Unknown,
}

impl ErrorCode {
    /// The wire form of the code.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::Unauthorized => "UNAUTHORIZED",
            ErrorCode::Denied => "DENIED",
            ErrorCode::NameInvalid => "NAME_INVALID",
            ErrorCode::Unsupported => "UNSUPPORTED",
            ErrorCode::Unavailable => "UNAVAILABLE",
            ErrorCode::TooManyRequests => "TOOMANYREQUESTS",
            ErrorCode::SizeInvalid => "SIZE_INVALID",
            ErrorCode::Unknown => "UNKNOWN",
        }
    }
}

/// An error answer: status, code, message, optional detail and challenge.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: ErrorCode,
    pub message: String,
    pub detail: Option<serde_json::Value>,
    /// The `WWW-Authenticate` value to send with a 401.
    pub challenge: Option<HeaderValue>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: ErrorCode, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            detail: None,
            challenge: None,
        }
    }

    /// `400 UNSUPPORTED`: a request the gateway cannot make sense of.
    pub fn bad_request(code: ErrorCode, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    /// GitLab's answer to a login without credentials: `403 DENIED access forbidden`.
    pub fn access_forbidden() -> Self {
        Self::new(StatusCode::FORBIDDEN, ErrorCode::Denied, "access forbidden")
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, ErrorCode::Unsupported, message)
    }

    pub fn with_detail(mut self, detail: serde_json::Value) -> Self {
        self.detail = Some(detail);
        self
    }

    pub fn with_challenge(mut self, challenge: HeaderValue) -> Self {
        self.challenge = Some(challenge);
        self
    }

    /// Render as the registry does: JSON body, API version header, challenge when present.
    pub fn into_response(self) -> Response<Body> {
        let mut error = json!({ "code": self.code.as_str(), "message": self.message });
        if let Some(detail) = self.detail {
            error["detail"] = detail;
        }
        let body = json!({ "errors": [error] }).to_string();
        let mut response = Response::new(full(body));
        *response.status_mut() = self.status;
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json; charset=utf-8"),
        );
        headers.insert(
            "docker-distribution-api-version",
            HeaderValue::from_static("registry/2.0"),
        );
        if let Some(challenge) = self.challenge {
            headers.insert(header::WWW_AUTHENTICATE, challenge);
        }
        response
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {}: {}",
            self.status.as_u16(),
            self.code.as_str(),
            self.message
        )
    }
}
