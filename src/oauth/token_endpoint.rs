//! One request to a provider's token endpoint, and the sorting of its answer.
//!
//! The code exchange, device-flow polling and refresh all post a form to the token endpoint and
//! need the same question answered: is this a token, an OAuth error (and which), or no answer
//! worth acting on yet? Providers disagree on the shape:
//! - RFC 6749 §5.2: errors are 400/401 with `{"error": "…"}` (Google);
//! - GitHub answers errors — including the device flow's `authorization_pending` — with **200**
//!   and an `error` field;
//! - Slack answers 200 with `{"ok": false, "error": "…"}`, and a user token sits under
//!   `authed_user` rather than at the top.
//!
//! `oauth2`'s typed token requests assume the RFC shape (a 200 must deserialize as a token
//! response, and its device polling only retries `authorization_pending` on a non-200), so the
//! answers are sorted here and parsed by [`super::token_response`], the same parser `keyward
//! import` uses, so that every way in produces the same record.

use std::time::Duration;

use serde_json::Value;

use super::http::{form_request, HttpError, OAuthHttp};
use crate::secret::Redactor;

/// OAuth error codes that mean "not now" rather than "no".
const UNAVAILABLE_CODES: &[&str] = &[
    "temporarily_unavailable",
    "server_error",
    // Slack
    "ratelimited",
    "internal_error",
    "fatal_error",
    "service_unavailable",
    "request_timeout",
];

/// An error the endpoint named.
#[derive(Debug, Clone)]
pub struct OAuthError {
    pub code: String,
    pub description: Option<String>,
    pub status: u16,
    /// The whole answer (for fields such as the device flow's new `interval`); an error answer
    /// holds no token.
    pub body: Value,
}

impl OAuthError {
    /// `code: description`, for messages and the audit log.
    pub fn reason(&self) -> String {
        match &self.description {
            Some(d) if !d.is_empty() => format!("{}: {d}", self.code),
            _ => self.code.clone(),
        }
    }
}

/// What a token endpoint said.
pub enum Answer {
    /// A token response, to be parsed with [`super::token_response::from_value`]. Holds
    /// secrets: never print it.
    Token(Value),
    /// The endpoint refused with an OAuth error code.
    Error(OAuthError),
    /// No usable answer now (timeout, network, 5xx, 429, "temporarily unavailable").
    Unavailable(String),
    /// An answer that is neither a token nor an OAuth error.
    Malformed(String),
}

/// `Token` holds secrets: its Debug form names the variant only (invariant 1).
impl std::fmt::Debug for Answer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Answer::Token(_) => f.write_str("Token([redacted])"),
            Answer::Error(e) => f.debug_tuple("Error").field(e).finish(),
            Answer::Unavailable(r) => f.debug_tuple("Unavailable").field(r).finish(),
            Answer::Malformed(r) => f.debug_tuple("Malformed").field(r).finish(),
        }
    }
}

/// Form fields whose values are secrets: whatever the endpoint says back is scrubbed of them.
const SECRET_FIELDS: &[&str] = &[
    "refresh_token",
    "client_secret",
    "code",
    "code_verifier",
    "device_code",
    "token",
    "access_token",
];

/// POST `form` to `url` and sort the answer. `form` holds secrets; it is never logged.
///
/// An endpoint may quote what it was sent (`"error_description": "refresh token 1//0ab… is
/// invalid"`), and the reason of a refusal is stored (`needs_reconnect`), audited and shown.
/// So every string of a non-token answer is redacted here, with every secret this request
/// carried, before any caller sees it.
pub async fn request(
    http: &OAuthHttp,
    url: &str,
    form: &[(&str, &str)],
    timeout: Duration,
) -> Answer {
    request_as(http, url, form, None, timeout).await
}

/// [`request`], authenticating the client with HTTP basic auth (`client_secret_basic`, RFC 6749
/// §2.3.1) when `basic` names the client id and secret; the secret is redacted like the form's.
pub async fn request_as(
    http: &OAuthHttp,
    url: &str,
    form: &[(&str, &str)],
    basic: Option<(&str, &str)>,
    timeout: Duration,
) -> Answer {
    let mut redactor = Redactor::new();
    for (_, value) in form.iter().filter(|(k, _)| SECRET_FIELDS.contains(k)) {
        redactor.add_str(value);
    }
    if let Some((_, secret)) = basic {
        redactor.add_str(secret);
    }
    let request = match form_request(url, form, basic) {
        Ok(r) => r,
        Err(e) => return Answer::Malformed(e.to_string()).redacted(&redactor),
    };
    let answer = match http.send(request, timeout).await {
        Ok(response) => sort(response.status(), response.body()),
        Err(HttpError::Timeout) => {
            Answer::Unavailable("the token endpoint did not answer in time".into())
        }
        Err(HttpError::Connect) => {
            Answer::Unavailable("the token endpoint could not be reached".into())
        }
        Err(e) => Answer::Unavailable(format!("the request to the token endpoint failed ({e})")),
    };
    answer.redacted(&redactor)
}

impl Answer {
    /// Every string of an answer that is not a token, with `redactor`'s secrets replaced.
    pub fn redacted(self, redactor: &Redactor) -> Answer {
        match self {
            Answer::Token(value) => Answer::Token(value),
            Answer::Error(mut e) => {
                redactor.scrub(&mut e.code);
                if let Some(d) = &mut e.description {
                    redactor.scrub(d);
                }
                e.body = redactor.value(e.body);
                Answer::Error(e)
            }
            Answer::Unavailable(reason) => Answer::Unavailable(redactor.text(&reason)),
            Answer::Malformed(reason) => Answer::Malformed(redactor.text(&reason)),
        }
    }
}

