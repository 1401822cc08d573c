//! Home folders wired to the fake upstream, and the keyward processes the sections drive: a
//! stdio server with rmcp's client, one with hand-written JSON-RPC lines, an HTTP server; their
//! stderr is kept for the leak check, their memory read from /proc.

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rmcp::service::{RoleClient, RunningService};
use rmcp::transport::TokioChildProcess;
use rmcp::ServiceExt;
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

use crate::calls::{Caller, ToolCall};
use crate::report::progress;
use crate::support::mcp::{free_port, wait_healthy};
use crate::support::{FakeUpstream, CANARY_ACCESS, CANARY_REFRESH};
use crate::{GITHUB_SCOPES, TOOL};

// ---- home folders and processes ------------------------------------------------------------------

/// Everything the keyward processes wrote to stderr, for the leak check at the end.
#[derive(Clone, Default)]
pub(crate) struct Logs(Arc<Mutex<Vec<u8>>>);

impl Logs {
    pub(crate) fn capture<R: tokio::io::AsyncRead + Unpin + Send + 'static>(&self, mut stderr: R) {
        let log = self.0.clone();
        tokio::spawn(async move {
            let mut buf = [0u8; 4096];
            while let Ok(n) = stderr.read(&mut buf).await {
                if n == 0 {
                    break;
                }
                log.lock().unwrap().extend_from_slice(&buf[..n]);
            }
        });
    }

    pub(crate) fn contains(&self, needle: &str) -> bool {
        let log = self.0.lock().unwrap();
        log.windows(needle.len()).any(|w| w == needle.as_bytes())
    }
}

/// A temporary home folder wired to the fake upstream.
pub(crate) struct BenchHome {
    pub(crate) dir: tempfile::TempDir,
}

impl BenchHome {
    /// A home whose config points every provider at `fake`, with `extra` lines added to the
    /// `[providers.NAME]` sections.
    pub(crate) fn new(fake: &FakeUpstream, extra: &[(&str, &str)]) -> BenchHome {
        let dir = tempfile::tempdir().expect("tempdir");
        let home = dir.path().join("home");
        std::fs::create_dir_all(&home).unwrap();
        let mut config = fake.config_toml();
        for (provider, line) in extra {
            let header = format!("[providers.{provider}]\n");
            config = config.replace(&header, &format!("{header}{line}\n"));
        }
        std::fs::write(home.join("config.toml"), config).unwrap();
        BenchHome { dir }
    }

    pub(crate) fn path(&self) -> PathBuf {
        self.dir.path().join("home")
    }

    pub(crate) fn std_command(&self, args: &[&str]) -> std::process::Command {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_keyward"));
        cmd.arg("--home").arg(self.path()).args(args);
        clean_env_std(&mut cmd);
        cmd
    }

    pub(crate) fn command(&self, args: &[&str]) -> tokio::process::Command {
        let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_keyward"));
        cmd.arg("--home").arg(self.path()).args(args);
        cmd.env_remove("KEYWARD_MASTER_KEY")
            .env_remove("KEYWARD_HOME")
            .env_remove("KEYWARD_TOOLS_DIR")
            .env_remove("RUST_LOG");
        cmd.kill_on_drop(true);
        cmd
    }

