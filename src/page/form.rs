//! Reading the page's forms: bounded bodies, `application/x-www-form-urlencoded` only.

use std::collections::HashMap;

use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;

/// The largest form accepted: a token form is a few hundred bytes.
pub const MAX_FORM_BYTES: usize = 16 * 1024;

/// Why a form could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FormError {
    #[error("the form is larger than {MAX_FORM_BYTES} bytes")]
    TooLarge,
    #[error("the form could not be read")]
    Broken,
    #[error("the form is not application/x-www-form-urlencoded")]
    NotForm,
}

/// A parsed form: every value of every field, in order.
#[derive(Debug, Default)]
pub struct Form {
    fields: HashMap<String, Vec<String>>,
}

impl Form {
    pub fn parse(body: &[u8]) -> Form {
        let mut fields: HashMap<String, Vec<String>> = HashMap::new();
        for (key, value) in form_urlencoded::parse(body) {
            fields
                .entry(key.into_owned())
                .or_default()
                .push(value.into_owned());
        }
        Form { fields }
    }

    /// The field's value if it was sent exactly once (a repeated field has two readings).
    pub fn one(&self, name: &str) -> Option<&str> {
        match self.fields.get(name).map(Vec::as_slice) {
            Some([value]) => Some(value),
            _ => None,
        }
    }

    /// Every value of a repeated field (checkboxes).
    pub fn all(&self, name: &str) -> &[String] {
        self.fields.get(name).map(Vec::as_slice).unwrap_or(&[])
    }
}

/// Read the body of `request`, at most [`MAX_FORM_BYTES`] (a declared larger length is
/// refused unread).
pub async fn read(request: http::Request<Incoming>) -> Result<Form, FormError> {
    let content_type = request
        .headers()
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let essence = content_type.split(';').next().unwrap_or("").trim();
    if !essence.eq_ignore_ascii_case("application/x-www-form-urlencoded") {
        return Err(FormError::NotForm);
    }
    let declared = request
        .headers()
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|length| length > MAX_FORM_BYTES as u64) {
        return Err(FormError::TooLarge);
    }
    let body = Limited::new(request.into_body(), MAX_FORM_BYTES)
        .collect()
        .await
        .map_err(|e| {
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some()
            {
                FormError::TooLarge
            } else {
                FormError::Broken
            }
        })?
        .to_bytes();
    Ok(Form::parse(&body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_repeated_field_has_no_single_value_but_checkboxes_keep_all() {
        let form = Form::parse(b"name=a&name=b&scopes=api&scopes=read_api&x=%3Cb%3E");
        assert_eq!(form.one("name"), None);
        assert_eq!(form.all("scopes"), ["api", "read_api"]);
        assert_eq!(form.one("x"), Some("<b>"));
        assert_eq!(form.one("missing"), None);
    }
}
