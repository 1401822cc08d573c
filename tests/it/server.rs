//! `keyward serve` over stdio: the real binary, driven by rmcp's client (child process) and by
//! raw JSON-RPC lines where the test needs to see every byte.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::atomic::Ordering;
use std::time::Duration;

use rmcp::model::{CallToolRequest, CallToolRequestParams, ClientRequest, ErrorCode};
use rmcp::service::{PeerRequestOptions, ServiceError};
use serde_json::{json, Value};

use crate::support::canary::{assert_no_canary, audit_json};
use crate::support::home::{bin, home_with, Kw};
use crate::support::mcp::*;
use crate::support::FakeUpstream;

/// The issue the cancellation test asks for (held at the fake).
const SLOW_ISSUE: u64 = 999;

#[tokio::test]
async fn stdio_initialize_list_and_call_tools() {
    let up = FakeUpstream::start().await;
    let kw = home_with(&up, &[("default", "default")]);
    let server = serve_stdio(&kw, &[]).await;

    let info = server.client.peer_info().expect("server info");
    assert_eq!(info.server_info.as_ref().unwrap().name, "keyward");
    assert_eq!(
        info.capabilities.tools.as_ref().unwrap().list_changed,
        Some(true)
    );

    // Only GitHub is connected, so only GitHub tools are listed.
    let tools = server.client.list_all_tools().await.unwrap();
    let names: Vec<&str> = tools.iter().map(|t| t.name.as_ref()).collect();
    assert!(names.contains(&"github_get_issue"), "{names:?}");
    assert!(names.iter().all(|n| n.starts_with("github_")), "{names:?}");
    let get_issue = tools.iter().find(|t| t.name == "github_get_issue").unwrap();
    let json = serde_json::to_value(get_issue).unwrap();
    assert_eq!(json["annotations"]["readOnlyHint"], true);
    // Only the hints that differ from the MCP defaults are sent (openWorld: true by default).
    assert!(json["annotations"].get("openWorldHint").is_none());
    assert_eq!(json["_meta"]["keyward/scopes"], json!(["repo"]));
    assert_eq!(json["_meta"]["keyward/provider"], "github");
    assert_eq!(
        json["inputSchema"]["required"],
        json!(["owner", "repo", "number"])
    );
    let create = tools
        .iter()
        .find(|t| t.name == "github_create_issue")
        .unwrap();
    // A tool that writes leaves readOnlyHint out (the MCP default, false) and says whether it
    // may delete.
    let hints = create.annotations.as_ref().unwrap();
    assert_eq!(hints.read_only_hint, None);
    assert_eq!(hints.destructive_hint, Some(false));

    let me = ok_value(&call(&server.client, "github_get_me", json!({})).await);
    assert_eq!(me["login"], "default-default");
    let issue = ok_value(
        &call(
            &server.client,
            "github_get_issue",
            json!({"owner": "octo", "repo": "seen-by", "number": 7}),
        )
        .await,
    );
    assert_eq!(issue["title"], "octo/seen-by#7 seen by default-default");
    assert_eq!(issue["author"], "default-default");
    assert!(up
        .requests()
        .iter()
        .any(|s| s.path == "/github/repos/octo/seen-by/issues/7"));
    assert!(
        issue.get("url").is_none(),
        "projection keeps declared fields"
    );

    // Bad arguments: an error result with a reason, and no upstream request.
    let before = up.requests().len();
    let bad = call(
        &server.client,
        "github_get_issue",
        json!({"owner": "octo", "repo": "seen-by", "number": "seven"}),
    )
    .await;
    assert!(error_text(&bad).contains("number"), "{}", error_text(&bad));
    assert_eq!(up.requests().len(), before);

    // A tool that does not exist is a JSON-RPC invalid-params error.
    let unknown = server
        .client
        .call_tool(CallToolRequestParams::new("github_delete_everything"))
        .await
        .unwrap_err();
    match unknown {
        ServiceError::McpError(e) => {
            assert_eq!(e.code, ErrorCode::INVALID_PARAMS);
            assert!(e.message.contains("unknown tool"), "{}", e.message);
        }
        other => panic!("expected an MCP error, got {other:?}"),
    }

    for result in [me, issue] {
        assert_no_canary("a tool result", result.to_string().as_bytes());
    }
    server.finish().await;

    let audit = audit_json(&kw);
    let calls: Vec<&Value> = audit.iter().filter(|e| e["event"] == "tool-call").collect();
    assert_eq!(calls.len(), 3, "{calls:?}");
    for entry in &calls {
        let session = entry["session"]
            .as_str()
            .expect("a session id in the audit");
        assert!(session.starts_with("stdio-"), "{session}");
    }
    assert_eq!(calls[0]["tool"], "github_get_me");
    assert_eq!(calls[0]["outcome"], "ok");
}

