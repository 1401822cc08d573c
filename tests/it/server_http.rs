//! `keyward serve --http`: Streamable HTTP (rmcp's client, SSE and JSON replies), the legacy
//! HTTP+SSE transport (a plain HTTP client reading the event stream), API keys, Host/Origin
//! checks, user isolation and load. Most tests run the server in this process (over real TCP)
//! so they can add connections and remove users while it runs; one runs the real binary.

use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use futures::{Stream, StreamExt};
use keyward::config::{Config, Home};
use keyward::server::http::{HttpOptions, HttpServer};
use keyward::server::{Offer, ServerState};
use keyward::vault::{users, AuditEntry, ConnKey};
use rmcp::model::{CallToolRequest, CallToolRequestParams, ClientRequest, ServerResult};
use rmcp::service::PeerRequestOptions;
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::ServiceExt;
use serde_json::{json, Value};

use crate::cli::{contains_bytes, Kw};
use crate::server_support::*;

struct Http {
    /// Keeps the temporary home folder alive.
    _kw: Kw,
    up: Upstream,
    state: Arc<ServerState>,
    server: Option<HttpServer>,
    base: String,
}

impl Http {
    fn vault(&self) -> &keyward::vault::Vault {
        self.state.executor().vault()
    }

    fn add_user(&self, name: &str) -> String {
        users::add(self.vault(), name).unwrap().expose().to_string()
    }

    fn audit(&self) -> Vec<AuditEntry> {
        let entries: Vec<AuditEntry> = self
            .vault()
            .audit_entries(0, None)
            .unwrap()
            .into_iter()
            .map(|(_, e)| e)
            .collect();
        assert_no_canary(
            "the audit log",
            serde_json::to_string(&entries).unwrap().as_bytes(),
        );
        entries
    }

    async fn stop(mut self) {
        if let Some(server) = self.server.take() {
            server.stop().await.unwrap();
        }
    }
}

async fn http_with(connections: &[(&str, &str)], offer: Offer, json_response: bool) -> Http {
    keyward::server::install_crypto_provider();
    let up = Upstream::start().await;
    let kw = home_with(&up, connections);
    let home = Home { dir: kw.home() };
    let config = Config::load(&home).unwrap();
    let state = ServerState::open(&home, &config, offer).unwrap();
    let server = HttpServer::start(
        state.clone(),
        &config.server,
        HttpOptions {
            addr: "127.0.0.1:0".parse().unwrap(),
            json_response,
        },
    )
    .await
    .unwrap();
    let base = format!("http://{}", server.local_addr());
    Http {
        _kw: kw,
        up,
        state,
        server: Some(server),
        base,
    }
}

async fn http(connections: &[(&str, &str)]) -> Http {
    http_with(connections, Offer::default(), false).await
}

async fn mcp_client(base: &str, key: &str) -> Client {
    let config = StreamableHttpClientTransportConfig::with_uri(format!("{base}/mcp"))
        .auth_header(key)
        .max_concurrent_requests(256);
    let transport = StreamableHttpClientTransport::with_client(reqwest::Client::new(), config);
    TestClient::default()
        .serve(transport)
        .await
        .expect("initialize over Streamable HTTP")
}

fn init_body() -> Value {
    json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-06-18", "capabilities": {},
        "clientInfo": {"name": "raw", "version": "1"}}})
}

fn post(base: &str, path: &str, key: Option<&str>, body: &Value) -> reqwest::RequestBuilder {
    let mut request = reqwest::Client::new()
        .post(format!("{base}{path}"))
        .header("accept", "application/json, text/event-stream")
        .header("content-type", "application/json")
        .body(body.to_string());
    if let Some(key) = key {
        request = request.bearer_auth(key);
    }
    request
}