    /// Run a CLI command to completion; panics (without echoing stdin) when it fails.
    pub(crate) fn cli(&self, args: &[&str], stdin: &str) -> String {
        use std::io::Write;
        let mut child = self
            .std_command(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn keyward");
        child
            .stdin
            .take()
            .unwrap()
            .write_all(stdin.as_bytes())
            .unwrap();
        let out = child.wait_with_output().expect("keyward ran");
        assert!(
            out.status.success(),
            "keyward {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `keyward import PROVIDER` of a token response.
    pub(crate) fn import(&self, provider: &str, token_response: &Value) {
        self.cli(&["import", provider], &token_response.to_string());
    }
}

pub(crate) fn clean_env_std(cmd: &mut std::process::Command) {
    cmd.env_remove("KEYWARD_MASTER_KEY")
        .env_remove("KEYWARD_HOME")
        .env_remove("KEYWARD_TOOLS_DIR")
        .env_remove("RUST_LOG");
}

pub(crate) fn token_response(access: &str, refresh: &str, scope: &str) -> Value {
    json!({"access_token": access, "refresh_token": refresh, "token_type": "bearer",
           "expires_in": 28800, "scope": scope})
}

/// Grant a GitHub token pair at the fake (valid until told otherwise) and import it.
pub(crate) fn connect_github(fake: &FakeUpstream, home: &BenchHome, tag: &str) {
    let (access, refresh) = (
        format!("{CANARY_ACCESS}.gho_{tag}"),
        format!("{CANARY_REFRESH}.ghr_{tag}"),
    );
    fake.grant_with_refresh("github", &access, &refresh, &["repo", "read:user"], None);
    home.import("github", &token_response(&access, &refresh, GITHUB_SCOPES));
}

/// A GitHub token pair the fake knows for the next hour, imported as expired and dead at the
/// fake: only a refreshed token works (the storms and the refreshing rows).
pub(crate) fn import_expired_github(fake: &FakeUpstream, home: &BenchHome, tag: &str) {
    let (access, refresh) = crate::support::home::github_grant(fake, tag);
    home.import(
        "github",
        &json!({"access_token": access, "refresh_token": refresh, "token_type": "bearer",
                "expires_at": chrono::Utc::now().timestamp() - 60, "scope": GITHUB_SCOPES}),
    );
    fake.expire_access_token(&access);
}

/// The real binary as an MCP server over stdio, driven by rmcp's client.
pub(crate) struct StdioServer {
    pub(crate) client: RunningService<RoleClient, ()>,
    pub(crate) pid: u32,
}

pub(crate) async fn serve_stdio(home: &BenchHome, extra: &[&str], logs: &Logs) -> StdioServer {
    let mut args = vec!["serve"];
    args.extend_from_slice(extra);
    let (transport, stderr) = TokioChildProcess::builder(home.command(&args))
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn keyward serve");
    let pid = transport.id().expect("the child's pid");
    if let Some(stderr) = stderr {
        logs.capture(stderr);
    }
    let client = ().serve(transport).await.expect("initialize over stdio");
    progress(format!("keyward serve {} is pid {pid}", extra.join(" ")));
    StdioServer { client, pid }
}

impl StdioServer {
    pub(crate) fn caller(&self) -> Caller {
        Caller::Mcp(self.client.peer().clone(), ToolCall::of(TOOL))
    }

    /// Close stdin and wait for the process to exit (rmcp's graceful shutdown).
    pub(crate) async fn stop(self) {
        let _ = self.client.cancel().await;
    }
}

/// `keyward serve --http` on a free loopback port.
pub(crate) struct HttpChild {
    pub(crate) child: tokio::process::Child,
    pub(crate) base: String,
}

pub(crate) async fn serve_http(home: &BenchHome, logs: &Logs) -> HttpChild {
    let addr = format!("127.0.0.1:{}", free_port());
    let mut child = home
        .command(&["serve", "--http", &addr])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn keyward serve --http");
    logs.capture(child.stderr.take().unwrap());
    progress(format!(
        "keyward serve --http is pid {}",
        child.id().unwrap_or_default()
    ));
    let base = format!("http://{addr}");
    assert!(
        wait_healthy(&base, 15).await,
        "keyward serve --http did not come up"
    );
    HttpChild { child, base }
}

impl HttpChild {
    pub(crate) async fn stop(mut self) {
        if let Some(pid) = self
            .child
            .id()
            .and_then(|p| rustix::process::Pid::from_raw(p as i32))
        {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        }
        if tokio::time::timeout(Duration::from_secs(5), self.child.wait())
            .await
            .is_err()
        {
            let _ = self.child.kill().await;
        }
    }
}

/// Memory of a process from /proc, in KiB.
#[derive(Clone, Copy, Default)]
pub(crate) struct Mem {
    pub(crate) rss: u64,
    pub(crate) peak: u64,
    /// Private memory (heap, stacks, buffers).
    pub(crate) anon: u64,
    /// Mapped files: the binary's code and the shared libraries, shared with every other
    /// process that maps them.
    pub(crate) file: u64,
}

impl Mem {
    pub(crate) fn of(pid: u32) -> Mem {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        let field = |name: &str| {
            status
                .lines()
                .find(|l| l.starts_with(name))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
                .unwrap_or(0)
        };
        Mem {
            rss: field("VmRSS:"),
            peak: field("VmHWM:"),
            anon: field("RssAnon:"),
            file: field("RssFile:"),
        }
    }

    pub(crate) fn describe(&self) -> String {
        let mib = |kib: u64| kib as f64 / 1024.0;
        format!(
            "VmRSS {:.1} MiB (anon {:.1} · file-backed {:.1}) · peak {:.1} MiB",
            mib(self.rss),
            mib(self.anon),
            mib(self.file),
            mib(self.peak)
        )
    }
}

// ---- raw stdio: start-up and the exact tools/list ----------------------------------------------

/// A server driven with hand-written JSON-RPC lines (no client library in the way).
pub(crate) struct RawStdio {
    pub(crate) child: tokio::process::Child,
    pub(crate) stdin: Option<tokio::process::ChildStdin>,
    pub(crate) stdout: BufReader<tokio::process::ChildStdout>,
}

impl RawStdio {
    pub(crate) fn spawn(home: &BenchHome, extra: &[&str], logs: &Logs) -> RawStdio {
        let mut args = vec!["serve"];
        args.extend_from_slice(extra);
        let mut child = home
            .command(&args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn keyward serve");
        logs.capture(child.stderr.take().unwrap());
        RawStdio {
            stdin: child.stdin.take(),
            stdout: BufReader::new(child.stdout.take().unwrap()),
            child,
        }
    }

    /// Send a request and return the raw line of its answer.
    pub(crate) async fn request(&mut self, id: u64, method: &str, params: Option<Value>) -> String {
        let mut message = json!({"jsonrpc": "2.0", "id": id, "method": method});
        if let Some(params) = params {
            message["params"] = params;
        }
        self.send(&message).await;
        loop {
            let mut line = String::new();
            let n = tokio::time::timeout(Duration::from_secs(15), self.stdout.read_line(&mut line))
                .await
                .expect("an answer within 15 s")
                .expect("read stdout");
            assert!(n > 0, "keyward serve closed stdout");
            if serde_json::from_str::<Value>(&line)
                .ok()
                .is_some_and(|v| v["id"] == id)
            {
                return line;
            }
        }
    }

    pub(crate) async fn send(&mut self, message: &Value) {
        let stdin = self.stdin.as_mut().expect("stdin open");
        let mut line = message.to_string();
        line.push('\n');
        stdin.write_all(line.as_bytes()).await.expect("write stdin");
        stdin.flush().await.expect("flush stdin");
    }

    pub(crate) async fn initialize(&mut self) -> String {
        self.request(
            1,
            "initialize",
            Some(json!({"protocolVersion": "2025-06-18", "capabilities": {},
                        "clientInfo": {"name": "keyward-bench", "version": "1"}})),
        )
        .await
    }

    /// Close stdin and wait for the process to exit.
    pub(crate) async fn stop(mut self) {
        drop(self.stdin.take());
        if tokio::time::timeout(Duration::from_secs(5), self.child.wait())
            .await
            .is_err()
        {
            let _ = self.child.kill().await;
        }
    }
}