#[tokio::test]
async fn stdio_filters_decide_what_is_listed_and_callable() {
    let up = FakeUpstream::start().await;
    let kw = home_with(&up, &[("default", "default")]);

    // --all-tools lists providers that are not connected too.
    let server = serve_stdio(&kw, &["--all-tools"]).await;
    let names: Vec<String> = server
        .client
        .list_all_tools()
        .await
        .unwrap()
        .into_iter()
        .map(|t| t.name.to_string())
        .collect();
    assert!(names.iter().any(|n| n.starts_with("slack_")), "{names:?}");
    assert!(
        names.iter().any(|n| n.starts_with("calendar_")),
        "{names:?}"
    );
    // Listed but not connected: callable, and the error says how to connect.
    let slack = call(
        &server.client,
        "slack_post_message",
        json!({"channel": "C0123ABCD", "text": "hi"}),
    )
    .await;
    assert!(
        error_text(&slack).contains("keyward connect slack"),
        "{}",
        error_text(&slack)
    );
    server.finish().await;

    // --toolsets and --read-only narrow the catalog; what is filtered out cannot be called.
    let server = serve_stdio(&kw, &["--toolsets", "github:issues", "--read-only"]).await;
    let names: Vec<String> = server
        .client
        .list_all_tools()
        .await
        .unwrap()
        .into_iter()
        .map(|t| t.name.to_string())
        .collect();
    assert!(names.contains(&"github_get_issue".to_string()), "{names:?}");
    assert!(
        !names.contains(&"github_create_issue".to_string()),
        "{names:?}"
    );
    assert!(!names.contains(&"github_get_me".to_string()), "{names:?}");
    let refused = server
        .client
        .call_tool(
            CallToolRequestParams::new("github_create_issue").with_arguments(args(
                json!({"owner": "octo", "repo": "hello", "title": "x"}),
            )),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(&refused, ServiceError::McpError(e) if e.code == ErrorCode::INVALID_PARAMS),
        "{refused:?}"
    );
    server.finish().await;

    // --tools picks single tools; a misspelled name is refused at start.
    let server = serve_stdio(&kw, &["--tools", "github_get_me"]).await;
    let tools = server.client.list_all_tools().await.unwrap();
    assert_eq!(tools.len(), 1);
    server.finish().await;
    let typo = kw.run(&["serve", "--tools", "github_get_mee"], "");
    assert_eq!(typo.code(), Some(2), "{}", typo.stderr());
    assert!(
        typo.stderr().contains("github_get_mee"),
        "{}",
        typo.stderr()
    );
}

