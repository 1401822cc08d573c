//! Interoperability: the official Python MCP SDK drives the real binary over stdio, Streamable
//! HTTP and the legacy SSE transport (tests/interop/): the 1.x SDK with the 2025 revisions, the
//! 2.x SDK with 2026-07-28 (`mode="2026-07-28"` and the default `auto`), over stdio and HTTP.
//! The SDKs are installed into target/interop-venv and target/interop-venv2 on first use.
//! The official MCP Inspector's CLI (tests/interop/inspector.sh) lists and calls tools in both
//! protocol eras over stdio, Streamable HTTP and SSE, with its tool-schema portability check.
//! Without python3 (npm for the Inspector) a test is skipped, except in CI (`CI=true`), where it
//! must run.

use std::path::PathBuf;
use std::process::{Command, Stdio};

use serde_json::Value;

use crate::server_stateless::HttpProcess;
use crate::support::canary::assert_no_canary;
use crate::support::home::{bin, home_with, Kw};
use crate::support::FakeUpstream;

pub(crate) fn python_available() -> bool {
    Command::new("python3")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

fn run_sh() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/interop/run.sh")
}

/// Run the Python client; panic with its output when it fails.
async fn python(kw: &Kw, args: Vec<String>, expect_login: &str) {
    python_env(kw, args, expect_login, &[]).await
}

/// [`python`] with extra environment variables for the client.
pub(crate) async fn python_env(
    kw: &Kw,
    args: Vec<String>,
    expect_login: &str,
    env: &[(&str, &str)],
) {
    let mut cmd = Command::new("bash");
    cmd.arg(run_sh())
        .args(&args)
        .envs(env.iter().copied())
        .env("EXPECT_LOGIN", expect_login)
        .env_remove("KEYWARD_MASTER_KEY")
        .env_remove("KEYWARD_HOME")
        .env_remove("KEYWARD_TOOLS_DIR")
        .env("RUST_LOG", "debug");
    for (k, v) in &kw.env {
        cmd.env(k, v);
    }
    let output =
        tokio::task::spawn_blocking(move || cmd.output().expect("run tests/interop/run.sh"))
            .await
            .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "the Python MCP client failed ({args:?}):\n{stdout}\n{stderr}"
    );
    assert!(stdout.contains(": ok"), "{stdout}");
    // The SDK logs this when DELETE /mcp is not answered 200 or 204.
    assert!(
        !stderr.contains("Session termination failed"),
        "the session did not end cleanly:\n{stderr}"
    );
    assert_no_canary("the Python client's output", &output.stdout);
    assert_no_canary(
        "the Python client's stderr (with keyward's)",
        &output.stderr,
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_python_sdk_talks_to_keyward_over_stdio_http_and_sse() {
    if !python_available() {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "python3 is required in CI for the interop test"
        );
        eprintln!("skipping the interop test: python3 is not installed");
        return;
    }
    keyward::server::install_crypto_provider();
    let up = FakeUpstream::start().await;
    let kw = home_with(&up, &[("default", "default"), ("alice", "default")]);

    python(
        &kw,
        vec![
            "stdio".into(),
            bin().into(),
            kw.home().display().to_string(),
        ],
        "default-default",
    )
    .await;
    // 2026-07-28, pinned and negotiated; the last one also listens for a connection the CLI
    // adds while it runs.
    for (mode, listen) in [("2026-07-28", "0"), ("auto", "1")] {
        python_env(
            &kw,
            vec![
                "sdk2".into(),
                "stdio".into(),
                mode.into(),
                bin().into(),
                kw.home().display().to_string(),
            ],
            "default-default",
            &[("LISTEN", listen)],
        )
        .await;
    }

    let key = kw
        .ok(&["users", "add", "alice"], "")
        .stdout()
        .trim()
        .to_string();
    let server = HttpProcess::start(&kw).await;
    let base = &server.base;

    python(
        &kw,
        vec!["http".into(), format!("{base}/mcp"), key.clone()],
        "alice-default",
    )
    .await;
    python(
        &kw,
        vec!["sse".into(), format!("{base}/sse"), key.clone()],
        "alice-default",
    )
    .await;
    for mode in ["2026-07-28", "auto"] {
        python(
            &kw,
            vec![
                "sdk2".into(),
                "http".into(),
                mode.into(),
                format!("{base}/mcp"),
                key.clone(),
            ],
            "alice-default",
        )
        .await;
    }

    server.stop().await;
}

