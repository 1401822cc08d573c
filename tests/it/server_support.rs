//! Shared parts of the server tests: a small upstream that plays the GitHub API (with a slow
//! endpoint that notices when its caller goes away, for cancellation) and a home folder wired to
//! it with connections imported through the real CLI. The MCP clients are in
//! `tests/support/mcp.rs`.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;

use crate::support::home::Kw;
use crate::support::{CANARY_ACCESS, CANARY_REFRESH};

/// The issue number the upstream answers slowly (60 s), for cancellation tests.
pub const SLOW_ISSUE: u64 = 999;
/// The issue number the upstream answers once the test opens `UpState::gate`.
pub const GATED_ISSUE: u64 = 998;

/// One API request the upstream saw.
#[derive(Debug, Clone)]
pub struct Seen {
    pub path: String,
    pub token: String,
}

#[derive(Default)]
pub struct UpState {
    /// token → GitHub login
    tokens: Mutex<HashMap<String, String>>,
    seen: Mutex<Vec<Seen>>,
    pub slow_started: AtomicUsize,
    pub slow_dropped: AtomicUsize,
    /// Releases one request for [`GATED_ISSUE`].
    pub gate: tokio::sync::Notify,
}

/// A fake GitHub API on a loopback port.
pub struct Upstream {
    pub addr: SocketAddr,
    pub state: Arc<UpState>,
}

impl Upstream {
    pub async fn start() -> Upstream {
        let state = Arc::new(UpState::default());
        let app = Router::new()
            .route("/github/user", get(user))
            .route("/github/repos/{owner}/{repo}/issues/{number}", get(issue))
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Upstream { addr, state }
    }

    /// Make `token` valid, as the account `login`.
    pub fn grant(&self, token: &str, login: &str) {
        self.state
            .tokens
            .lock()
            .unwrap()
            .insert(token.to_string(), login.to_string());
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.state.seen.lock().unwrap().clone()
    }

    /// config.toml pointing the github provider at this upstream.
    pub fn config_toml(&self) -> String {
        format!(
            "[providers.github]\napi_base = \"http://{}/github\"\n",
            self.addr
        )
    }
}

#[allow(clippy::result_large_err)] // a test double; the Err is the response to send
fn login_of(state: &UpState, headers: &HeaderMap, path: String) -> Result<String, Response> {
    let token = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("")
        .to_string();
    state.seen.lock().unwrap().push(Seen {
        path,
        token: token.clone(),
    });
    match state.tokens.lock().unwrap().get(&token) {
        Some(login) => Ok(login.clone()),
        None => Err((
            StatusCode::UNAUTHORIZED,
            Json(json!({"message": "Bad credentials"})),
        )
            .into_response()),
    }
}

async fn user(State(state): State<Arc<UpState>>, headers: HeaderMap) -> Response {
    match login_of(&state, &headers, "/github/user".into()) {
        Ok(login) => Json(json!({
            "login": login, "id": 42, "name": format!("{login} (name)"),
            "html_url": format!("https://github.com/{login}"), "avatar_url": "https://x/y.png"
        }))
        .into_response(),
        Err(response) => response,
    }
}

struct DropCounter(Arc<UpState>);

impl Drop for DropCounter {
    fn drop(&mut self) {
        self.0.slow_dropped.fetch_add(1, Ordering::SeqCst);
    }
}

async fn issue(
    State(state): State<Arc<UpState>>,
    Path((owner, repo, number)): Path<(String, String, u64)>,
    headers: HeaderMap,
) -> Response {
    let path = format!("/github/repos/{owner}/{repo}/issues/{number}");
    let login = match login_of(&state, &headers, path) {
        Ok(login) => login,
        Err(response) => return response,
    };
    if number == SLOW_ISSUE {
        state.slow_started.fetch_add(1, Ordering::SeqCst);
        let _counter = DropCounter(state.clone());
        tokio::time::sleep(Duration::from_secs(60)).await;
        std::mem::forget(_counter);
    }
    if number == GATED_ISSUE {
        state.gate.notified().await;
    }
    Json(json!({
        "number": number, "title": format!("{owner}/{repo}#{number} seen by {login}"),
        "state": "open", "user": {"login": login}, "body": "text", "labels": [{"name": "bug"}],
        "assignees": [], "comments": 0, "url": "https://api.github.com/ignored"
    }))
    .into_response()
}

/// The access token of a test connection: starts with the canary, so any leak is caught.
pub fn token(user: &str, account: &str) -> String {
    format!("{CANARY_ACCESS}_{user}_{account}")
}

/// A home folder whose github provider is `upstream`, with one connection per (user, account),
/// imported with the real CLI and granted at the upstream as login `<user>-<account>`.
pub fn home_with(upstream: &Upstream, connections: &[(&str, &str)]) -> Kw {
    let kw = Kw::new();
    std::fs::create_dir_all(kw.home()).unwrap();
    std::fs::write(kw.home().join("config.toml"), upstream.config_toml()).unwrap();
    for (user, account) in connections {
        let access = token(user, account);
        upstream.grant(&access, &format!("{user}-{account}"));
        let response = json!({
            "access_token": access, "refresh_token": format!("{CANARY_REFRESH}_{user}_{account}"),
            "token_type": "bearer", "expires_in": 28800, "scope": "repo read:user",
        });
        kw.ok(
            &["import", "github", "--user", user, "--account", account],
            &response.to_string(),
        );
    }
    kw
}
