//! A hostile provider: API errors and token-endpoint refusals that quote back everything the
//! request carried — the `Authorization` header, the form with the refresh token and client
//! secret — in every field keyward reads (message, details, error code, `needed`/`provided`,
//! `error_description`, and the scope headers of a 403). Providers are not supposed to do this;
//! a proxy's error page, a debugging middleware or a careless API does, and keyward must not
//! pass any of it on (invariants 1 and 11).

use serde_json::json;

use super::{json_response, lock, set_header, Provider, Req, Response, SharedState};

/// How an echoing API failure answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Echo {
    /// The provider's error shape at this HTTP status, every text field quoting the request.
    Status(u16),
    /// Slack: `200 {"ok": false, "error": CODE}` with `needed` and `provided` quoting it.
    SlackCode(&'static str),
    /// Slack: `200 {"ok": false, "error": <the request>}`.
    SlackQuotedAsCode,
}

/// What the request carried, as one line: method, path, query, every header, the body.
pub(crate) fn echo_of(r: &Req) -> String {
    let headers: Vec<String> = r
        .headers
        .iter()
        .map(|(k, v)| format!("{k}: {}", String::from_utf8_lossy(v.as_bytes())))
        .collect();
    format!(
        "you sent {} {}?{} [{}] {}",
        r.method,
        r.path,
        r.raw_query.as_deref().unwrap_or(""),
        headers.join("; "),
        String::from_utf8_lossy(&r.body)
    )
}

/// The bearer value alone (what a provider would most plausibly quote).
fn credential(r: &Req) -> String {
    r.header("authorization").unwrap_or("").to_string()
}

pub(crate) fn api_failure(p: Provider, echo: Echo, r: &Req) -> Response {
    let all = echo_of(r);
    let cred = credential(r);
    match (p, echo) {
        (Provider::Github, Echo::Status(status)) => {
            let mut resp = json_response(
                status,
                &json!({
                    "message": format!("Validation Failed for {cred}"),
                    // GitHub also puts plain strings in `errors` (a refused review).
                    "errors": [{"resource": "Issue", "code": cred, "message": all}, cred],
                    "documentation_url": "https://docs.github.com/rest",
                    "status": status.to_string(),
                }),
            );
            if status == 403 {
                set_header(&mut resp, "x-accepted-oauth-scopes", &cred);
                set_header(&mut resp, "x-oauth-scopes", &cred);
            }
            resp
        }
        (Provider::Google, Echo::Status(status)) => {
            let mut resp = json_response(
                status,
                &json!({"error": {
                    "code": status,
                    "message": format!("Invalid Credentials: {cred}"),
                    "errors": [{"message": all, "domain": "global", "reason": cred}],
                    "status": "INVALID_ARGUMENT",
                }}),
            );
            if status == 403 {
                // The RFC 6750 challenge the hint quotes the scope of.
                set_header(
                    &mut resp,
                    "www-authenticate",
                    &format!("Bearer error=\"insufficient_scope\", scope=\"{cred}\""),
                );
            }
            resp
        }
        (Provider::Slack, Echo::Status(status)) => {
            json_response(status, &json!({"ok": false, "error": cred, "detail": all}))
        }
        (Provider::Slack, Echo::SlackCode(code)) => json_response(
            200,
            &json!({"ok": false, "error": code, "needed": cred, "provided": all,
                    "warning": cred, "response_metadata": {"messages": [all]}}),
        ),
        (Provider::Slack, Echo::SlackQuotedAsCode) => {
            json_response(200, &json!({"ok": false, "error": all}))
        }
        (_, other) => panic!("fake upstream: {other:?} is a Slack echo; {p:?} has none"),
    }
}

/// A token-endpoint refusal quoting the request: `{"error": CODE, "error_description": …}`;
/// an empty `code` puts the echo in `error` itself.
pub(crate) fn token_failure(status: u16, code: &str, r: &Req) -> Response {
    let all = echo_of(r);
    let code = if code.is_empty() {
        all.clone()
    } else {
        code.to_string()
    };
    json_response(
        status,
        &json!({"error": code, "error_description": format!("refused: {all}"), "ok": false}),
    )
}

/// A pending token-endpoint echo: answers the next `remaining` requests.
#[derive(Debug, Clone)]
pub(crate) struct TokenEcho {
    pub remaining: u32,
    pub status: u16,
    pub code: String,
}

impl SharedState {
    /// The next `n` token-endpoint requests of `provider` answer `status` with the OAuth error
    /// `code` (empty: the echo itself is the code) and an `error_description` quoting the
    /// request — refresh token, client secret and all.
    pub fn echo_token_errors(&self, provider: &str, n: u32, status: u16, code: &str) {
        lock(&self.token_echo)[Provider::from_name(provider).index()] = Some(TokenEcho {
            remaining: n,
            status,
            code: code.to_string(),
        });
    }

    /// The echo answer for this token request, if one is pending.
    pub(crate) fn take_token_echo(&self, p: Provider, r: &Req) -> Option<Response> {
        let mut echoes = lock(&self.token_echo);
        let slot = &mut echoes[p.index()];
        let echo = slot.as_mut()?;
        echo.remaining = echo.remaining.saturating_sub(1);
        let response = token_failure(echo.status, &echo.code, r);
        if echo.remaining == 0 {
            *slot = None;
        }
        Some(response)
    }
}
