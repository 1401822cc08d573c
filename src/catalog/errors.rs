//! A provider's `[provider.errors]` table, checked and compiled at load.
//!
//! What a failure *means* differs per provider — Slack answers HTTP 200 with
//! `{"ok": false, "error": "invalid_auth"}` where GitHub answers 401, and GitHub's 404 also means
//! "your token may not see this private repository". Those quirks are data in the manifest, so a
//! provider added through an extra tools folder gets the same treatment as the embedded ones:
//! its own auth-failure codes trigger the forced refresh and retry, and its own hints reach the
//! model. The executor keeps only what holds for every HTTP API (the default hint per status).

use std::collections::BTreeMap;

use serde_json::Value;

use super::manifest::{ErrorConvention, ErrorHint, ProviderSpec};

/// The compiled `[provider.errors]` table.
#[derive(Debug, Clone, Default)]
pub(crate) struct ErrorRules {
    auth_codes: Vec<String>,
    status: BTreeMap<u16, Hint>,
    codes: BTreeMap<String, Hint>,
    other_codes: Option<Hint>,
    /// Every field of an error answer some hint quotes.
    fields: Vec<String>,
}

/// A hint template with its placeholders resolved at load.
#[derive(Debug, Clone)]
pub(crate) struct Hint {
    pieces: Vec<Piece>,
    /// `None`: the caller's default (5xx retryable, codes not).
    pub(crate) retryable: Option<bool>,
}

#[derive(Debug, Clone)]
enum Piece {
    Text(String),
    Connect,
    Tool,
    Title,
    Code,
    /// A top-level string field of the error answer, and the text used when it is absent.
    Field(String, String),
}

/// What a hint's placeholders stand for in one failed call.
pub(crate) struct HintValues<'a> {
    /// The `keyward connect …` command of the call's connection.
    pub(crate) connect: &'a str,
    pub(crate) tool: &'a str,
    pub(crate) title: &'a str,
    /// The provider's error code (empty for a status hint).
    pub(crate) code: &'a str,
    pub(crate) body: Option<&'a Value>,
}

impl Hint {
    pub(crate) fn render(&self, values: &HintValues) -> String {
        let mut text = String::new();
        for piece in &self.pieces {
            match piece {
                Piece::Text(t) => text.push_str(t),
                Piece::Connect => text.push_str(values.connect),
                Piece::Tool => text.push_str(values.tool),
                Piece::Title => text.push_str(values.title),
                Piece::Code => text.push_str(values.code),
                Piece::Field(name, absent) => text.push_str(
                    values
                        .body
                        .and_then(|b| b.get(name))
                        .and_then(Value::as_str)
                        .unwrap_or(absent),
                ),
            }
        }
        text
    }
}

/// A load error in the table: the text to find its line by (a status or code), and why.
pub(crate) struct RuleError {
    pub(crate) near: String,
    pub(crate) reason: String,
}

fn fail(near: &str, reason: String) -> RuleError {
    RuleError {
        near: near.to_string(),
        reason,
    }
}

