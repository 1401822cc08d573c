//! MCP revision 2026-07-28 (stateless) against the real binary, over stdio and Streamable
//! HTTP, with raw JSON-RPC so every field on the wire is seen: a request carries its protocol
//! version, the client's capabilities and info in `_meta`; there is no `initialize`, no session,
//! and any keyward process sharing the vault answers any request (invariant 14).

use std::io::Write;
use std::process::Stdio;
use std::sync::mpsc::Receiver;
use std::time::Duration;

use serde_json::{json, Value};

use crate::server::{raw_server, stdout_lines, wait_with_timeout};
use crate::server_http::EventStream;
use crate::support::canary::assert_no_canary;
use crate::support::home::{home_with, Kw};
use crate::support::mcp::*;
use crate::support::FakeUpstream;

const V2026: &str = "2026-07-28";

/// The `_meta` every 2026-07-28 request carries.
pub(crate) fn meta(capabilities: Value) -> Value {
    json!({
        "io.modelcontextprotocol/protocolVersion": V2026,
        "io.modelcontextprotocol/clientCapabilities": capabilities,
        "io.modelcontextprotocol/clientInfo": {"name": "stateless-test", "version": "1"},
    })
}

/// A 2026-07-28 request: `params` with the per-request `_meta`.
pub(crate) fn request(id: u64, method: &str, mut params: Value) -> Value {
    params["_meta"] = meta(json!({}));
    json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params})
}

pub(crate) fn call_tool(id: u64, name: &str, arguments: Value) -> Value {
    request(
        id,
        "tools/call",
        json!({"name": name, "arguments": arguments}),
    )
}

/// The next message on a stdio server's stdout (a generous bound: both cores may be busy).
fn next(lines: &Receiver<Value>) -> Value {
    lines
        .recv_timeout(Duration::from_secs(60))
        .expect("an answer on stdout within 60 s")
}

/// The next message that is not a notification.
fn next_reply(lines: &Receiver<Value>) -> Value {
    loop {
        let message = next(lines);
        if message.get("id").is_some() {
            return message;
        }
    }
}