#[tokio::test]
async fn stdio_cancellation_aborts_the_upstream_request() {
    let up = FakeUpstream::start().await;
    let kw = home_with(&up, &[("default", "default")]);
    // Held at the fake and never released: the call is in flight until it is cancelled.
    up.hold_api(&format!("/seen-by/issues/{SLOW_ISSUE}"));
    let server = serve_stdio(&kw, &[]).await;

    let request = ClientRequest::CallToolRequest(CallToolRequest::new(
        CallToolRequestParams::new("github_get_issue").with_arguments(args(
            json!({"owner": "octo", "repo": "seen-by", "number": SLOW_ISSUE}),
        )),
    ));
    let handle = server
        .client
        .send_cancellable_request(request, PeerRequestOptions::no_options())
        .await
        .unwrap();
    assert!(
        eventually(10, || up.held() == 1).await,
        "the upstream request never started"
    );
    handle
        .cancel(Some("the user changed their mind".into()))
        .await
        .unwrap();
    assert!(
        eventually(5, || up.held_abandoned() == 1).await,
        "the upstream request was not aborted"
    );

    // The session goes on.
    let me = ok_value(&call(&server.client, "github_get_me", json!({})).await);
    assert_eq!(me["login"], "default-default");
    server.finish().await;

    let audit = audit_json(&kw);
    assert!(
        audit.iter().any(|e| e["tool"] == "github_get_issue"
            && e["outcome"].as_str().unwrap_or("").contains("cancelled")),
        "the cancelled call is audited: {audit:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn stdio_client_hears_tools_list_changed_after_a_cli_import() {
    let up = FakeUpstream::start().await;
    let kw = home_with(&up, &[("default", "default")]);
    let server = serve_stdio(&kw, &[]).await;
    let before = server.client.list_all_tools().await.unwrap();
    assert!(!before.iter().any(|t| t.name.starts_with("slack_")));

    // The CLI reaches the vault through the running server (it owns the database).
    let response = json!({"access_token": "xoxp-not-a-canary", "token_type": "bearer",
                          "scope": "chat:write"});
    let kw_import = tokio::task::spawn_blocking({
        let home = kw.home();
        move || {
            let mut cmd = Command::new(bin());
            cmd.arg("--home").arg(home).args(["import", "slack"]);
            cmd.env_remove("KEYWARD_MASTER_KEY")
                .env_remove("KEYWARD_HOME");
            cmd.stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped());
            let mut child = cmd.spawn().unwrap();
            child
                .stdin
                .take()
                .unwrap()
                .write_all(response.to_string().as_bytes())
                .unwrap();
            child.wait_with_output().unwrap()
        }
    })
    .await
    .unwrap();
    assert!(
        kw_import.status.success(),
        "{}",
        String::from_utf8_lossy(&kw_import.stderr)
    );
    let heard = server.handler.list_changed.clone();
    assert!(
        eventually(5, || heard.load(Ordering::SeqCst) >= 1).await,
        "no tools/list_changed after the import"
    );
    let after = server.client.list_all_tools().await.unwrap();
    assert!(after.iter().any(|t| t.name == "slack_post_message"));
    server.finish().await;
}

pub(crate) fn raw_server(kw: &Kw) -> std::process::Child {
    let mut cmd: Command = kw.command(&["serve"]);
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn keyward serve")
}