impl ErrorRules {
    pub(crate) fn compile(provider: &ProviderSpec) -> Result<ErrorRules, RuleError> {
        let spec = &provider.errors;
        // The first key that needs error codes, for the line number.
        let coded = if !spec.auth_codes.is_empty() {
            Some("auth_codes")
        } else if !spec.codes.is_empty() {
            Some("codes")
        } else {
            spec.other_codes.as_ref().map(|_| "other_codes")
        };
        if let (Some(key), false) = (coded, provider.error_convention == ErrorConvention::SlackOk) {
            return Err(fail(
                key,
                "`errors.auth_codes`, `errors.codes` and `errors.other_codes` need \
                 `error_convention = \"slack_ok\"`: only then does an answer carry an error code"
                    .into(),
            ));
        }
        let mut rules = ErrorRules {
            auth_codes: spec.auth_codes.clone(),
            ..ErrorRules::default()
        };
        for code in &spec.auth_codes {
            if spec.codes.contains_key(code) {
                return Err(fail(
                    code,
                    format!(
                        "`{code}` is in both `errors.auth_codes` and `errors.codes`; an auth code \
                         gets keyward's reconnect hint, so list it in one of them"
                    ),
                ));
            }
        }
        for (key, hint) in &spec.status {
            let status = key
                .parse::<u16>()
                .ok()
                .filter(|s| (400..=599).contains(s))
                .ok_or_else(|| {
                    fail(
                        key,
                        format!(
                            "`errors.status` key `{key}` must be an HTTP error status (400–599)"
                        ),
                    )
                })?;
            let hint = compile_hint(hint, false)
                .map_err(|r| fail(key, format!("`errors.status.{key}`: {r}")))?;
            rules.status.insert(status, hint);
        }
        for (code, hint) in &spec.codes {
            let hint = compile_hint(hint, true)
                .map_err(|r| fail(code, format!("`errors.codes.{code}`: {r}")))?;
            rules.codes.insert(code.clone(), hint);
        }
        if let Some(text) = &spec.other_codes {
            let hint = ErrorHint {
                hint: text.clone(),
                retryable: None,
                fields: BTreeMap::new(),
            };
            rules.other_codes = Some(
                compile_hint(&hint, true)
                    .map_err(|r| fail("other_codes", format!("`errors.other_codes`: {r}")))?,
            );
        }
        for hint in spec.status.values().chain(spec.codes.values()) {
            for field in hint.fields.keys() {
                if !rules.fields.contains(field) {
                    rules.fields.push(field.clone());
                }
            }
        }
        Ok(rules)
    }

    /// Whether `code` says the provider refused the token itself.
    pub(crate) fn is_auth_code(&self, code: &str) -> bool {
        self.auth_codes.iter().any(|c| c == code)
    }

    /// The manifest's hint for an HTTP status, if it has one.
    pub(crate) fn status_hint(&self, status: u16) -> Option<&Hint> {
        self.status.get(&status)
    }

    /// The manifest's hint for an error code that is not an auth code.
    pub(crate) fn code_hint(&self, code: &str) -> Option<&Hint> {
        self.codes.get(code).or(self.other_codes.as_ref())
    }

    /// The fields of an error answer the hints quote.
    pub(crate) fn fields(&self) -> impl Iterator<Item = &str> {
        self.fields.iter().map(String::as_str)
    }
}

/// Split `{placeholder}`s out of a hint. Braces around anything but a name are plain text.
fn compile_hint(hint: &ErrorHint, with_code: bool) -> Result<Hint, String> {
    if hint.hint.trim().is_empty() {
        return Err("`hint` is empty".into());
    }
    for name in hint.fields.keys() {
        if ["connect", "tool", "title", "code"].contains(&name.as_str()) {
            return Err(format!(
                "field `{name}` would hide the `{{{name}}}` placeholder; fields cannot be named \
                 connect, tool, title or code"
            ));
        }
    }
    let mut pieces = Vec::new();
    let mut text = String::new();
    let mut rest = hint.hint.as_str();
    while let Some(open) = rest.find('{') {
        let after = &rest[open + 1..];
        let name = after
            .find('}')
            .map(|close| &after[..close])
            .filter(|name| super::compiled::is_identifier(name));
        let Some(name) = name else {
            text.push_str(&rest[..=open]);
            rest = after;
            continue;
        };
        text.push_str(&rest[..open]);
        let piece = match name {
            "connect" => Piece::Connect,
            "tool" => Piece::Tool,
            "title" => Piece::Title,
            "code" if with_code => Piece::Code,
            field => {
                let Some(absent) = hint.fields.get(field) else {
                    let code = if with_code { ", {code}" } else { "" };
                    return Err(format!(
                        "`{{{name}}}` is not a placeholder; use {{connect}}, {{tool}}, \
                         {{title}}{code}, or a name listed in `fields`"
                    ));
                };
                Piece::Field(field.to_string(), absent.clone())
            }
        };
        if !text.is_empty() {
            pieces.push(Piece::Text(std::mem::take(&mut text)));
        }
        pieces.push(piece);
        rest = &after[name.len() + 1..];
    }
    text.push_str(rest);
    if !text.is_empty() {
        pieces.push(Piece::Text(text));
    }
    Ok(Hint {
        pieces,
        retryable: hint.retryable,
    })
}