#[tokio::test]
async fn streamable_http_with_sse_replies() {
    let h = http(&[("alice", "default")]).await;
    let key = h.add_user("alice");

    // The raw reply to initialize is an event stream and names the session.
    let raw = post(&h.base, "/mcp", Some(&key), &init_body())
        .send()
        .await
        .unwrap();
    assert_eq!(raw.status(), 200);
    assert!(raw.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/event-stream"));
    assert!(raw.headers().contains_key("mcp-session-id"));

    let client = mcp_client(&h.base, &key).await;
    let tools = client.list_all_tools().await.unwrap();
    assert!(tools.iter().any(|t| t.name == "github_get_me"));
    let me = ok_value(&call(&client, "github_get_me", json!({})).await);
    assert_eq!(me["login"], "alice-default");
    let issue = ok_value(
        &call(
            &client,
            "github_get_issue",
            json!({"owner": "octo", "repo": "hello", "number": 3}),
        )
        .await,
    );
    assert_eq!(issue["title"], "octo/hello#3 seen by alice-default");
    let _ = client.cancel().await;

    let audit = h.audit();
    let calls: Vec<&AuditEntry> = audit.iter().filter(|e| e.event == "tool-call").collect();
    assert_eq!(calls.len(), 2);
    assert!(
        calls
            .iter()
            .all(|e| e.user == "alice" && e.session.is_some()),
        "calls are audited with the MCP session id: {calls:?}"
    );
    h.stop().await;
}

#[tokio::test]
async fn streamable_http_with_json_replies() {
    let h = http_with(&[("alice", "default")], Offer::default(), true).await;
    let key = h.add_user("alice");

    let raw = post(&h.base, "/mcp", Some(&key), &init_body())
        .send()
        .await
        .unwrap();
    assert_eq!(raw.status(), 200);
    assert_eq!(raw.headers()["content-type"], "application/json");
    let session = raw.headers()["mcp-session-id"]
        .to_str()
        .unwrap()
        .to_string();
    let body: Value = raw.json().await.unwrap();
    assert_eq!(body["id"], 1);
    assert_eq!(body["result"]["serverInfo"]["name"], "keyward");
    let _ = reqwest::Client::new()
        .delete(format!("{}/mcp", h.base))
        .bearer_auth(&key)
        .header("mcp-session-id", session)
        .send()
        .await
        .unwrap();

    let client = mcp_client(&h.base, &key).await;
    let me = ok_value(&call(&client, "github_get_me", json!({})).await);
    assert_eq!(me["login"], "alice-default");
    let _ = client.cancel().await;
    h.stop().await;
}

/// Reads a `text/event-stream` body event by event, keeping every byte for leak checks.
struct EventStream {
    body: Pin<Box<dyn Stream<Item = reqwest::Result<Bytes>> + Send>>,
    buf: Vec<u8>,
    raw: Vec<u8>,
}

impl EventStream {
    fn new(response: reqwest::Response) -> EventStream {
        EventStream {
            body: Box::pin(response.bytes_stream()),
            buf: Vec::new(),
            raw: Vec::new(),
        }
    }

    /// The next event with data: (event name, data). `None` when the stream ends.
    async fn next(&mut self) -> Option<(String, String)> {
        loop {
            if let Some(end) = self.buf.windows(2).position(|w| w == b"\n\n") {
                let event: Vec<u8> = self.buf.drain(..end + 2).collect();
                let text = String::from_utf8_lossy(&event).to_string();
                let mut name = "message".to_string();
                let mut data = Vec::new();
                for line in text.lines() {
                    if let Some(v) = line.strip_prefix("event:") {
                        name = v.trim().to_string();
                    } else if let Some(v) = line.strip_prefix("data:") {
                        data.push(v.strip_prefix(' ').unwrap_or(v).to_string());
                    }
                }
                if data.is_empty() {
                    continue;
                }
                return Some((name, data.join("\n")));
            }
            let chunk = tokio::time::timeout(Duration::from_secs(10), self.body.next())
                .await
                .expect("an event within 10 s")?
                .ok()?;
            self.raw.extend_from_slice(&chunk);
            self.buf.extend_from_slice(&chunk);
        }
    }

    async fn next_message(&mut self) -> Value {
        let (name, data) = self.next().await.expect("a message event");
        assert_eq!(name, "message");
        serde_json::from_str(&data).unwrap()
    }
}

async fn open_legacy(base: &str, key: &str) -> (EventStream, String) {
    let response = reqwest::Client::new()
        .get(format!("{base}/sse"))
        .bearer_auth(key)
        .header("accept", "text/event-stream")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let mut events = EventStream::new(response);
    let (name, endpoint) = events.next().await.expect("the endpoint event");
    assert_eq!(name, "endpoint");
    assert!(endpoint.starts_with("/messages?sessionId="), "{endpoint}");
    (events, endpoint)
}

#[tokio::test]
async fn legacy_sse_transport_with_a_plain_http_client() {
    let h = http(&[("alice", "default")]).await;
    let key = h.add_user("alice");
    let (mut events, endpoint) = open_legacy(&h.base, &key).await;

    let accepted = post(&h.base, &endpoint, Some(&key), &init_body())
        .send()
        .await
        .unwrap();
    assert_eq!(accepted.status(), 202);
    let init = events.next_message().await;
    assert_eq!(init["id"], 1);
    assert_eq!(init["result"]["capabilities"]["tools"]["listChanged"], true);
    let note = json!({"jsonrpc": "2.0", "method": "notifications/initialized"});
    assert_eq!(
        post(&h.base, &endpoint, Some(&key), &note)
            .send()
            .await
            .unwrap()
            .status(),
        202
    );

    let list = json!({"jsonrpc": "2.0", "id": 2, "method": "tools/list"});
    post(&h.base, &endpoint, Some(&key), &list)
        .send()
        .await
        .unwrap();
    let listed = events.next_message().await;
    assert_eq!(listed["id"], 2);
    assert!(listed["result"]["tools"]
        .as_array()
        .unwrap()
        .iter()
        .any(|t| t["name"] == "github_get_me"));

    let call = json!({"jsonrpc": "2.0", "id": 3, "method": "tools/call",
                      "params": {"name": "github_get_me", "arguments": {}}});
    post(&h.base, &endpoint, Some(&key), &call)
        .send()
        .await
        .unwrap();
    let answer = events.next_message().await;
    assert_eq!(answer["id"], 3);
    assert_eq!(
        answer["result"]["structuredContent"]["login"],
        "alice-default"
    );

    // Not JSON: 400 with a JSON-RPC parse error.
    let garbage = reqwest::Client::new()
        .post(format!("{}{endpoint}", h.base))
        .bearer_auth(&key)
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(garbage.status(), 400);

    assert_no_canary("the legacy SSE transcript", &events.raw);
    h.stop().await;
}

#[tokio::test]
async fn requests_without_a_valid_key_get_401_and_healthz_needs_none() {
    let h = http(&[("alice", "default")]).await;
    let key = h.add_user("alice");
    let client = reqwest::Client::new();

    let health = client
        .get(format!("{}/healthz", h.base))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    assert_eq!(health.text().await.unwrap().trim(), "ok");

    for (path, method) in [
        ("/mcp", "POST"),
        ("/mcp", "GET"),
        ("/sse", "GET"),
        ("/messages?sessionId=x", "POST"),
        ("/no-such-path", "GET"),
    ] {
        for bad in [None, Some("kw_not-a-real-key"), Some("")] {
            let mut request = client.request(method.parse().unwrap(), format!("{}{path}", h.base));
            if let Some(bad) = bad {
                request = request.header("authorization", format!("Bearer {bad}"));
            }
            let response = request.body(init_body().to_string()).send().await.unwrap();
            assert_eq!(response.status(), 401, "{method} {path} with {bad:?}");
            let challenge = response.headers()["www-authenticate"].to_str().unwrap();
            assert!(challenge.starts_with("Bearer"), "{challenge}");
        }
    }
    // Another scheme is not a key either.
    let basic = client
        .post(format!("{}/mcp", h.base))
        .header("authorization", format!("Basic {key}"))
        .send()
        .await
        .unwrap();
    assert_eq!(basic.status(), 401);
    // The right key passes.
    let ok = post(&h.base, "/mcp", Some(&key), &init_body())
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    h.stop().await;
}

#[tokio::test]
async fn foreign_host_or_origin_gets_403() {
    let h = http(&[("alice", "default")]).await;
    let key = h.add_user("alice");
    let port = h.base.rsplit(':').next().unwrap().to_string();

    for (header, value, allowed) in [
        ("host", "evil.example:80".to_string(), false),
        ("host", format!("attacker.test:{port}"), false),
        ("host", format!("localhost:{port}"), true),
        ("origin", "https://evil.example".to_string(), false),
        ("origin", "null".to_string(), false),
        ("origin", "http://localhost:6274".to_string(), true),
        ("origin", format!("http://127.0.0.1:{port}"), true),
    ] {
        for path in ["/mcp", "/sse"] {
            let method = if path == "/mcp" { "POST" } else { "GET" };
            let response = reqwest::Client::new()
                .request(method.parse().unwrap(), format!("{}{path}", h.base))
                .bearer_auth(&key)
                .header("accept", "application/json, text/event-stream")
                .header("content-type", "application/json")
                .header(header, &value)
                .body(init_body().to_string())
                .send()
                .await
                .unwrap();
            if allowed {
                assert_ne!(response.status(), 403, "{header}: {value} on {path}");
            } else {
                assert_eq!(response.status(), 403, "{header}: {value} on {path}");
            }
        }
    }
    // Even without a key, a foreign Host is refused before anything else.
    let response = reqwest::Client::new()
        .post(format!("{}/mcp", h.base))
        .header("host", "evil.example")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 403);
    h.stop().await;
}

