//! Parsing OAuth token responses into vault records.
//!
//! Accepts the RFC 6749 §5.1 shape (`access_token`, `token_type`, `expires_in`,
//! `refresh_token`, `scope`), an absolute `expires_at` (RFC 3339 or unix seconds) for tokens
//! exported from other tools, and Slack's `oauth.v2.access` shape, where a user token sits
//! under `authed_user`. The same parser serves `keyward import` and the token endpoint answers
//! of connect and refresh, so every way in produces the same record.

use serde_json::Value;

use crate::error::{Error, Result};
use crate::secret::SecretString;
use crate::vault::{ConnectionStatus, TokenRecord};

/// Parse a token response received at `now` (unix seconds).
pub fn parse(json: &str, now: i64) -> Result<TokenRecord> {
    let value: Value = serde_json::from_str(json).map_err(|e| {
        Error::usage(format!(
            "the token response is not valid JSON ({e}); expected an object like \
             {{\"access_token\": \"…\", \"token_type\": \"bearer\", \"expires_in\": 3600}}"
        ))
    })?;
    from_value(&value, now)
}

/// Parse an already-decoded token response.
pub fn from_value(value: &Value, now: i64) -> Result<TokenRecord> {
    let Some(top) = value.as_object() else {
        return Err(Error::usage("the token response must be a JSON object"));
    };
    if let Some(err) = top.get("error").and_then(Value::as_str) {
        let detail = top
            .get("error_description")
            .and_then(Value::as_str)
            .unwrap_or("");
        return Err(Error::usage(
            format!("the token response is an error: {err} {detail}")
                .trim_end()
                .to_string(),
        ));
    }
    // Slack: a user token lives under `authed_user`; a bot token at the top next to `ok`.
    let obj = match top.get("authed_user").and_then(Value::as_object) {
        Some(user) if user.contains_key("access_token") => user,
        _ => top,
    };
    let access_token = match obj.get("access_token") {
        Some(Value::String(s)) if !s.is_empty() => SecretString::new(s.clone()),
        Some(_) => return Err(Error::usage("`access_token` must be a non-empty string")),
        None => return Err(Error::usage("the token response has no `access_token`")),
    };
    let refresh_token = match obj.get("refresh_token") {
        Some(Value::String(s)) if !s.is_empty() => Some(SecretString::new(s.clone())),
        None | Some(Value::Null) => None,
        Some(_) => return Err(Error::usage("`refresh_token` must be a string")),
    };
    let token_type = obj
        .get("token_type")
        .and_then(Value::as_str)
        .unwrap_or("bearer")
        .to_string();
    let expires_at = expiry(obj, now)?;
    let scopes = match obj.get("scope") {
        Some(Value::String(s)) => split_scopes(s),
        Some(Value::Array(items)) => items
            .iter()
            .filter_map(|v| v.as_str().map(String::from))
            .collect(),
        None | Some(Value::Null) => Vec::new(),
        Some(_) => return Err(Error::usage("`scope` must be a string")),
    };
    Ok(TokenRecord {
        access_token,
        refresh_token,
        token_type,
        expires_at,
        scopes,
        obtained_at: now,
        status: ConnectionStatus::Active,
    })
}

fn expiry(obj: &serde_json::Map<String, Value>, now: i64) -> Result<Option<i64>> {
    if let Some(v) = obj.get("expires_in") {
        return match v {
            Value::Number(n) => n
                .as_i64()
                .or_else(|| n.as_f64().map(|f| f as i64))
                .map(|secs| Some(now + secs))
                .ok_or_else(|| Error::usage("`expires_in` must be a number of seconds")),
            // Some providers send numbers as strings.
            Value::String(s) => s
                .parse::<i64>()
                .map(|secs| Some(now + secs))
                .map_err(|_| Error::usage("`expires_in` must be a number of seconds")),
            Value::Null => Ok(None),
            _ => Err(Error::usage("`expires_in` must be a number of seconds")),
        };
    }
    match obj.get("expires_at") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => n
            .as_i64()
            .map(Some)
            .ok_or_else(|| Error::usage("`expires_at` must be unix seconds or an RFC 3339 time")),
        Some(Value::String(s)) => match chrono::DateTime::parse_from_rfc3339(s) {
            Ok(t) => Ok(Some(t.timestamp())),
            Err(_) => s.parse::<i64>().map(Some).map_err(|_| {
                Error::usage(format!(
                    "`expires_at` {s:?} is neither unix seconds nor an RFC 3339 time"
                ))
            }),
        },
        Some(_) => Err(Error::usage(
            "`expires_at` must be unix seconds or an RFC 3339 time",
        )),
    }
}

/// Split a granted-scope string; providers use spaces (RFC 6749) or commas (GitHub, Slack).
pub fn split_scopes(s: &str) -> Vec<String> {
    s.split([' ', ','])
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(String::from)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc6749_shape() {
        let r = parse(
            r#"{"access_token":"a1","token_type":"bearer","expires_in":3600,"refresh_token":"r1","scope":"repo read:user"}"#,
            1000,
        )
        .unwrap();
        assert_eq!(r.access_token.expose(), "a1");
        assert_eq!(r.refresh_token.as_ref().unwrap().expose(), "r1");
        assert_eq!(r.expires_at, Some(4600));
        assert_eq!(r.scopes, vec!["repo", "read:user"]);
    }

    #[test]
    fn expires_at_forms_and_comma_scopes() {
        let r = parse(
            r#"{"access_token":"a","expires_at":"2030-01-01T00:00:00Z","scope":"repo,gist"}"#,
            0,
        )
        .unwrap();
        assert_eq!(r.expires_at, Some(1_893_456_000));
        assert_eq!(r.scopes, vec!["repo", "gist"]);
        let r = parse(r#"{"access_token":"a","expires_at":1893456000}"#, 0).unwrap();
        assert_eq!(r.expires_at, Some(1_893_456_000));
        assert_eq!(
            parse(r#"{"access_token":"a"}"#, 0).unwrap().expires_at,
            None
        );
    }

    #[test]
    fn slack_user_token_shape() {
        let r = parse(
            r#"{"ok":true,"access_token":"xoxb-bot","authed_user":{"id":"U1","scope":"chat:write,channels:read","access_token":"xoxp-user","token_type":"user","refresh_token":"xoxe-1","expires_in":43200}}"#,
            0,
        )
        .unwrap();
        assert_eq!(r.access_token.expose(), "xoxp-user");
        assert_eq!(r.scopes, vec!["chat:write", "channels:read"]);
        assert_eq!(r.expires_at, Some(43200));
    }

    #[test]
    fn bad_input_names_the_problem() {
        let e = parse("{not json", 0).unwrap_err().to_string();
        assert!(e.contains("not valid JSON"), "{e}");
        let e = parse(r#"{"token_type":"bearer"}"#, 0)
            .unwrap_err()
            .to_string();
        assert!(e.contains("no `access_token`"), "{e}");
        let e = parse(r#"{"access_token":"a","expires_at":"soon"}"#, 0)
            .unwrap_err()
            .to_string();
        assert!(e.contains("expires_at"), "{e}");
        let e = parse(r#"{"error":"invalid_grant"}"#, 0)
            .unwrap_err()
            .to_string();
        assert!(e.contains("invalid_grant"), "{e}");
    }
}
