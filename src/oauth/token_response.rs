//! Parsing OAuth token responses into vault records.
//!
//! Accepts the RFC 6749 §5.1 shape (`access_token`, `token_type`, `expires_in`,
//! `refresh_token`, `scope`), an absolute `expires_at` (RFC 3339 or unix seconds) for tokens
//! exported from other tools, and Slack's `oauth.v2.access` shape, where a user token sits
//! under `authed_user`. The same parser serves `keyward import` and the token endpoint answers
//! of connect and refresh, so every way in produces the same record.
//!
//! Expiries are untrusted numbers: `expires_in: 1e300` or `expires_at: 9223372036854775807`
//! would overflow the arithmetic on them. An expiry must lie between now (or, for
//! `expires_at`, 1970) and [`MAX_LIFETIME_SECS`] from now. What the user imports
//! ([`parse`]) is refused outside that range with an error naming the field, since it is
//! probably a mistake they can fix; a provider's answer ([`from_value`]) is clamped into it,
//! since refusing it would lose tokens the provider has already rotated.

use serde_json::Value;

use crate::error::{Error, Result};
use crate::secret::SecretString;
use crate::vault::{ConnectionStatus, TokenRecord};

/// The longest lifetime an access token may claim: a hundred years. Any longer is garbage.
pub const MAX_LIFETIME_SECS: i64 = 100 * 365 * 86_400;

/// What to do with an expiry outside `0..=now + MAX_LIFETIME_SECS`.
#[derive(Clone, Copy, PartialEq, Eq)]
enum OutOfRange {
    /// A user's input (`keyward import`): say what is wrong.
    Refuse,
    /// A provider's answer: bring it into range.
    Clamp,
}

/// Parse a token response the user gives `keyward import`, received at `now` (unix seconds).
/// An expiry out of range is refused.
pub fn parse(json: &str, now: i64) -> Result<TokenRecord> {
    let value: Value = serde_json::from_str(json).map_err(|e| {
        Error::usage(format!(
            "the token response is not valid JSON ({e}); expected an object like \
             {{\"access_token\": \"…\", \"token_type\": \"bearer\", \"expires_in\": 3600}}"
        ))
    })?;
    record(&value, now, OutOfRange::Refuse)
}

/// Parse a token endpoint's answer (connect, refresh); an expiry out of range is clamped.
pub fn from_value(value: &Value, now: i64) -> Result<TokenRecord> {
    record(value, now, OutOfRange::Clamp)
}

fn record(value: &Value, now: i64, out_of_range: OutOfRange) -> Result<TokenRecord> {
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
    let expires_at = expiry(obj, now, out_of_range)?;
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

fn expiry(
    obj: &serde_json::Map<String, Value>,
    now: i64,
    out_of_range: OutOfRange,
) -> Result<Option<i64>> {
    let latest = now.saturating_add(MAX_LIFETIME_SECS);
    if let Some(v) = obj.get("expires_in") {
        let not_seconds = || Error::usage("`expires_in` must be a number of seconds");
        let secs = match v {
            Value::Null => return Ok(None),
            Value::Number(n) => n.as_f64().ok_or_else(not_seconds)?,
            // Some providers send numbers as strings.
            Value::String(s) => s.trim().parse::<f64>().map_err(|_| not_seconds())?,
            _ => return Err(not_seconds()),
        };
        if secs.is_nan() {
            return Err(not_seconds());
        }
        let secs = in_range(secs, 0, MAX_LIFETIME_SECS, out_of_range).ok_or_else(|| {
            Error::usage(format!(
                "`expires_in` {v} is out of range: expected 0 to {MAX_LIFETIME_SECS} seconds \
                 (100 years); use 0 for a token that has already expired, or leave it out for \
                 one that does not expire"
            ))
        })?;
        return Ok(Some(now.saturating_add(secs)));
    }
    let at = match obj.get("expires_at") {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::Number(n)) => n.as_f64(),
        Some(Value::String(s)) => match chrono::DateTime::parse_from_rfc3339(s) {
            Ok(t) => Some(t.timestamp() as f64),
            Err(_) => Some(s.trim().parse::<f64>().map_err(|_| {
                Error::usage(format!(
                    "`expires_at` {s:?} is neither unix seconds nor an RFC 3339 time"
                ))
            })?),
        },
        Some(_) => None,
    };
    let Some(at) = at.filter(|at| !at.is_nan()) else {
        return Err(Error::usage(
            "`expires_at` must be unix seconds or an RFC 3339 time",
        ));
    };
    let v = &obj["expires_at"];
    in_range(at, 0, latest, out_of_range)
        .map(Some)
        .ok_or_else(|| {
            Error::usage(format!(
                "`expires_at` {v} is out of range: expected a time between 1970 and \
                 {MAX_LIFETIME_SECS} seconds (100 years) from now; leave it out for a token \
                 that does not expire"
            ))
        })
}

