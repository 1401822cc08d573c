//! Tool errors, and turning provider answers into them.
//!
//! A tool error is what the model (and the person behind it) reads when a call fails, so each
//! one carries the provider's own message and status, and a hint that names the fix — usually
//! the exact `keyward` command. Provider fields are quoted as they came, so an error may hold
//! whatever the provider echoed: the executor redacts every error ([`ToolError::redacted`])
//! before it is audited, logged or returned.
//!
//! Nothing here knows a provider by name. What holds for every HTTP API (a hint per status) is
//! code; what one provider means by its answers — its auth-failure codes, its hints per code or
//! status — is its manifest's `[provider.errors]` table, compiled at load
//! (`crate::catalog::errors`), so a provider added as a manifest gets the same treatment.

use serde_json::Value;

use super::client::UpstreamResponse;
use crate::catalog::{ErrorConvention, HintValues, Provider, Tool, ToolSpec};
use crate::vault::ConnKey;

pub use crate::tool_error::{connect_command, needs_reconnect, no_connection, ToolError};

pub fn missing_scopes(
    key: &ConnKey,
    tool: &ToolSpec,
    missing: &[String],
    granted: &[String],
) -> ToolError {
    let mut wanted: Vec<String> = granted.to_vec();
    for m in missing {
        if !wanted.contains(m) {
            wanted.push(m.clone());
        }
    }
    ToolError::new(format!(
        "{} needs the {} scope(s) {}, which the {} connection was not granted (it has: {})",
        tool.name,
        key.provider,
        missing.join(", "),
        key,
        if granted.is_empty() {
            "none".to_string()
        } else {
            granted.join(", ")
        }
    ))
    .hint(format!(
        "run `{} --scopes {}` to grant them",
        connect_command(key),
        wanted.join(",")
    ))
    .sign_in(key, Some(wanted))
}

/// True when the provider says the token itself was not accepted: HTTP 401, or one of the
/// manifest's `errors.auth_codes`.
pub fn is_unauthorized(provider: &Provider, response: &UpstreamResponse) -> bool {
    if response.status == http::StatusCode::UNAUTHORIZED {
        return true;
    }
    if provider.error_convention == ErrorConvention::SlackOk {
        if let Some(code) = slack_error(&response.body) {
            return provider.errors.is_auth_code(&code);
        }
    }
    false
}

fn slack_error(body: &[u8]) -> Option<String> {
    // Only `ok` and `error` are built; the rest of the answer is skipped.
    let reads = super::project::Reads::of_keys(&["ok", "error"]);
    let value: Value = super::project::parse(&reads, body)?;
    if value.get("ok") == Some(&Value::Bool(false)) {
        Some(
            value
                .get("error")
                .and_then(Value::as_str)
                .unwrap_or("unknown_error")
                .to_string(),
        )
    } else {
        None
    }
}

/// Check a response and return its body as JSON, or the tool error it amounts to. Only what
/// `reads` keeps of a successful body is built (see [`super::project::Reads`], which must
/// include [`Provider::answer_fields`]); error answers are always read whole.
pub fn check_with(
    provider: &Provider,
    tool: &Tool,
    key: &ConnKey,
    response: &UpstreamResponse,
    reads: Option<&super::project::Reads>,
) -> Result<Value, ToolError> {
    let status = response.status;
    let body: Option<Value> = if response.body.is_empty() {
        None
    } else if tool.response.text_body.is_some() && status.is_success() {
        // A text answer (a diff) is the result itself; lossy so that a stray invalid byte in
        // a diff of a binary file costs one character, not the call.
        Some(Value::String(
            String::from_utf8_lossy(&response.body).into_owned(),
        ))
    } else {
        match reads {
            Some(reads) if status.is_success() => super::project::parse(reads, &response.body),
            _ => serde_json::from_slice(&response.body).ok(),
        }
    };
    let title = &provider.title;
    let connect = connect_command(key);
    let values = |code| HintValues {
        connect: &connect,
        tool: &tool.name,
        title,
        code,
        body: body.as_ref(),
    };

    if status.is_redirection() {
        let to = response
            .headers
            .get("location")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("?");
        let host = url::Url::parse(to)
            .ok()
            .and_then(|u| u.host_str().map(String::from))
            .unwrap_or_else(|| to.to_string());
        return Err(ToolError::new(format!(
            "{title} redirected the request to {host}; keyward does not follow redirects to another host with your token"
        ))
        .status(status.as_u16()));
    }

    if status.is_client_error() || status.is_server_error() {
        let message = body
            .as_ref()
            .and_then(provider_message)
            .unwrap_or_else(|| status.canonical_reason().unwrap_or("error").to_string());
        let code = status.as_u16();
        let err = ToolError::new(format!("{title} answered {code}: {message}")).status(code);
        // The manifest's hint for the status, else keyward's own.
        return Err(match provider.errors.status_hint(code) {
            Some(hint) => {
                let err = err.hint(hint.render(&values("")));
                if hint.retryable.unwrap_or(status.is_server_error()) {
                    err.retryable()
                } else {
                    err
                }
            }
            None => status_hint(err, response, &connect, tool),
        });
    }

    if provider.error_convention == ErrorConvention::SlackOk {
        if let Some(code) = body.as_ref().and_then(|b| {
            (b.get("ok") == Some(&Value::Bool(false))).then(|| {
                b.get("error")
                    .and_then(Value::as_str)
                    .unwrap_or("unknown_error")
                    .to_string()
            })
        }) {
            let err = ToolError::new(format!("{title} answered {code}")).status(status.as_u16());
            if provider.errors.is_auth_code(&code) {
                return Err(err.hint(format!(
                    "{title} no longer accepts this connection's token: run `{connect}`"
                )));
            }
            return Err(match provider.errors.code_hint(&code) {
                Some(hint) => {
                    let err = err.hint(hint.render(&values(&code)));
                    if hint.retryable.unwrap_or(false) {
                        err.retryable()
                    } else {
                        err
                    }
                }
                None => err,
            });
        }
    }

    Ok(body.unwrap_or_else(|| serde_json::json!({ "ok": true, "status": status.as_u16() })))
}

