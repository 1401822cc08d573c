//! Wrapper types for secret material.
//!
//! Every token, refresh token, client secret, API key and key byte that keyward holds lives in
//! one of these types. They exist so that a secret cannot reach a log line, an error message, a
//! panic or a `{:?}` by accident (invariant 1 of DESIGN.md): `Debug` and `Display` print
//! `[redacted]`, the only way to the bytes is an explicit, greppable `expose()`, and the memory is
//! zeroized when the value is dropped.

use std::fmt;

use serde::{Deserialize, Serialize};
use zeroize::{Zeroize, ZeroizeOnDrop};

/// A secret string (access token, refresh token, client secret, API key).
#[derive(Clone, Default, PartialEq, Eq, Zeroize, ZeroizeOnDrop, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SecretString(String);

impl SecretString {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret itself. Every call site is a place where a secret leaves its wrapper: keep
    /// them few, and never pass the result to anything that logs or formats it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl From<String> for SecretString {
    fn from(value: String) -> Self {
        Self(value)
    }
}

impl fmt::Debug for SecretString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl fmt::Display for SecretString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// Secret key material of a fixed size (master key, data keys).
#[derive(Clone, PartialEq, Eq, Zeroize, ZeroizeOnDrop)]
pub struct SecretKey([u8; 32]);

impl SecretKey {
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// A fresh key from the operating system's CSPRNG.
    pub fn generate() -> Self {
        use rand::RngCore;
        let mut bytes = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut bytes);
        Self(bytes)
    }

    pub fn expose(&self) -> &[u8; 32] {
        &self.0
    }
}

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// Scrubs known secrets out of text that came from somewhere keyward does not control.
///
/// Providers do not echo tokens on purpose, but an error body, a token endpoint's
/// `error_description`, a proxy's error page or a user-controlled field can quote whatever the
/// request carried. Every path that turns such text into something that leaves keyward — a tool
/// result, a tool error and its hint, an audit record, a stored `needs_reconnect` reason, a log
/// line, a CLI message — runs it through the redactor of that call, which holds every secret
/// keyward knows for it (invariants 1 and 11).
///
/// Each secret is matched as sent and in its form-encoded spelling (a token endpoint that quotes
/// its raw request body shows `1%2F%2F0abc` for the refresh token `1//0abc`). Secrets shorter
/// than [`Redactor::MIN_LEN`] are skipped: no real credential is that short, and replacing
/// every `abc` in a message would make it unreadable without protecting anything.
#[derive(Clone, Default)]
pub struct Redactor {
    /// Longest first, so a secret that contains another is replaced whole.
    patterns: Vec<SecretString>,
}

impl fmt::Debug for Redactor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Redactor({} patterns)", self.patterns.len())
    }
}

impl Redactor {
    /// Shorter strings are not treated as secrets.
    pub const MIN_LEN: usize = 8;
    /// What a secret is replaced with.
    pub const MARK: &'static str = "[redacted]";

    pub fn new() -> Redactor {
        Redactor::default()
    }

    /// A redactor for these secrets.
    pub fn of<'a>(secrets: impl IntoIterator<Item = &'a SecretString>) -> Redactor {
        let mut r = Redactor::new();
        r.extend(secrets);
        r
    }

    /// Add one secret (and its form-encoded spelling).
    pub fn add(&mut self, secret: &SecretString) {
        self.add_str(secret.expose());
    }

    pub fn extend<'a>(&mut self, secrets: impl IntoIterator<Item = &'a SecretString>) {
        for s in secrets {
            self.add(s);
        }
    }

    /// Add a secret that is held as a plain string for a moment (a form field being sent).
    pub fn add_str(&mut self, secret: &str) {
        if secret.len() < Self::MIN_LEN {
            return;
        }
        let encoded: String = url::form_urlencoded::byte_serialize(secret.as_bytes()).collect();
        for pattern in [secret.to_string(), encoded] {
            if !self.patterns.iter().any(|p| p.expose() == pattern) {
                self.patterns.push(SecretString::new(pattern));
            }
        }
        self.patterns
            .sort_by_key(|p| std::cmp::Reverse(p.expose().len()));
    }

    pub fn is_empty(&self) -> bool {
        self.patterns.is_empty()
    }

    /// `text` with every secret replaced by `[redacted]`.
    pub fn text(&self, text: &str) -> String {
        let mut out = text.to_string();
        self.scrub(&mut out);
        out
    }

    /// Redact a string in place.
    pub fn scrub(&self, text: &mut String) {
        for p in &self.patterns {
            if text.contains(p.expose()) {
                *text = text.replace(p.expose(), Self::MARK);
            }
        }
    }

    /// Every string (and object key) of `value`, redacted.
    pub fn value(&self, value: serde_json::Value) -> serde_json::Value {
        use serde_json::Value;
        if self.patterns.is_empty() {
            return value;
        }
        match value {
            Value::String(mut s) => {
                self.scrub(&mut s);
                Value::String(s)
            }
            Value::Array(items) => Value::Array(items.into_iter().map(|v| self.value(v)).collect()),
            Value::Object(map) => Value::Object(
                map.into_iter()
                    .map(|(mut k, v)| {
                        self.scrub(&mut k);
                        (k, self.value(v))
                    })
                    .collect(),
            ),
            other => other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_and_display_never_show_the_secret() {
        let s = SecretString::new("canary-secret-value");
        assert_eq!(format!("{s:?}"), "[redacted]");
        assert_eq!(format!("{s}"), "[redacted]");
        assert_eq!(format!("{:?}", Some(&s)), "Some([redacted])");
        let k = SecretKey::from_bytes([7; 32]);
        assert_eq!(format!("{k:?}"), "[redacted]");
        assert_eq!(s.expose(), "canary-secret-value");
    }

    #[test]
    fn the_redactor_replaces_secrets_everywhere_in_both_spellings() {
        let r = Redactor::of(&[
            SecretString::new("kwcanary_access_123"),
            SecretString::new("1//0refresh+token"),
            SecretString::new("short"),
        ]);
        let v = serde_json::json!({
            "title": "token is kwcanary_access_123!",
            "nested": [{"kwcanary_access_123": "x"}, 5, null],
            "form": "refresh_token=1%2F%2F0refresh%2Btoken&x=1",
            "short": "short stays (too short to be a token)",
        });
        let out = r.value(v).to_string();
        assert!(!out.contains("kwcanary_access_123"), "{out}");
        assert!(!out.contains("0refresh"), "{out}");
        assert!(out.contains("token is [redacted]!"), "{out}");
        assert!(out.contains("refresh_token=[redacted]&x=1"), "{out}");
        assert!(out.contains("short stays"), "{out}");
        assert_eq!(r.text("a kwcanary_access_123 b"), "a [redacted] b");
        assert!(!format!("{r:?}").contains("kwcanary"));
    }
}
