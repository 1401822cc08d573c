//! Shared parts of the server tests: a small upstream that plays the GitHub API (with a slow
//! endpoint that notices when its caller goes away, for cancellation), a home folder wired to it
//! with connections imported through the real CLI, and MCP clients.

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
use rmcp::model::{CallToolRequestParams, CallToolResult, JsonObject};
use rmcp::service::{NotificationContext, RoleClient, RunningService};
use rmcp::transport::TokioChildProcess;
use rmcp::{ClientHandler, ServiceExt};
use serde_json::{json, Value};

use crate::cli::{Kw, CANARY_ACCESS, CANARY_REFRESH};

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

/// A client handler that counts `notifications/tools/list_changed`.
#[derive(Clone, Default)]
pub struct TestClient {
    pub list_changed: Arc<AtomicUsize>,
}

impl ClientHandler for TestClient {
    fn on_tool_list_changed(
        &self,
        _context: NotificationContext<RoleClient>,
    ) -> impl std::future::Future<Output = ()> + Send + '_ {
        self.list_changed.fetch_add(1, Ordering::SeqCst);
        std::future::ready(())
    }
}

pub type Client = RunningService<RoleClient, TestClient>;

pub fn args(value: Value) -> JsonObject {
    value.as_object().cloned().expect("arguments are an object")
}

pub async fn call(client: &Client, tool: &str, arguments: Value) -> CallToolResult {
    client
        .call_tool(CallToolRequestParams::new(tool.to_string()).with_arguments(args(arguments)))
        .await
        .expect("tools/call answers")
}

/// The `structuredContent` of a successful result (panics with the text of a failed one).
pub fn ok_value(result: &CallToolResult) -> Value {
    assert_ne!(
        result.is_error,
        Some(true),
        "the call failed: {:?}",
        result.content
    );
    let structured = result
        .structured_content
        .clone()
        .expect("structured content");
    let text = &result.content[0].as_text().expect("text content").text;
    assert_eq!(
        serde_json::from_str::<Value>(text).unwrap(),
        structured,
        "text and structuredContent differ"
    );
    structured
}

/// The text of an error result.
pub fn error_text(result: &CallToolResult) -> String {
    assert_eq!(result.is_error, Some(true), "expected an error result");
    result.content[0].as_text().expect("text").text.clone()
}

/// Wait until `cond` holds, polling (at most `secs`).
pub async fn eventually(secs: u64, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    while tokio::time::Instant::now() < deadline {
        if cond() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    cond()
}

/// Assert that no canary token appears in `bytes`.
pub fn assert_no_canary(what: &str, bytes: &[u8]) {
    for canary in [CANARY_ACCESS, CANARY_REFRESH] {
        assert!(
            !crate::cli::contains_bytes(bytes, canary.as_bytes()),
            "{what} contains a token"
        );
    }
}

/// Every audit record of the home, as JSON lines (via the real CLI).
pub fn audit_json(kw: &Kw) -> Vec<Value> {
    let run = kw.ok(&["audit", "--json"], "");
    assert_no_canary("the audit log", run.stdout().as_bytes());
    run.stdout()
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// Drain a child's stderr on a thread (a full pipe would block the child's logging), and hand
/// back everything it wrote once it closes.
pub fn drain(mut stderr: std::process::ChildStderr) -> std::thread::JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = std::io::Read::read_to_end(&mut stderr, &mut buf);
        buf
    })
}

/// The real binary as an MCP server over stdio, with its stderr collected.
pub struct StdioServer {
    pub client: Client,
    pub handler: TestClient,
    pub stderr: Arc<Mutex<Vec<u8>>>,
    /// The process id, to `kill -9` it.
    pub pid: u32,
    /// The task copying stderr into `stderr`; it ends when the process has exited.
    stderr_copied: tokio::task::JoinHandle<()>,
}

pub async fn serve_stdio(kw: &Kw, args: &[&str]) -> StdioServer {
    serve_stdio_env(kw, args, &[]).await
}

/// [`serve_stdio`] with extra environment variables (e.g. the debug-only test hooks).
pub async fn serve_stdio_env(kw: &Kw, args: &[&str], env: &[(&str, &str)]) -> StdioServer {
    let mut cmd = tokio::process::Command::new(crate::cli::bin());
    cmd.arg("--home").arg(kw.home()).arg("serve").args(args);
    cmd.env_remove("KEYWARD_MASTER_KEY")
        .env_remove("KEYWARD_HOME")
        .env_remove("KEYWARD_TOOLS_DIR")
        .env("RUST_LOG", "debug");
    for (k, v) in &kw.env {
        cmd.env(k, v);
    }
    cmd.envs(env.iter().copied());
    let (transport, stderr) = TokioChildProcess::builder(cmd)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn keyward serve");
    let pid = transport.id().expect("the child's pid");
    let log = Arc::new(Mutex::new(Vec::new()));
    let mut stderr = stderr.expect("stderr is piped");
    let stderr_copied = {
        let log = log.clone();
        tokio::spawn(async move {
            use tokio::io::AsyncReadExt;
            let mut buf = [0u8; 4096];
            while let Ok(n) = stderr.read(&mut buf).await {
                if n == 0 {
                    break;
                }
                log.lock().unwrap().extend_from_slice(&buf[..n]);
            }
        })
    };
    let handler = TestClient::default();
    let client = handler.clone().serve(transport).await.expect("initialize");
    StdioServer {
        client,
        handler,
        stderr: log,
        pid,
        stderr_copied,
    }
}

impl StdioServer {
    pub async fn finish(self) -> Vec<u8> {
        // Cancelling closes stdin and waits for the process to exit (or kills it), so its
        // stderr ends: everything it wrote is in the log once the copy is done.
        let _ = self.client.cancel().await;
        tokio::time::timeout(Duration::from_secs(60), self.stderr_copied)
            .await
            .expect("the stderr of keyward serve closed within 60 s after it was stopped")
            .expect("the stderr copy task");
        let log = self.stderr.lock().unwrap().clone();
        assert_no_canary("stderr of keyward serve", &log);
        log
    }
}