/// Run the Inspector's CLI with `args`; its JSON answer, after checking it exited 0 and carries
/// no secret.
async fn inspector(args: Vec<String>) -> Value {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/interop/inspector.sh");
    let mut cmd = Command::new("bash");
    cmd.arg(script)
        .args(["--format", "json"])
        .args(&args)
        .env_remove("KEYWARD_MASTER_KEY")
        .env_remove("KEYWARD_HOME");
    let output = tokio::task::spawn_blocking(move || cmd.output().expect("run the Inspector"))
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    // With --strict, exit 6 means a tool schema with an error-severity portability problem.
    assert!(
        output.status.success(),
        "the Inspector failed ({args:?}, {:?}):\n{stdout}\n{stderr}",
        output.status
    );
    assert_no_canary("the Inspector's output", &output.stdout);
    assert_no_canary("the Inspector's stderr (with keyward's)", &output.stderr);
    serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}"))
}

/// The login `github_get_me` answered, from the Inspector's JSON.
fn login(answer: &Value) -> &str {
    let result = &answer["result"];
    assert_ne!(result["isError"], true, "{answer}");
    result["structuredContent"]["login"]
        .as_str()
        .unwrap_or_else(|| panic!("no login in {answer}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn the_mcp_inspector_cli_lists_and_calls_tools_in_both_eras() {
    if !crate::server_conformance::npm_available() {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "npm is required in CI for the Inspector test"
        );
        eprintln!("skipping the Inspector test: npm is not installed");
        return;
    }
    keyward::server::install_crypto_provider();
    let up = FakeUpstream::start().await;
    let kw = home_with(&up, &[("default", "default"), ("alice", "default")]);
    let home = kw.home().display().to_string();
    let stdio = |method: &str, era: &str| -> Vec<String> {
        let mut args: Vec<String> = vec!["--protocol-era".into(), era.into()];
        args.extend(["--method".into(), method.into()]);
        if method == "tools/list" {
            args.push("--strict".into());
        } else {
            args.extend(["--tool-name".into(), "github_get_me".into()]);
        }
        args.extend(["--".into(), bin().to_string()]);
        args.extend([
            "--home".into(),
            home.clone(),
            "serve".into(),
            "--all-tools".into(),
        ]);
        args
    };
    for era in ["legacy", "modern"] {
        let listed = inspector(stdio("tools/list", era)).await;
        let tools = listed["result"]["tools"].as_array().expect("tools");
        assert_eq!(
            tools.len(),
            crate::exec::catalog_tools(&kw).len(),
            "every tool, in the {era} era"
        );
        let called = inspector(stdio("tools/call", era)).await;
        assert_eq!(login(&called), "default-default", "{era} over stdio");
    }

    let key = kw
        .ok(&["users", "add", "alice"], "")
        .stdout()
        .trim()
        .to_string();
    let server = HttpProcess::start(&kw).await;
    let base = &server.base;
    for (era, url) in [
        ("modern", format!("{base}/mcp")),
        ("legacy", format!("{base}/mcp")),
        ("legacy", format!("{base}/sse")),
    ] {
        let called = inspector(vec![
            "--protocol-era".into(),
            era.into(),
            "--header".into(),
            format!("Authorization: Bearer {key}"),
            "--method".into(),
            "tools/call".into(),
            "--tool-name".into(),
            "github_get_me".into(),
            url.clone(),
        ])
        .await;
        assert_eq!(login(&called), "alice-default", "{era} at {url}");
    }
    server.stop().await;
}
