//! Last line of defence for invariant 1: any string in a result that contains a secret the
//! vault holds for this user has that secret replaced by `[redacted]`. Providers do not echo
//! tokens on purpose, but a misbehaving upstream, a proxy error page or a user-controlled field
//! (an issue body someone pasted a token into) must not carry one to the model.

use serde_json::Value;

use crate::secret::SecretString;

/// Replace every occurrence of every secret in every string (and object key) of `value`.
pub fn redact(value: Value, secrets: &[SecretString]) -> Value {
    let secrets: Vec<&str> = secrets
        .iter()
        .map(|s| s.expose())
        .filter(|s| s.len() >= 8)
        .collect();
    if secrets.is_empty() {
        return value;
    }
    walk(value, &secrets)
}

/// Redact a plain string (error messages).
pub fn redact_str(text: &str, secrets: &[SecretString]) -> String {
    let mut out = text.to_string();
    for s in secrets.iter().map(|s| s.expose()).filter(|s| s.len() >= 8) {
        if out.contains(s) {
            out = out.replace(s, "[redacted]");
        }
    }
    out
}

fn walk(value: Value, secrets: &[&str]) -> Value {
    match value {
        Value::String(s) => Value::String(scrub(s, secrets)),
        Value::Array(items) => Value::Array(items.into_iter().map(|v| walk(v, secrets)).collect()),
        Value::Object(map) => Value::Object(
            map.into_iter()
                .map(|(k, v)| (scrub(k, secrets), walk(v, secrets)))
                .collect(),
        ),
        other => other,
    }
}

fn scrub(mut s: String, secrets: &[&str]) -> String {
    for secret in secrets {
        if s.contains(secret) {
            s = s.replace(secret, "[redacted]");
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_replaced_everywhere() {
        let secrets = [
            SecretString::new("kwcanary_access_123"),
            SecretString::new("short"),
        ];
        let v = serde_json::json!({
            "title": "token is kwcanary_access_123!",
            "nested": [{"kwcanary_access_123": "x"}, 5, null],
            "short": "short stays (too short to be a token)",
        });
        let out = redact(v, &secrets).to_string();
        assert!(!out.contains("kwcanary_access_123"), "{out}");
        assert!(out.contains("token is [redacted]!"), "{out}");
        assert!(out.contains("short stays"), "{out}");
        assert_eq!(
            redact_str("a kwcanary_access_123 b", &secrets),
            "a [redacted] b"
        );
    }
}