pub(crate) fn wait_with_timeout(
    child: &mut std::process::Child,
    secs: u64,
) -> std::process::ExitStatus {
    let deadline = std::time::Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("keyward serve did not exit within {secs}s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `initialize` needs nothing from the vault, so a stdio server answers it while the vault is
/// still opening; the requests that need the vault wait for it and then work. (Cold start: MCP
/// clients spawn their servers when they start, and wait for `initialize`.)
#[tokio::test]
async fn stdio_answers_initialize_while_the_vault_is_still_opening() {
    let up = FakeUpstream::start().await;
    let kw = home_with(&up, &[("default", "default")]);
    // sled's own lock on the database, as a previous owner that is still closing holds it: the
    // server takes the owner lock and waits (up to 20 s) for this one to go.
    let held = sled::Config::new()
        .path(kw.home().join("vault"))
        .open()
        .expect("open the vault's database");
    // The waits below block: off the runtime, which serves the fake upstream meanwhile.
    tokio::task::spawn_blocking(move || drive_while_the_vault_opens(&kw, held))
        .await
        .unwrap();
}

fn drive_while_the_vault_opens(kw: &Kw, held: sled::Db) {
    let mut child = raw_server(kw);
    let mut stdin = child.stdin.take().unwrap();
    let lines = stdout_lines(child.stdout.take().unwrap());
    let stderr = drain(child.stderr.take().unwrap());

    writeln!(stdin, "{}", initialize_line(0)).unwrap();
    let init = lines
        .recv_timeout(Duration::from_secs(15))
        .expect("initialize is answered while the vault is still opening");
    assert_eq!(init["id"], 0, "{init}");
    assert_eq!(init["result"]["serverInfo"]["name"], "keyward", "{init}");

    // The vault opens once the database is free; what was asked meanwhile is answered then.
    writeln!(
        stdin,
        "{}",
        json!({"jsonrpc": "2.0", "method": "notifications/initialized"})
    )
    .unwrap();
    writeln!(
        stdin,
        "{}",
        json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list"})
    )
    .unwrap();
    writeln!(
        stdin,
        "{}",
        json!({"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {
            "name": "github_get_issue", "arguments": {"owner": "octo", "repo": "seen-by", "number": 7}}})
    )
    .unwrap();
    drop(held);
    let mut answers = std::collections::BTreeMap::new();
    while answers.len() < 2 {
        let message = lines
            .recv_timeout(Duration::from_secs(60))
            .expect("tools/list and tools/call are answered once the vault opens");
        answers.insert(message["id"].as_u64().expect("a response"), message);
    }
    let tools = answers[&1]["result"]["tools"].as_array().expect("tools");
    assert!(
        tools.iter().any(|t| t["name"] == "github_get_issue"),
        "{}",
        answers[&1]
    );
    let call = &answers[&2]["result"];
    assert_eq!(call["isError"], false, "{call}");
    assert_eq!(
        call["structuredContent"]["title"],
        "octo/seen-by#7 seen by default-default"
    );

    drop(stdin);
    let status = wait_with_timeout(&mut child, 10);
    assert!(status.success(), "exit status {status:?}");
    assert_no_canary("stderr", &stderr.join().unwrap());
}

/// What the vault needs is checked while the session starts, and a vault that does not open
/// still ends `keyward serve` with the error that says what to do, and exit code 1.
#[tokio::test]
async fn stdio_with_a_wrong_master_key_exits_with_the_error() {
    let up = FakeUpstream::start().await;
    let kw = home_with(&up, &[("default", "default")]);
    let mut cmd: Command = kw.command(&["serve"]);
    cmd.env(
        "KEYWARD_MASTER_KEY",
        "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
    )
    .stdin(Stdio::piped())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn keyward serve");
    let mut stdin = child.stdin.take().unwrap();
    let lines = stdout_lines(child.stdout.take().unwrap());
    let stderr = drain(child.stderr.take().unwrap());
    // The server may end before or after it reads these; either way they must not keep it up.
    let _ = writeln!(stdin, "{}", initialize_line(0));
    let _ = writeln!(
        stdin,
        "{}",
        json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list"})
    );
    let status = wait_with_timeout(&mut child, 30);
    assert_eq!(status.code(), Some(1));
    let log = String::from_utf8_lossy(&stderr.join().unwrap()).into_owned();
    assert!(
        log.contains("the master key does not open this vault")
            && log.contains("check KEYWARD_MASTER_KEY / master.key"),
        "{log}"
    );
    // Nothing on stdout says the tools are there: the list, if it was answered, is an error.
    while let Ok(message) = lines.try_recv() {
        assert!(
            message.get("result").is_none() || message["id"] == 0,
            "{message}"
        );
    }
}

/// The manifests compile after `initialize` too: a bad one still ends `keyward serve` with an
/// error that names the file, and exit code 1, also when the client leaves at once.
#[test]
fn stdio_with_a_bad_manifest_exits_with_the_error() {
    let kw = Kw::new();
    let tools = kw.with_tools_dir("more-tools", "");
    std::fs::write(tools.join("broken.toml"), "[provider]\nname = 5\n").unwrap();
    let run = kw.run(&["serve"], "");
    assert_eq!(run.code(), Some(1), "{}", run.stderr());
    assert!(run.stderr().contains("broken.toml"), "{}", run.stderr());
}

#[tokio::test]
async fn stdio_200_pipelined_calls_then_clean_exit_on_eof() {
    let up = FakeUpstream::start().await;
    let kw = home_with(&up, &[("default", "default")]);
    let mut child = raw_server(&kw);
    let mut stdin = child.stdin.take().unwrap();
    let stdout = child.stdout.take().unwrap();
    let stderr_task = drain(child.stderr.take().unwrap());

    // Everything in one write: the server must answer all of it, in any order.
    let mut input = String::new();
    input.push_str(&initialize_line(0));
    input.push('\n');
    input.push_str(&json!({"jsonrpc": "2.0", "method": "notifications/initialized"}).to_string());
    input.push('\n');
    for id in 1..=200u64 {
        let line = if id.is_multiple_of(2) {
            json!({"jsonrpc": "2.0", "id": id, "method": "tools/call", "params": {
                "name": "github_get_issue",
                "arguments": {"owner": "octo", "repo": "seen-by", "number": id}}})
        } else {
            json!({"jsonrpc": "2.0", "id": id, "method": "tools/call", "params": {
                "name": "github_get_me", "arguments": {}}})
        };
        input.push_str(&line.to_string());
        input.push('\n');
    }
    let writer = std::thread::spawn(move || {
        stdin.write_all(input.as_bytes()).unwrap();
        stdin
    });

    let reader = std::thread::spawn(move || {
        let mut lines = Vec::new();
        let mut stdout = BufReader::new(stdout);
        let mut line = String::new();
        while lines.len() < 201 {
            line.clear();
            if stdout.read_line(&mut line).unwrap() == 0 {
                break;
            }
            lines.push(line.clone());
        }
        (lines, stdout)
    });
    let (lines, mut stdout) = tokio::task::spawn_blocking(move || reader.join().unwrap())
        .await
        .unwrap();
    assert_eq!(lines.len(), 201, "every request is answered");
    let mut answered = std::collections::BTreeSet::new();
    for line in &lines {
        assert_no_canary("stdout", line.as_bytes());
        let message: Value = serde_json::from_str(line).expect("stdout carries only JSON-RPC");
        assert_eq!(message["jsonrpc"], "2.0");
        let id = message["id"].as_u64().expect("a response");
        answered.insert(id);
        if id == 0 {
            continue;
        }
        let result = &message["result"];
        assert_eq!(result["isError"], false, "call {id} failed: {message}");
        let structured = &result["structuredContent"];
        if id.is_multiple_of(2) {
            assert_eq!(
                structured["title"],
                format!("octo/seen-by#{id} seen by default-default")
            );
        } else {
            assert_eq!(structured["login"], "default-default");
        }
    }
    assert_eq!(answered.len(), 201);

    // EOF on stdin: the server exits cleanly, having written nothing else to stdout.
    drop(writer.join().unwrap());
    let status = wait_with_timeout(&mut child, 10);
    assert!(status.success(), "exit status {status:?}");
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut stdout, &mut rest).unwrap();
    assert_eq!(rest, "", "nothing after the last response");
    let log = stderr_task.join().unwrap();
    assert_no_canary("stderr", &log);

    let audit = audit_json(&kw);
    let calls = audit.iter().filter(|e| e["event"] == "tool-call").count();
    assert_eq!(
        calls, 200,
        "every call is audited (the audit is flushed on exit)"
    );
}