#[tokio::test]
async fn one_users_session_never_reaches_another_users_tokens() {
    let h = http(&[("alice", "default"), ("bob", "default"), ("bob", "work")]).await;
    let alice_key = h.add_user("alice");
    let bob_key = h.add_user("bob");
    let bob_tokens = [token("bob", "default"), token("bob", "work")];

    let alice = mcp_client(&h.base, &alice_key).await;
    let bob = mcp_client(&h.base, &bob_key).await;
    let me = ok_value(&call(&alice, "github_get_me", json!({})).await);
    assert_eq!(me["login"], "alice-default");

    // Alice names bob's account: she has no such connection, and bob's token is not used.
    let request = ClientRequest::CallToolRequest(CallToolRequest::new(CallToolRequestParams::new(
        "github_get_me",
    )));
    let mut options = PeerRequestOptions::no_options();
    let mut meta = rmcp::model::RequestMetaObject::default();
    meta.insert("keyward/account".into(), json!("work"));
    options.meta = Some(meta);
    let handle = alice
        .send_cancellable_request(request, options)
        .await
        .unwrap();
    let ServerResult::CallToolResult(result) = handle.await_response().await.unwrap() else {
        panic!("expected a tool result");
    };
    let text = error_text(&result);
    assert!(
        text.contains("user alice has no github connection (account work)"),
        "{text}"
    );

    // Bob, naming his account, gets it.
    let request = ClientRequest::CallToolRequest(CallToolRequest::new(CallToolRequestParams::new(
        "github_get_me",
    )));
    let mut options = PeerRequestOptions::no_options();
    let mut meta = rmcp::model::RequestMetaObject::default();
    meta.insert("keyward/account".into(), json!("work"));
    options.meta = Some(meta);
    let handle = bob
        .send_cancellable_request(request, options)
        .await
        .unwrap();
    let ServerResult::CallToolResult(result) = handle.await_response().await.unwrap() else {
        panic!("expected a tool result");
    };
    assert_eq!(ok_value(&result)["login"], "bob-work");

    // Alice with bob's MCP session id: 404, as for a session that does not exist.
    let bob_init = post(&h.base, "/mcp", Some(&bob_key), &init_body())
        .send()
        .await
        .unwrap();
    let bob_session = bob_init.headers()["mcp-session-id"]
        .to_str()
        .unwrap()
        .to_string();
    let list = json!({"jsonrpc": "2.0", "id": 5, "method": "tools/list"});
    let hijack = post(&h.base, "/mcp", Some(&alice_key), &list)
        .header("mcp-session-id", &bob_session)
        .send()
        .await
        .unwrap();
    assert_eq!(hijack.status(), 404);
    let call_body = json!({"jsonrpc": "2.0", "id": 6, "method": "tools/call",
                           "params": {"name": "github_get_me", "arguments": {}}});
    let hijack = post(&h.base, "/mcp", Some(&alice_key), &call_body)
        .header("mcp-session-id", &bob_session)
        .send()
        .await
        .unwrap();
    assert_eq!(hijack.status(), 404);

    // Alice posting into bob's legacy SSE session: 404 too.
    let (_bob_events, bob_endpoint) = open_legacy(&h.base, &bob_key).await;
    let hijack = post(&h.base, &bob_endpoint, Some(&alice_key), &call_body)
        .send()
        .await
        .unwrap();
    assert_eq!(hijack.status(), 404);

    // Of every upstream request made for alice, none carried a token of bob's.
    let alice_token = token("alice", "default");
    let seen = h.up.seen();
    assert!(seen.iter().any(|s| s.token == alice_token));
    assert!(seen
        .iter()
        .filter(|s| bob_tokens.contains(&s.token))
        .all(|s| s.token == token("bob", "work")));
    assert_eq!(
        seen.iter()
            .filter(|s| bob_tokens.contains(&s.token))
            .count(),
        1,
        "only bob's own call used a token of bob's"
    );

    let audit = h.audit();
    for entry in audit
        .iter()
        .filter(|e| e.event == "tool-call" && e.user == "alice")
    {
        if entry.account.as_deref() == Some("work") {
            assert!(entry.outcome.starts_with("error"), "{entry:?}");
        }
    }
    let _ = alice.cancel().await;
    let _ = bob.cancel().await;
    h.stop().await;
}