fn send(stdin: &mut std::process::ChildStdin, message: &Value) {
    writeln!(stdin, "{message}").unwrap();
    stdin.flush().unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn stdio_a_lone_stateless_call_discover_and_list_need_no_initialize() {
    let up = FakeUpstream::start().await;
    let kw = home_with(&up, &[("default", "default")]);
    let mut child = raw_server(&kw);
    let mut stdin = child.stdin.take().unwrap();
    let lines = stdout_lines(child.stdout.take().unwrap());
    let stderr = drain(child.stderr.take().unwrap());

    // The very first message is a tool call: it is answered from the request alone.
    send(&mut stdin, &call_tool(1, "github_get_me", json!({})));
    let me = next_reply(&lines);
    assert_eq!(me["id"], 1, "{me}");
    assert_eq!(me["result"]["resultType"], "complete", "{me}");
    assert_eq!(me["result"]["isError"], false, "{me}");
    assert_eq!(
        me["result"]["structuredContent"]["login"],
        "default-default"
    );

    send(&mut stdin, &request(2, "server/discover", json!({})));
    let discover = next_reply(&lines)["result"].clone();
    let versions = discover["supportedVersions"].as_array().unwrap().clone();
    for version in [
        "2024-11-05",
        "2025-03-26",
        "2025-06-18",
        "2025-11-25",
        V2026,
    ] {
        assert!(versions.contains(&json!(version)), "{discover}");
    }
    assert_eq!(discover["capabilities"]["tools"]["listChanged"], true);
    assert!(discover["instructions"]
        .as_str()
        .is_some_and(|i| i.contains("keyward connect")));
    assert_eq!(
        discover["_meta"]["io.modelcontextprotocol/serverInfo"]["name"],
        "keyward"
    );

    // tools/list: caching directives, private (the list depends on the user's connections),
    // and the same order every time.
    send(&mut stdin, &request(3, "tools/list", json!({})));
    let listed = next_reply(&lines)["result"].clone();
    assert_eq!(listed["resultType"], "complete");
    assert_eq!(listed["ttlMs"], 10_000);
    assert_eq!(listed["cacheScope"], "private");
    let names = |listed: &Value| -> Vec<String> {
        listed["tools"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["name"].as_str().unwrap().to_string())
            .collect()
    };
    assert!(names(&listed).iter().all(|n| n.starts_with("github_")));
    send(&mut stdin, &request(4, "tools/list", json!({})));
    assert_eq!(names(&next_reply(&lines)["result"]), names(&listed));

    // Errors per the revision: unknown tool and bad params are -32602, an unknown version
    // -32022 with the supported ones, a request without its `_meta` -32602.
    send(
        &mut stdin,
        &call_tool(5, "github_delete_everything", json!({})),
    );
    let unknown = next_reply(&lines);
    assert_eq!(unknown["error"]["code"], -32602, "{unknown}");
    let mut future = call_tool(6, "github_get_me", json!({}));
    future["params"]["_meta"]["io.modelcontextprotocol/protocolVersion"] = json!("2099-01-01");
    send(&mut stdin, &future);
    let unsupported = next_reply(&lines);
    assert_eq!(unsupported["error"]["code"], -32022, "{unsupported}");
    let mut bare = call_tool(7, "github_get_me", json!({}));
    bare["params"]["_meta"]
        .as_object_mut()
        .unwrap()
        .remove("io.modelcontextprotocol/clientCapabilities");
    send(&mut stdin, &bare);
    let missing = next_reply(&lines);
    assert_eq!(missing["error"]["code"], -32602, "{missing}");
    // A bad argument is still a tool error result the model can read.
    send(
        &mut stdin,
        &call_tool(8, "github_get_issue", json!({"owner": "octo"})),
    );
    let bad = next_reply(&lines);
    assert_eq!(bad["result"]["isError"], true, "{bad}");

    drop(stdin);
    assert!(wait_with_timeout(&mut child, 30).success());
    assert_no_canary("stderr of keyward serve", &stderr.join().unwrap());
}

/// Import a Slack connection for `user` through the CLI (a process of its own, relaying to the
/// server that owns the vault).
fn import_slack(kw: &Kw, user: &str) {
    let response = json!({"access_token": "xoxp-not-a-canary", "token_type": "bearer",
                          "scope": "chat:write"});
    kw.ok(&["import", "slack", "--user", user], &response.to_string());
}

#[tokio::test(flavor = "multi_thread")]
async fn stdio_subscriptions_listen_hears_a_connection_the_cli_adds() {
    let up = FakeUpstream::start().await;
    let kw = home_with(&up, &[("default", "default")]);
    let mut child = raw_server(&kw);
    let mut stdin = child.stdin.take().unwrap();
    let lines = stdout_lines(child.stdout.take().unwrap());
    let stderr = drain(child.stderr.take().unwrap());

    // The vault is open once a call has been answered.
    send(&mut stdin, &request(1, "tools/list", json!({})));
    let before = next_reply(&lines);
    assert!(!before.to_string().contains("slack_"), "{before}");

    send(
        &mut stdin,
        &request(
            2,
            "subscriptions/listen",
            json!({"notifications": {"toolsListChanged": true}}),
        ),
    );
    let ack = next(&lines);
    assert_eq!(ack["method"], "notifications/subscriptions/acknowledged");
    assert_eq!(ack["params"]["notifications"]["toolsListChanged"], true);
    assert_eq!(
        ack["params"]["_meta"]["io.modelcontextprotocol/subscriptionId"],
        2
    );

    // Another user's connection is none of this stream's business; ours is.
    import_slack(&kw, "bob");
    import_slack(&kw, "default");
    let changed = next(&lines);
    assert_eq!(
        changed["method"], "notifications/tools/list_changed",
        "{changed}"
    );
    assert_eq!(
        changed["params"]["_meta"]["io.modelcontextprotocol/subscriptionId"],
        2
    );
    send(&mut stdin, &request(3, "tools/list", json!({})));
    let after = next_reply(&lines);
    assert!(after.to_string().contains("slack_post_message"), "{after}");

    // Cancelling the listen ends the stream: no answer for it, and the server goes on.
    send(
        &mut stdin,
        &json!({"jsonrpc": "2.0", "method": "notifications/cancelled",
                "params": {"requestId": 2, "_meta": meta(json!({}))}}),
    );
    send(&mut stdin, &call_tool(4, "github_get_me", json!({})));
    let me = next_reply(&lines);
    assert_eq!(me["id"], 4, "{me}");

    drop(stdin);
    assert!(wait_with_timeout(&mut child, 30).success());
    assert_no_canary("stderr of keyward serve", &stderr.join().unwrap());
}

/// A `keyward serve --http` process on `kw`'s home, and its stderr.
pub(crate) struct HttpProcess {
    child: std::process::Child,
    stderr: Option<std::thread::JoinHandle<Vec<u8>>>,
    pub(crate) base: String,
}

/// A test that fails midway leaves no server running.
impl Drop for HttpProcess {
    fn drop(&mut self) {
        if self.stderr.is_some() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

impl HttpProcess {
    pub(crate) async fn start(kw: &Kw) -> HttpProcess {
        HttpProcess::start_at(kw, &format!("127.0.0.1:{}", free_port())).await
    }

    /// Listening on `addr` (a test that names its `public_url` picks the port first).
    pub(crate) async fn start_at(kw: &Kw, addr: &str) -> HttpProcess {
        let mut child = kw
            .command(&["serve", "--http", addr])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = drain(child.stderr.take().unwrap());
        let base = format!("http://{addr}");
        assert!(
            wait_healthy(&base, 60).await,
            "keyward serve --http did not come up"
        );
        HttpProcess {
            child,
            stderr: Some(stderr),
            base,
        }
    }

    /// SIGKILL (kill -9), as a machine that dies; its stderr so far (checked for canaries).
    pub(crate) fn kill9(mut self) -> Vec<u8> {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let stderr = self.stderr.take().expect("stopped once").join().unwrap();
        assert_no_canary("stderr of keyward serve --http", &stderr);
        stderr
    }

    /// SIGTERM, wait for a clean exit; its stderr (already checked for canaries).
    pub(crate) async fn stop(mut self) -> Vec<u8> {
        let pid = self.child.id().to_string();
        std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap();
        let stderr = self.stderr.take().expect("stopped once");
        let status = tokio::task::spawn_blocking(move || {
            let status = wait_with_timeout(&mut self.child, 30);
            (status, self)
        })
        .await
        .unwrap()
        .0;
        assert!(status.success(), "{status:?}");
        let stderr = stderr.join().unwrap();
        assert_no_canary("stderr of keyward serve --http", &stderr);
        stderr
    }
}

/// A 2026-07-28 POST: the version, method and name headers that go with `body`.
pub(crate) fn post(base: &str, key: &str, body: &Value) -> reqwest::RequestBuilder {
    post_with(base, key, body, &[])
}

/// Headers to replace (`Some`) or leave out (`None`).
type HeaderChanges<'a> = &'a [(&'a str, Option<&'a str>)];

/// [`post`] with some of those headers replaced or left out.
fn post_with(
    base: &str,
    key: &str,
    body: &Value,
    changes: HeaderChanges,
) -> reqwest::RequestBuilder {
    let mut headers = vec![
        ("mcp-protocol-version", Some(V2026)),
        ("mcp-method", body["method"].as_str()),
        ("mcp-name", body["params"]["name"].as_str()),
    ];
    for (name, value) in changes {
        headers.retain(|(n, _)| n != name);
        headers.push((name, *value));
    }
    let mut request = reqwest::Client::new()
        .post(format!("{base}/mcp"))
        .bearer_auth(key)
        .header("accept", "application/json, text/event-stream")
        .header("content-type", "application/json")
        .body(body.to_string());
    for (name, value) in headers {
        if let Some(value) = value {
            request = request.header(name, value);
        }
    }
    request
}

/// The one JSON-RPC answer to a POST, whether it came as JSON or as an event stream.
pub(crate) async fn answer(response: reqwest::Response) -> (u16, Value) {
    let status = response.status().as_u16();
    let is_stream = response
        .headers()
        .get("content-type")
        .is_some_and(|v| v.to_str().unwrap_or("").starts_with("text/event-stream"));
    assert!(
        response.headers().get("mcp-session-id").is_none(),
        "a stateless answer opens no session"
    );
    if is_stream {
        let mut events = EventStream::new(response);
        (status, events.next_message().await)
    } else {
        (status, response.json().await.unwrap())
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn http_two_processes_on_one_vault_answer_alternate_stateless_requests() {
    keyward::server::install_crypto_provider();
    let up = FakeUpstream::start().await;
    let kw = home_with(&up, &[("alice", "default")]);
    let key = kw
        .ok(&["users", "add", "alice"], "")
        .stdout()
        .trim()
        .to_string();
    // The first owns the vault; the second relays to it. Neither knows the client.
    let first = HttpProcess::start(&kw).await;
    let second = HttpProcess::start(&kw).await;
    let servers = [first.base.clone(), second.base.clone()];

    // A lone call, with no request before it, on each.
    for (i, base) in servers.iter().enumerate() {
        let (status, me) = answer(
            post(base, &key, &call_tool(1, "github_get_me", json!({})))
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(status, 200, "server {i}: {me}");
        assert_eq!(me["result"]["resultType"], "complete", "{me}");
        assert_eq!(me["result"]["structuredContent"]["login"], "alice-default");
    }
    // One client's requests, round-robin across the two, as behind a plain load balancer.
    for n in 1..=10u64 {
        let base = &servers[(n % 2) as usize];
        let body = call_tool(
            n,
            "github_get_issue",
            json!({"owner": "octo", "repo": "seen-by", "number": n}),
        );
        let (status, issue) = answer(post(base, &key, &body).send().await.unwrap()).await;
        assert_eq!(status, 200);
        assert_eq!(issue["id"], n);
        assert_eq!(
            issue["result"]["structuredContent"]["title"],
            format!("octo/seen-by#{n} seen by alice-default")
        );
        let (_, listed) = answer(
            post(base, &key, &request(100 + n, "tools/list", json!({})))
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(listed["result"]["cacheScope"], "private", "{listed}");
    }
    // Without a key there is no user: 401, as for every other request.
    let anonymous = reqwest::Client::new()
        .post(format!("{}/mcp", servers[1]))
        .header("accept", "application/json, text/event-stream")
        .header("content-type", "application/json")
        .header("mcp-protocol-version", V2026)
        .header("mcp-method", "tools/list")
        .body(request(1, "tools/list", json!({})).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), 401);

    let audit = crate::support::canary::audit_json(&kw);
    let calls = audit.iter().filter(|e| e["event"] == "tool-call").count();
    assert_eq!(
        calls, 12,
        "every call is audited, whichever process answered it"
    );
    second.stop().await;
    first.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn http_header_mismatches_are_400_with_32020() {
    keyward::server::install_crypto_provider();
    let up = FakeUpstream::start().await;
    let kw = home_with(&up, &[("alice", "default")]);
    let key = kw
        .ok(&["users", "add", "alice"], "")
        .stdout()
        .trim()
        .to_string();
    let server = HttpProcess::start(&kw).await;
    let base = &server.base;
    let body = call_tool(1, "github_get_me", json!({}));

    let mismatches: [(&str, HeaderChanges); 5] = [
        (
            "the version header differs from _meta",
            &[("mcp-protocol-version", Some("2025-11-25"))],
        ),
        ("no version header", &[("mcp-protocol-version", None)]),
        (
            "Mcp-Method differs from the body",
            &[("mcp-method", Some("tools/list"))],
        ),
        (
            "Mcp-Name differs from the tool called",
            &[("mcp-name", Some("github_get_issue"))],
        ),
        ("no Mcp-Name", &[("mcp-name", None)]),
    ];
    for (what, changes) in mismatches {
        let response = post_with(base, &key, &body, changes).send().await.unwrap();
        let status = response.status().as_u16();
        let text = response.text().await.unwrap();
        let reply: Value =
            serde_json::from_str(&text).unwrap_or_else(|_| panic!("{what}: {status} {text}"));
        assert_eq!(status, 400, "{what}: {reply}");
        assert_eq!(reply["error"]["code"], -32020, "{what}: {reply}");
        assert_eq!(reply["id"], 1, "{what}: {reply}");
    }
    assert!(
        up.requests().iter().all(|r| r.path != "/github/user"),
        "a refused request reaches no provider"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn http_subscriptions_listen_hears_a_connection_the_cli_adds() {
    keyward::server::install_crypto_provider();
    let up = FakeUpstream::start().await;
    let kw = home_with(&up, &[("alice", "default")]);
    let key = kw
        .ok(&["users", "add", "alice"], "")
        .stdout()
        .trim()
        .to_string();
    let server = HttpProcess::start(&kw).await;
    let listen = request(
        7,
        "subscriptions/listen",
        json!({"notifications": {"toolsListChanged": true}}),
    );
    let response = post(&server.base, &key, &listen).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let mut events = EventStream::new(response);
    let ack = events.next_message().await;
    assert_eq!(
        ack["method"], "notifications/subscriptions/acknowledged",
        "{ack}"
    );

    import_slack(&kw, "bob");
    import_slack(&kw, "alice");
    let changed = events.next_message().await;
    assert_eq!(
        changed["method"], "notifications/tools/list_changed",
        "{changed}"
    );
    assert_eq!(
        changed["params"]["_meta"]["io.modelcontextprotocol/subscriptionId"],
        7
    );
    let (_, listed) = answer(
        post(&server.base, &key, &request(8, "tools/list", json!({})))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert!(
        listed.to_string().contains("slack_post_message"),
        "{listed}"
    );
    drop(events);
    server.stop().await;
}

/// A call with `elicitation.url` declared: a 2026-07-28 request of a client that can show its
/// user a URL.
pub(crate) fn call_tool_eliciting(id: u64, name: &str, arguments: Value) -> Value {
    let mut call = call_tool(id, name, arguments);
    call["params"]["_meta"]["io.modelcontextprotocol/clientCapabilities"] =
        json!({"elicitation": {"url": {}}});
    call
}

#[tokio::test(flavor = "multi_thread")]
async fn stdio_a_missing_connection_is_a_sign_in_the_client_completes_and_retries() {
    let up = FakeUpstream::start().await;
    // No connection at all; the fake provider's OAuth app is configured.
    let kw = crate::support::home::home_for(&up, &[]);
    let mut child = raw_server(&kw);
    let mut stdin = child.stdin.take().unwrap();
    let lines = stdout_lines(child.stdout.take().unwrap());
    let stderr = drain(child.stderr.take().unwrap());
    let args = json!({"owner": "octo", "repo": "seen-by", "number": 3});

    // A client that cannot show a URL gets the error result that names the command.
    send(&mut stdin, &call_tool(1, "github_get_issue", args.clone()));
    let plain = next_reply(&lines);
    assert_eq!(plain["result"]["isError"], true, "{plain}");
    assert!(
        plain.to_string().contains("keyward connect github"),
        "{plain}"
    );

    // One that can is asked to send its user to the provider's sign-in.
    send(
        &mut stdin,
        &call_tool_eliciting(2, "github_get_issue", args.clone()),
    );
    let asked = next_reply(&lines)["result"].clone();
    assert_eq!(asked["resultType"], "input_required", "{asked}");
    let elicit = &asked["inputRequests"]["sign-in"];
    assert_eq!(elicit["method"], "elicitation/create", "{asked}");
    assert_eq!(elicit["params"]["mode"], "url", "{asked}");
    assert!(elicit["params"]["message"]
        .as_str()
        .unwrap()
        .contains("GitHub"));
    let url = url::Url::parse(elicit["params"]["url"].as_str().unwrap()).unwrap();
    let state = asked["requestState"].as_str().unwrap().to_string();
    // The URL is the provider's authorization URL: PKCE, a loopback redirect, no secret.
    assert_no_canary("the sign-in URL", url.as_str().as_bytes());
    assert_no_canary("the requestState", state.as_bytes());
    let query = |name: &str| {
        url.query_pairs()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.to_string())
    };
    assert_eq!(query("code_challenge_method").as_deref(), Some("S256"));
    assert!(query("code_verifier").is_none() && query("client_secret").is_none());
    assert!(query("redirect_uri")
        .unwrap()
        .starts_with("http://127.0.0.1:"));

    // Asked again before the user is done: the same sign-in, not a second one.
    send(
        &mut stdin,
        &call_tool_eliciting(3, "github_get_issue", args.clone()),
    );
    let again = next_reply(&lines)["result"].clone();
    assert_eq!(
        again["inputRequests"]["sign-in"]["params"]["url"],
        url.as_str()
    );

    // A requestState is never trusted unsealed: tampered, or for other arguments, it is
    // refused.
    let mut forged = call_tool_eliciting(4, "github_get_issue", args.clone());
    forged["params"]["requestState"] = json!(format!("{state}x"));
    send(&mut stdin, &forged);
    assert_eq!(next_reply(&lines)["error"]["code"], -32602);
    let mut other = call_tool_eliciting(
        5,
        "github_get_issue",
        json!({"owner": "x", "repo": "y", "number": 1}),
    );
    other["params"]["requestState"] = json!(state);
    send(&mut stdin, &other);
    assert_eq!(next_reply(&lines)["error"]["code"], -32602);

    // The user signs in (the browser follows the provider's redirect to keyward's loopback)…
    let (status, page) = crate::oauth_fake_ext::play_browser(&url, |u| u).await;
    assert_eq!(status, 200, "{page}");
    // … and the client retries with the answer and the state: the call goes through.
    let mut retry = call_tool_eliciting(6, "github_get_issue", args.clone());
    retry["params"]["inputResponses"] = json!({"sign-in": {"action": "accept"}});
    retry["params"]["requestState"] = json!(state);
    send(&mut stdin, &retry);
    let done = next_reply(&lines);
    assert_eq!(done["result"]["resultType"], "complete", "{done}");
    assert_eq!(done["result"]["isError"], false, "{done}");
    assert_eq!(
        done["result"]["structuredContent"]["title"],
        format!("octo/seen-by#3 seen by {}", crate::support::GITHUB_LOGIN)
    );
    let status = crate::support::home::status_of(&kw, "github").expect("a stored connection");
    assert_eq!(status["status"], "active", "{status}");

    drop(stdin);
    assert!(wait_with_timeout(&mut child, 30).success());
    assert_no_canary("stderr of keyward serve", &stderr.join().unwrap());
}