#[tokio::test]
async fn stdio_malformed_requests_get_jsonrpc_errors_and_sigterm_exits_cleanly() {
    let up = FakeUpstream::start().await;
    let kw = home_with(&up, &[("default", "default")]);
    let mut child = raw_server(&kw);
    let mut stdin = child.stdin.take().unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let stderr = drain(child.stderr.take().unwrap());
    let mut read = move || {
        let mut line = String::new();
        stdout.read_line(&mut line).unwrap();
        serde_json::from_str::<Value>(&line).expect("a JSON-RPC line")
    };
    writeln!(stdin, "{}", initialize_line(1)).unwrap();
    assert_eq!(read()["id"], 1);
    writeln!(
        stdin,
        "{}",
        json!({"jsonrpc": "2.0", "method": "notifications/initialized"})
    )
    .unwrap();
    writeln!(
        stdin,
        "{}",
        json!({"jsonrpc": "2.0", "id": 2, "method": "tools/call",
               "params": {"name": "github_get_me", "arguments": 5}})
    )
    .unwrap();
    let answer = read();
    assert_eq!(answer["id"], 2);
    assert_eq!(answer["error"]["code"], -32602, "{answer}");
    writeln!(
        stdin,
        "{}",
        json!({"jsonrpc": "2.0", "id": 3, "method": "tools/frobnicate", "params": {}})
    )
    .unwrap();
    let answer = read();
    assert_eq!(answer["id"], 3);
    assert_eq!(answer["error"]["code"], -32601, "{answer}");

    let pid = child.id().to_string();
    let killed = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    assert!(killed.success());
    let status = wait_with_timeout(&mut child, 10);
    assert!(
        status.success(),
        "SIGTERM ends the server cleanly: {status:?}"
    );
    drop(stdin);
    assert_no_canary("stderr", &stderr.join().unwrap());
}