#[tokio::test]
async fn a_removed_key_stops_working_at_once() {
    let h = http(&[("alice", "default")]).await;
    let key = h.add_user("alice");
    let client = mcp_client(&h.base, &key).await;
    ok_value(&call(&client, "github_get_me", json!({})).await);
    let (mut events, endpoint) = open_legacy(&h.base, &key).await;

    assert!(users::remove(h.vault(), "alice").unwrap());

    // The very next request is refused, on every route.
    let refused = post(&h.base, "/mcp", Some(&key), &init_body())
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 401);
    let refused = post(&h.base, &endpoint, Some(&key), &init_body())
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 401);
    let refused = client
        .call_tool(CallToolRequestParams::new("github_get_me"))
        .await;
    assert!(refused.is_err(), "the open session is refused too");
    // Open streams are closed.
    let ended = tokio::time::timeout(Duration::from_secs(5), async {
        while events.next().await.is_some() {}
    })
    .await;
    assert!(ended.is_ok(), "the legacy stream of a removed user ends");
    h.stop().await;
}

#[tokio::test]
async fn two_hundred_concurrent_calls_over_one_http_session() {
    let h = http(&[("alice", "default")]).await;
    let key = h.add_user("alice");
    let client = Arc::new(mcp_client(&h.base, &key).await);
    let calls = (1..=200u64).map(|n| {
        let client = client.clone();
        async move {
            let result = call(
                &client,
                "github_get_issue",
                json!({"owner": "octo", "repo": "hello", "number": n}),
            )
            .await;
            (n, ok_value(&result))
        }
    });
    let results = futures::future::join_all(calls).await;
    assert_eq!(results.len(), 200);
    for (n, value) in results {
        assert_eq!(
            value["title"],
            format!("octo/hello#{n} seen by alice-default")
        );
        assert_eq!(value["number"], n);
    }
    let audit = h.audit();
    assert_eq!(audit.iter().filter(|e| e.event == "tool-call").count(), 200);
    h.stop().await;
}