/// `value` as whole seconds when it lies in `min..=max`; out of it, `None` or the nearest end.
fn in_range(value: f64, min: i64, max: i64, out_of_range: OutOfRange) -> Option<i64> {
    // Compared as floats, so that no huge value is ever converted (and saturated) first;
    // `min` and `max` are far below 2^53, so they convert exactly.
    if value < min as f64 {
        (out_of_range == OutOfRange::Clamp).then_some(min)
    } else if value > max as f64 {
        (out_of_range == OutOfRange::Clamp).then_some(max)
    } else {
        // In range, so the conversion is exact (fractions are dropped).
        Some(value as i64)
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
    use serde_json::json;

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
        let e = parse(r#"{"access_token":"a","expires_in":1e300}"#, 0)
            .unwrap_err()
            .to_string();
        assert!(e.contains("`expires_in` 1e+300 is out of range"), "{e}");
        let e = parse(r#"{"error":"invalid_grant"}"#, 0)
            .unwrap_err()
            .to_string();
        assert!(e.contains("invalid_grant"), "{e}");
    }

    const NOW: i64 = 1_700_000_000;

    fn expires_at(answer: Value) -> Option<i64> {
        from_value(&answer, NOW).unwrap().expires_at
    }

    #[test]
    fn a_providers_absurd_expiry_is_clamped_never_wrapped() {
        let latest = NOW + MAX_LIFETIME_SECS;
        for huge in [
            json!(1e300),
            json!(u64::MAX),
            json!(i64::MAX),
            json!("1e300"),
        ] {
            assert_eq!(
                expires_at(json!({"access_token": "a", "expires_in": huge})),
                Some(latest),
                "{huge}"
            );
            assert_eq!(
                expires_at(json!({"access_token": "a", "expires_at": huge})),
                Some(latest),
                "{huge}"
            );
        }
        for negative in [json!(-1e300), json!(i64::MIN), json!(-5)] {
            assert_eq!(
                expires_at(json!({"access_token": "a", "expires_in": negative})),
                Some(NOW),
                "{negative}"
            );
            assert_eq!(
                expires_at(json!({"access_token": "a", "expires_at": negative})),
                Some(0),
                "{negative}"
            );
        }
        assert_eq!(
            expires_at(json!({"access_token": "a", "expires_in": 3599.9})),
            Some(NOW + 3599)
        );
    }

    #[test]
    fn an_imported_expiry_out_of_range_is_refused() {
        for json in [
            r#"{"access_token":"a","expires_in":-1}"#,
            r#"{"access_token":"a","expires_in":18446744073709551615}"#,
            r#"{"access_token":"a","expires_at":-1}"#,
            r#"{"access_token":"a","expires_at":"9999-12-31T23:59:59Z"}"#,
        ] {
            let e = parse(json, NOW).unwrap_err().to_string();
            assert!(e.contains("out of range"), "{json}: {e}");
        }
        let e = parse(r#"{"access_token":"a","expires_in":"NaN"}"#, NOW)
            .unwrap_err()
            .to_string();
        assert!(e.contains("number of seconds"), "{e}");
        assert_eq!(
            parse(r#"{"access_token":"a","expires_in":"60"}"#, NOW)
                .unwrap()
                .expires_at,
            Some(NOW + 60)
        );
    }
}