/// Every line the server writes to stdout, as JSON, delivered by a reader thread.
pub(crate) fn stdout_lines(stdout: std::process::ChildStdout) -> std::sync::mpsc::Receiver<Value> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { return };
            let value = serde_json::from_str(&line).expect("stdout carries only JSON-RPC");
            if tx.send(value).is_err() {
                return;
            }
        }
    });
    rx
}

#[tokio::test]
async fn stdio_unreadable_lines_get_jsonrpc_errors_and_the_session_goes_on() {
    let up = FakeUpstream::start().await;
    let kw = home_with(&up, &[("default", "default")]);
    let mut child = raw_server(&kw);
    let mut stdin = child.stdin.take().unwrap();
    let answers = stdout_lines(child.stdout.take().unwrap());
    let stderr = drain(child.stderr.take().unwrap());
    let next = || {
        answers
            .recv_timeout(Duration::from_secs(60))
            .expect("an answer on stdout")
    };
    let ping = |id: u64| {
        format!(
            "{}\n",
            json!({"jsonrpc": "2.0", "id": id, "method": "ping"})
        )
    };

    let mut input: Vec<u8> = Vec::new();
    input.extend_from_slice(format!("{}\n", initialize_line(1)).as_bytes());
    input.extend_from_slice(b"{\"jsonrpc\":\"2.0\",\"method\":\"notifications/initialized\"}\n");
    // Each bad line is followed by a request that must still be answered.
    let huge = json!({"jsonrpc": "2.0", "id": 99, "method": "ping",
                      "params": {"pad": "x".repeat(4 * 1024 * 1024)}});
    let bad_lines: Vec<Vec<u8>> = vec![
        b"{this is not json".to_vec(),
        b"{\"jsonrpc\":\"2.0\",\"id\":98,\"method\":\"\xff\xfe\"}".to_vec(),
        format!("{}{}", "[".repeat(300), "]".repeat(300)).into_bytes(),
        huge.to_string().into_bytes(),
        json!([{"jsonrpc": "2.0", "id": 20, "method": "ping"},
               {"jsonrpc": "2.0", "method": "notifications/initialized"},
               {"jsonrpc": "2.0", "id": "b21", "method": "tools/list"}])
        .to_string()
        .into_bytes(),
        json!([{"jsonrpc": "2.0", "method": "notifications/initialized"}])
            .to_string()
            .into_bytes(),
        b"42".to_vec(),
    ];
    for (i, bad) in bad_lines.iter().enumerate() {
        input.extend_from_slice(bad);
        input.push(b'\n');
        input.extend_from_slice(ping(100 + i as u64).as_bytes());
    }
    let writer = std::thread::spawn(move || {
        stdin.write_all(&input).unwrap();
        stdin
    });

    assert_eq!(next()["id"], 1, "initialize is answered");
    let expect_error = |answer: Value, id: Value, code: i64| {
        assert_eq!(answer["jsonrpc"], "2.0", "{answer}");
        assert!(
            answer.as_object().unwrap().contains_key("id"),
            "an error always has an id: {answer}"
        );
        assert_eq!(answer["id"], id, "{answer}");
        assert_eq!(answer["error"]["code"], code, "{answer}");
        answer["error"]["message"].as_str().unwrap().to_string()
    };
    // Requests are answered concurrently, so an answer to a ping may come after the error for
    // the next bad line; the errors themselves come in the order of the lines.
    let mut pongs = std::collections::BTreeSet::new();
    let mut errors = Vec::new();
    while pongs.len() < bad_lines.len() || errors.len() < 8 {
        let answer = next();
        if answer.get("result").is_some() {
            pongs.insert(answer["id"].as_u64().expect("a ping's id"));
        } else {
            errors.push(answer);
        }
    }
    assert_eq!(
        pongs,
        (100..100 + bad_lines.len() as u64).collect(),
        "the request after each bad line is answered"
    );
    let mut errors = errors.into_iter();
    let mut error = |id: Value, code: i64| expect_error(errors.next().unwrap(), id, code);
    // Not JSON, not UTF-8, too deep, over the 4 MiB line limit: -32700 with a null id.
    error(Value::Null, -32700);
    assert!(error(Value::Null, -32700).contains("UTF-8"));
    assert!(error(Value::Null, -32700).contains("recursion limit"));
    let why = error(Value::Null, -32700);
    assert!(why.contains("4194304"), "the limit is named: {why}");
    // A batch: one -32600 per element with an id, or one with a null id.
    let why = error(json!(20), -32600);
    assert!(why.contains("batches are not supported"), "{why}");
    error(json!("b21"), -32600);
    error(Value::Null, -32600);
    // JSON that is not a message.
    error(Value::Null, -32600);

    drop(writer.join().unwrap());
    let status = wait_with_timeout(&mut child, 30);
    assert!(status.success(), "EOF ends the server cleanly: {status:?}");
    assert!(answers.try_recv().is_err(), "nothing else was written");
    assert_no_canary("stderr", &stderr.join().unwrap());
}