#[tokio::test]
async fn clients_hear_tools_list_changed_when_connections_change() {
    let h = http(&[("alice", "default")]).await;
    let key = h.add_user("alice");
    let handler = TestClient::default();
    let config = StreamableHttpClientTransportConfig::with_uri(format!("{}/mcp", h.base))
        .auth_header(key.clone());
    let transport = StreamableHttpClientTransport::with_client(reqwest::Client::new(), config);
    let client = handler.clone().serve(transport).await.unwrap();
    let before = client.list_all_tools().await.unwrap();
    assert!(!before.iter().any(|t| t.name.starts_with("slack_")));
    // Let the client open its server-to-client stream.
    tokio::time::sleep(Duration::from_millis(300)).await;

    // Another user's change is none of alice's business.
    let record = keyward::oauth::token_response::parse(
        &json!({"access_token": "xoxb-test-slack", "token_type": "bearer", "scope": "chat:write"})
            .to_string(),
        chrono::Utc::now().timestamp(),
    )
    .unwrap();
    h.vault()
        .put(
            &ConnKey::new("bob", "slack", "default").unwrap(),
            None,
            &record,
        )
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(handler.list_changed.load(Ordering::SeqCst), 0);

    h.vault()
        .put(
            &ConnKey::new("alice", "slack", "default").unwrap(),
            None,
            &record,
        )
        .unwrap();
    let seen = handler.list_changed.clone();
    assert!(
        eventually(5, || seen.load(Ordering::SeqCst) == 1).await,
        "tools/list_changed after alice connected slack"
    );
    let after = client.list_all_tools().await.unwrap();
    assert!(after.iter().any(|t| t.name.starts_with("slack_")));
    let _ = client.cancel().await;
    h.stop().await;
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test]
async fn the_binary_serves_http_and_refuses_a_public_bind_without_users() {
    keyward::server::install_crypto_provider();
    let up = Upstream::start().await;
    let kw = home_with(&up, &[("alice", "default")]);

    let refused = kw.run(&["serve", "--http", "0.0.0.0:0"], "");
    assert_ne!(refused.code(), Some(0));
    assert!(
        refused.stderr().contains("refusing to listen") && refused.stderr().contains("users add"),
        "{}",
        refused.stderr()
    );

    let added = kw.ok(&["users", "add", "alice"], "");
    let key = added.stdout().trim().to_string();
    assert!(key.starts_with("kw_"), "{key}");
    let listed = kw.ok(&["users", "list"], "");
    assert!(listed.stdout().contains("alice") && !listed.stdout().contains(&key));
    let again = kw.run(&["users", "add", "alice"], "");
    assert_ne!(again.code(), Some(0));

    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let mut child = kw
        .command(&["serve", "--http", &addr])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = drain(child.stderr.take().unwrap());
    let base = format!("http://{addr}");
    let healthy = {
        let mut ok = false;
        for _ in 0..200 {
            if let Ok(r) = reqwest::get(format!("{base}/healthz")).await {
                if r.status() == 200 {
                    ok = true;
                    break;
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        ok
    };
    assert!(healthy, "the server did not come up");
    let client = mcp_client(&base, &key).await;
    let me = ok_value(&call(&client, "github_get_me", json!({})).await);
    assert_eq!(me["login"], "alice-default");
    let _ = client.cancel().await;

    let pid = child.id().to_string();
    assert!(std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let output = tokio::task::spawn_blocking(move || {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while child.try_wait().unwrap().is_none() {
            if std::time::Instant::now() > deadline {
                let _ = child.kill();
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        child.wait_with_output().unwrap()
    })
    .await
    .unwrap();
    assert!(output.status.success(), "SIGTERM: {:?}", output.status);
    let log = stderr.join().unwrap();
    assert!(!log.is_empty());
    assert_no_canary("stderr of keyward serve --http", &log);
    assert!(
        !contains_bytes(&log, key.as_bytes()),
        "the API key appears in the log"
    );
    assert!(output.stdout.is_empty());

    // Removing the user through the CLI works (the server is gone) and is final.
    kw.ok(&["users", "remove", "alice"], "");
    let gone = kw.run(&["users", "remove", "alice"], "");
    assert_ne!(gone.code(), Some(0));
}
