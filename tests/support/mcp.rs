//! MCP clients of the real binary: `keyward serve` over stdio driven by rmcp's client (with its
//! stderr collected), a handler that counts `tools/list_changed`, and the helpers that call a
//! tool and read its result; a free port and a readiness wait for `keyward serve --http`.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rmcp::model::{CallToolRequestParams, CallToolResult, JsonObject};
use rmcp::service::{NotificationContext, RoleClient, RunningService};
use rmcp::transport::TokioChildProcess;
use rmcp::{ClientHandler, ServiceExt};
use serde_json::Value;

use super::canary::assert_no_canary;
use super::home::{bin, Kw};

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

/// An `initialize` request as one JSON-RPC line (without its newline), for raw stdio clients.
pub fn initialize_line(id: u64) -> String {
    serde_json::json!({"jsonrpc": "2.0", "id": id, "method": "initialize", "params": {
        "protocolVersion": "2025-06-18", "capabilities": {},
        "clientInfo": {"name": "raw-test", "version": "1"}}})
    .to_string()
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
    let mut cmd = tokio::process::Command::new(bin());
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

/// A loopback port nobody listens on right now, for `keyward serve --http`.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Wait (at most `secs`) until the server at `base` answers `GET /healthz` with 200.
pub async fn wait_healthy(base: &str, secs: u64) -> bool {
    let http = reqwest::Client::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    while tokio::time::Instant::now() < deadline {
        let answer = http.get(format!("{base}/healthz")).send().await;
        if answer.is_ok_and(|r| r.status() == 200) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    false
}