#[test]
fn mcp_json_has_working_stdio_and_http_entries() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/mcp.json");
    let config: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let servers = config["mcpServers"].as_object().expect("mcpServers");
    let stdio = servers
        .values()
        .find(|s| s.get("command").is_some())
        .expect("a stdio entry");
    assert_eq!(stdio["command"], "keyward");
    assert_eq!(stdio["args"], json!(["serve"]));
    let http = servers
        .values()
        .find(|s| s.get("url").is_some())
        .expect("an HTTP entry");
    assert_eq!(
        http["url"],
        format!("http://{}/mcp", keyward::server::http::DEFAULT_ADDR)
    );
    let auth = http["headers"]["Authorization"].as_str().unwrap();
    assert!(auth.starts_with("Bearer kw_"), "{auth}");
}

/// A second account of a provider gives its tools an optional `account` argument listing the
/// accounts (announced with `tools/list_changed`), which picks the connection; `serve
/// --account` (like `_meta` `keyward/account`) wins over it. With one account it is absent.
#[tokio::test]
async fn a_second_account_adds_an_account_argument_that_picks_the_connection() {
    let up = FakeUpstream::start().await;
    let kw = home_with(&up, &[("default", "default")]);
    let server = serve_stdio(&kw, &[]).await;
    let account_enum = |tools: &[rmcp::model::Tool], name: &str| {
        let tool = tools.iter().find(|t| t.name == name).expect("listed");
        tool.input_schema["properties"].get("account").cloned()
    };
    let tools = server.client.list_all_tools().await.unwrap();
    assert_eq!(account_enum(&tools, "github_get_me"), None);

    let work = crate::support::home::token("default", "work");
    up.grant_github_as(&work, "default-work");
    let response = json!({"access_token": work, "token_type": "bearer", "scope": "repo read:user"});
    kw.ok(
        &["import", "github", "--account", "work"],
        &response.to_string(),
    );
    let heard = server.handler.list_changed.clone();
    assert!(
        eventually(30, || heard.load(Ordering::SeqCst) >= 1).await,
        "no tools/list_changed after a second GitHub account was added"
    );
    let tools = server.client.list_all_tools().await.unwrap();
    let account = account_enum(&tools, "github_list_issues").expect("an account argument");
    assert_eq!(account["enum"], json!(["default", "work"]), "{account}");

    let me = ok_value(&call(&server.client, "github_get_me", json!({"account": "work"})).await);
    assert_eq!(me["login"], "default-work");
    let me = ok_value(&call(&server.client, "github_get_me", json!({})).await);
    assert_eq!(me["login"], "default-default");
    let missing = call(&server.client, "github_get_me", json!({"account": "home"})).await;
    assert!(
        error_text(&missing).contains("account home"),
        "{}",
        error_text(&missing)
    );
    server.finish().await;

    let pinned = serve_stdio(&kw, &["--account", "default"]).await;
    let me = ok_value(&call(&pinned.client, "github_get_me", json!({"account": "work"})).await);
    assert_eq!(
        me["login"], "default-default",
        "--account wins over the argument"
    );
    pinned.finish().await;
}