/// Sort a token endpoint's answer by status and body.
pub fn sort(status: http::StatusCode, body: &[u8]) -> Answer {
    let value = parse_body(body);
    if status.is_server_error() || status == http::StatusCode::TOO_MANY_REQUESTS {
        let detail = value
            .as_ref()
            .and_then(error_of)
            .map(|e| format!(" ({})", e.0))
            .unwrap_or_default();
        return Answer::Unavailable(format!("the token endpoint answered {status}{detail}"));
    }
    let Some(value) = value else {
        return Answer::Malformed(format!(
            "the token endpoint answered {status} with a body that is not JSON"
        ));
    };
    if let Some((code, description)) = error_of(&value) {
        if UNAVAILABLE_CODES.contains(&code.as_str()) {
            return Answer::Unavailable(format!("the token endpoint answered {code}"));
        }
        return Answer::Error(OAuthError {
            code,
            description,
            status: status.as_u16(),
            body: value,
        });
    }
    if !status.is_success() {
        return Answer::Malformed(format!(
            "the token endpoint answered {status} without an error code"
        ));
    }
    if value.get("ok") == Some(&Value::Bool(false)) {
        return Answer::Malformed(
            "the token endpoint answered `ok: false` without an error code".into(),
        );
    }
    let has_token = |v: &Value| {
        v.get("access_token")
            .and_then(Value::as_str)
            .is_some_and(|t| !t.is_empty())
    };
    let user_token = value.get("authed_user").is_some_and(has_token);
    if !has_token(&value) && !user_token {
        return Answer::Malformed("the token endpoint answered without an access token".into());
    }
    Answer::Token(value)
}

/// JSON, or (for endpoints that ignore `Accept`) a form-encoded body turned into an object.
fn parse_body(body: &[u8]) -> Option<Value> {
    if let Ok(value) = serde_json::from_slice::<Value>(body) {
        return value.is_object().then_some(value);
    }
    let text = std::str::from_utf8(body).ok()?.trim();
    if text.is_empty() || text.starts_with('<') || !text.contains('=') {
        return None;
    }
    let map: serde_json::Map<String, Value> = url::form_urlencoded::parse(text.as_bytes())
        .map(|(k, v)| (k.into_owned(), Value::String(v.into_owned())))
        .collect();
    (map.contains_key("access_token") || map.contains_key("error")).then_some(Value::Object(map))
}

fn error_of(value: &Value) -> Option<(String, Option<String>)> {
    let code = value.get("error")?.as_str()?.to_string();
    let description = value
        .get("error_description")
        .and_then(Value::as_str)
        .map(String::from);
    Some((code, description))
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::StatusCode;

    fn code(answer: Answer) -> String {
        match answer {
            Answer::Error(e) => e.code,
            other => panic!("expected an OAuth error, got {other:?}"),
        }
    }

    #[test]
    fn the_three_error_shapes_are_oauth_errors() {
        assert_eq!(
            code(sort(
                StatusCode::BAD_REQUEST,
                br#"{"error":"invalid_grant"}"#
            )),
            "invalid_grant"
        );
        assert_eq!(
            code(sort(
                StatusCode::OK,
                br#"{"error":"bad_refresh_token","error_description":"x"}"#
            )),
            "bad_refresh_token"
        );
        assert_eq!(
            code(sort(
                StatusCode::OK,
                br#"{"ok":false,"error":"invalid_refresh_token"}"#
            )),
            "invalid_refresh_token"
        );
        assert_eq!(
            code(sort(
                StatusCode::OK,
                b"error=authorization_pending&error_description=wait"
            )),
            "authorization_pending"
        );
    }

    #[test]
    fn outages_are_unavailable_and_never_errors() {
        for (status, body) in [
            (StatusCode::SERVICE_UNAVAILABLE, &b"<html>down</html>"[..]),
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                br#"{"error":"invalid_grant"}"#,
            ),
            (StatusCode::TOO_MANY_REQUESTS, b""),
            (StatusCode::OK, br#"{"ok":false,"error":"ratelimited"}"#),
            (
                StatusCode::BAD_REQUEST,
                br#"{"error":"temporarily_unavailable"}"#,
            ),
        ] {
            assert!(
                matches!(sort(status, body), Answer::Unavailable(_)),
                "{status} {:?}",
                String::from_utf8_lossy(body)
            );
        }
    }

    #[test]
    fn tokens_top_level_or_under_authed_user() {
        assert!(matches!(
            sort(
                StatusCode::OK,
                br#"{"access_token":"a","token_type":"bearer"}"#
            ),
            Answer::Token(_)
        ));
        assert!(matches!(
            sort(
                StatusCode::OK,
                br#"{"ok":true,"authed_user":{"access_token":"xoxp","scope":"a"}}"#
            ),
            Answer::Token(_)
        ));
        assert!(matches!(
            sort(StatusCode::OK, br#"{"ok":true}"#),
            Answer::Malformed(_)
        ));
        assert!(matches!(
            sort(StatusCode::UNAUTHORIZED, b"<html>no</html>"),
            Answer::Malformed(_)
        ));
        let token = sort(StatusCode::OK, br#"{"access_token":"secret-canary"}"#);
        assert!(!format!("{token:?}").contains("secret-canary"));
    }
}