/// keyward's hint for an HTTP error status, for providers whose manifest has none for it.
fn status_hint(
    err: ToolError,
    response: &UpstreamResponse,
    connect: &str,
    tool: &Tool,
) -> ToolError {
    match response.status.as_u16() {
        401 => err.hint(format!(
            "the provider no longer accepts this connection's token: run `{connect}`"
        )),
        403 => {
            // The OAuth scope headers (GitHub's, and anyone's who copies them) name the fix.
            let accepted = header(response, "x-accepted-oauth-scopes");
            let has = header(response, "x-oauth-scopes");
            match accepted {
                Some(accepted) if !accepted.is_empty() => err.hint(format!(
                    "this needs the scope(s) `{accepted}` and the connection has `{}`: run `{connect} --scopes {}`",
                    has.unwrap_or_default(),
                    accepted.replace(' ', "")
                )),
                // RFC 6750 §3.1: `error="insufficient_scope", scope="…"` says the token lacks
                // a scope (Google's answer to a read-only token that tries to write). The scope
                // it names may be the broadest that would do; the tool's own are the least.
                _ => match insufficient_scope(response) {
                    Some(named) => {
                        let needed = if tool.scopes.is_empty() {
                            named.replace(' ', ",")
                        } else {
                            tool.scopes.join(",")
                        };
                        err.hint(format!(
                            "the connection's token lacks a scope this needs (the provider names `{named}`): run `{connect} --scopes {needed}`, adding any other scopes the connection should keep"
                        ))
                    }
                    None => err.hint("the connection is not allowed to do this (permissions on the resource, or a missing scope)"),
                },
            }
        }
        404 => err.hint("not found, or the connection cannot see it; check the identifiers"),
        410 => err.hint("it has already been deleted"),
        422 | 400 => err.hint(format!(
            "the provider rejected the arguments; check them against {}'s input schema",
            tool.name
        )),
        _ if response.status.is_server_error() => err
            .hint("the provider had a problem; retry in a moment")
            .retryable(),
        _ => err,
    }
}

/// The `scope` of a `WWW-Authenticate: Bearer error="insufficient_scope", scope="…"` answer.
fn insufficient_scope(response: &UpstreamResponse) -> Option<String> {
    let challenge = header(response, "www-authenticate")?;
    if !challenge.contains("error=\"insufficient_scope\"") {
        return None;
    }
    let (_, rest) = challenge.split_once("scope=\"")?;
    let (scope, _) = rest.split_once('"')?;
    (!scope.trim().is_empty()).then(|| scope.trim().to_string())
}

fn header(response: &UpstreamResponse, name: &str) -> Option<String> {
    response
        .headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(|s| s.trim().to_string())
}

/// The human message a provider put in its error body: GitHub `message` (+ `errors`), Google
/// `error.message`, OAuth-style `error_description` / `error`.
fn provider_message(body: &Value) -> Option<String> {
    if let Some(msg) = body.get("message").and_then(Value::as_str) {
        let details: Vec<String> = body
            .get("errors")
            .and_then(Value::as_array)
            .map(|errs| {
                // GitHub's `errors` holds objects ({"message"} or {"code"}), or, for some
                // refusals (a review of one's own pull request), the reason as a plain string.
                errs.iter()
                    .filter_map(|e| {
                        e.as_str()
                            .or_else(|| e.get("message").and_then(Value::as_str))
                            .or_else(|| e.get("code").and_then(Value::as_str))
                            .map(String::from)
                    })
                    .collect()
            })
            .unwrap_or_default();
        return Some(if details.is_empty() {
            msg.to_string()
        } else {
            format!("{msg} ({})", details.join("; "))
        });
    }
    if let Some(err) = body.get("error") {
        if let Some(msg) = err.get("message").and_then(Value::as_str) {
            return Some(msg.to_string());
        }
        if let Some(code) = err.as_str() {
            let desc = body.get("error_description").and_then(Value::as_str);
            return Some(match desc {
                Some(d) => format!("{code}: {d}"),
                None => code.to_string(),
            });
        }
    }
    None
}
