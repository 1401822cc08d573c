//! `keyward serve --http`: Streamable HTTP (rmcp's client, SSE and JSON replies), the legacy
//! HTTP+SSE transport (a plain HTTP client reading the event stream), API keys, Host/Origin
//! checks, user isolation and load. Most tests run the server in this process (over real TCP)
//! so they can add connections and remove users while it runs; one runs the real binary.

use std::pin::Pin;
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

use crate::support::canary::assert_no_canary;
use crate::support::canary::contains_bytes;
use crate::support::home::{home_with, token, Kw};
use crate::support::mcp::*;
use crate::support::FakeUpstream;

struct Http {
    /// Keeps the temporary home folder alive.
    _kw: Kw,
    up: FakeUpstream,
    state: Arc<ServerState>,
    server: Option<HttpServer>,
    base: String,
}

impl Http {
    fn vault(&self) -> &keyward::vault::Vault {
        self.state
            .executor_now()
            .expect("ServerState::open opens the vault")
            .vault()
    }

    async fn add_user(&self, name: &str) -> String {
        users::add(self.vault(), name)
            .await
            .unwrap()
            .expose()
            .to_string()
    }

    async fn audit(&self) -> Vec<AuditEntry> {
        let entries: Vec<AuditEntry> = self
            .vault()
            .audit_entries(0, None)
            .await
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
    let up = FakeUpstream::start().await;
    let kw = home_with(&up, connections);
    let home = Home { dir: kw.home() };
    let config = Config::load(&home).unwrap();
    let state = ServerState::open(&home, &config, offer).await.unwrap();
    let server = HttpServer::start(
        state.clone(),
        &config,
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

pub(crate) async fn mcp_client(base: &str, key: &str) -> Client {
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

/// The issue the resumption test asks for: held at the fake until the test releases it.
const GATED_ISSUE: u64 = 998;

#[tokio::test]
async fn streamable_http_with_sse_replies() {
    let h = http(&[("alice", "default")]).await;
    let key = h.add_user("alice").await;

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
            json!({"owner": "octo", "repo": "seen-by", "number": 3}),
        )
        .await,
    );
    assert_eq!(issue["title"], "octo/seen-by#3 seen by alice-default");
    let _ = client.cancel().await;

    let audit = h.audit().await;
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
    let key = h.add_user("alice").await;

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

/// A raw POST to `/mcp` with `body` as it is, on `session` if given.
fn raw_post(
    base: &str,
    key: &str,
    session: Option<&str>,
    body: impl Into<String>,
) -> reqwest::RequestBuilder {
    let mut request = reqwest::Client::new()
        .post(format!("{base}/mcp"))
        .bearer_auth(key)
        .header("accept", "application/json, text/event-stream")
        .header("content-type", "application/json")
        .body(body.into());
    if let Some(session) = session {
        request = request.header("mcp-session-id", session);
    }
    request
}

/// Initialize a Streamable HTTP session by hand; returns its id.
async fn open_session(base: &str, key: &str) -> String {
    let init = raw_post(base, key, None, init_body().to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(init.status(), 200);
    let session = init.headers()["mcp-session-id"]
        .to_str()
        .unwrap()
        .to_string();
    let _ = init.text().await.unwrap();
    let note = json!({"jsonrpc": "2.0", "method": "notifications/initialized"});
    let sent = raw_post(base, key, Some(&session), note.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(sent.status(), 202);
    session
}

/// A JSON-RPC error body: its id (which must be present) and code.
fn error_of(body: &Value) -> (Value, i64) {
    assert!(
        body.as_object().is_some_and(|o| o.contains_key("id")),
        "a JSON-RPC error has an id, null if unknown: {body}"
    );
    (body["id"].clone(), body["error"]["code"].as_i64().unwrap())
}

#[tokio::test]
async fn malformed_post_bodies_get_400_with_a_jsonrpc_error() {
    let h = http(&[("alice", "default")]).await;
    let key = h.add_user("alice").await;
    let session = open_session(&h.base, &key).await;
    let deep = format!("{}{}", "[".repeat(300), "]".repeat(300));
    let batch = json!([{"jsonrpc": "2.0", "id": 1, "method": "ping"},
                       {"jsonrpc": "2.0", "method": "notifications/initialized"},
                       {"jsonrpc": "2.0", "id": "two", "method": "tools/list"}]);
    for on in [None, Some(session.as_str())] {
        for bad in [
            "{not json",
            deep.as_str(),
            "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"\u{0}",
        ] {
            let answer = raw_post(&h.base, &key, on, bad).send().await.unwrap();
            assert_eq!(answer.status(), 400, "{bad:.40}");
            assert_eq!(answer.headers()["content-type"], "application/json");
            let body: Value = answer.json().await.unwrap();
            assert_eq!(error_of(&body), (Value::Null, -32700), "{body}");
        }
        let answer = raw_post(&h.base, &key, on, batch.to_string())
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), 400);
        let body: Value = answer.json().await.unwrap();
        let errors: Vec<(Value, i64)> = body.as_array().unwrap().iter().map(error_of).collect();
        assert_eq!(errors, vec![(json!(1), -32600), (json!("two"), -32600)]);
        assert!(body[0]["error"]["message"]
            .as_str()
            .unwrap()
            .contains("batches are not supported"));
        let answer = raw_post(
            &h.base,
            &key,
            on,
            json!({"jsonrpc": "2.0", "id": 5}).to_string(),
        )
        .send()
        .await
        .unwrap();
        assert_eq!(answer.status(), 400);
        assert_eq!(error_of(&answer.json().await.unwrap()), (json!(5), -32600));
    }
    // Over the 4 MiB limit: 413, still with a JSON-RPC error.
    let huge = json!({"jsonrpc": "2.0", "id": 9, "method": "ping",
                      "params": {"pad": "x".repeat(4 * 1024 * 1024)}});
    let answer = raw_post(&h.base, &key, Some(&session), huge.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 413);
    let body: Value = answer.json().await.unwrap();
    assert_eq!(error_of(&body), (Value::Null, -32700));
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("4194304"));
    // A body that does not say it is JSON is still an unsupported media type.
    let answer = reqwest::Client::new()
        .post(format!("{}/mcp", h.base))
        .bearer_auth(&key)
        .header("accept", "application/json, text/event-stream")
        .header("content-type", "text/plain")
        .header("mcp-session-id", &session)
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 415);

    // The session goes on.
    let list = json!({"jsonrpc": "2.0", "id": 3, "method": "tools/list"});
    let answer = raw_post(&h.base, &key, Some(&session), list.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
    let listed = EventStream::new(answer).next_message().await;
    assert_eq!(listed["id"], 3);
    assert!(listed["result"]["tools"].as_array().is_some());
    h.stop().await;
}

#[tokio::test]
async fn json_response_mode_serves_clients_that_accept_only_json() {
    let h = http_with(&[("alice", "default")], Offer::default(), true).await;
    let key = h.add_user("alice").await;
    let json_only = |session: Option<&str>, body: Value| {
        let mut request = reqwest::Client::new()
            .post(format!("{}/mcp", h.base))
            .bearer_auth(&key)
            .header("accept", "application/json")
            .header("content-type", "application/json")
            .body(body.to_string());
        if let Some(session) = session {
            request = request.header("mcp-session-id", session);
        }
        request
    };
    let init = json_only(None, init_body()).send().await.unwrap();
    assert_eq!(init.status(), 200);
    assert_eq!(init.headers()["content-type"], "application/json");
    let session = init.headers()["mcp-session-id"]
        .to_str()
        .unwrap()
        .to_string();
    let body: Value = init.json().await.unwrap();
    assert_eq!(body["result"]["serverInfo"]["name"], "keyward");
    let note = json!({"jsonrpc": "2.0", "method": "notifications/initialized"});
    assert_eq!(
        json_only(Some(&session), note)
            .send()
            .await
            .unwrap()
            .status(),
        202
    );
    let call = json!({"jsonrpc": "2.0", "id": 2, "method": "tools/call",
                      "params": {"name": "github_get_me", "arguments": {}}});
    let answer = json_only(Some(&session), call).send().await.unwrap();
    assert_eq!(answer.status(), 200);
    assert_eq!(answer.headers()["content-type"], "application/json");
    let body: Value = answer.json().await.unwrap();
    assert_eq!(body["id"], 2);
    assert_eq!(
        body["result"]["structuredContent"]["login"],
        "alice-default"
    );
    h.stop().await;
}

#[tokio::test]
async fn delete_ends_a_session_with_204() {
    let h = http(&[("alice", "default")]).await;
    let key = h.add_user("alice").await;
    let session = open_session(&h.base, &key).await;
    let deleted = reqwest::Client::new()
        .delete(format!("{}/mcp", h.base))
        .bearer_auth(&key)
        .header("mcp-session-id", &session)
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), 204);
    assert_eq!(deleted.text().await.unwrap(), "");
    let list = json!({"jsonrpc": "2.0", "id": 3, "method": "tools/list"});
    let after = raw_post(&h.base, &key, Some(&session), list.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(after.status(), 404, "the session is gone");
    h.stop().await;
}

/// Every event of a finished stream.
async fn all_events(response: reqwest::Response) -> Vec<SseEvent> {
    let mut events = EventStream::new(response);
    let mut all = Vec::new();
    while let Some(event) = events.next_event().await {
        all.push(event);
    }
    all
}

#[tokio::test]
async fn event_ids_are_unique_in_a_session_and_a_resume_sends_only_what_was_missed() {
    let h = http(&[("alice", "default")]).await;
    let key = h.add_user("alice").await;
    let session = open_session(&h.base, &key).await;
    let get = |last_event_id: Option<&str>| {
        let mut request = reqwest::Client::new()
            .get(format!("{}/mcp", h.base))
            .bearer_auth(&key)
            .header("accept", "text/event-stream")
            .header("mcp-session-id", &session);
        if let Some(id) = last_event_id {
            request = request.header("last-event-id", id);
        }
        request.send()
    };
    let mut ids = std::collections::HashSet::new();

    // The standalone stream: a priming event, then the session's notifications.
    let stream = get(None).await.unwrap();
    assert_eq!(stream.status(), 200);
    let mut stream = EventStream::new(stream);
    let priming = stream.next_event().await.expect("the priming event");
    assert!(
        priming.data.as_deref().unwrap_or("").is_empty(),
        "{priming:?}"
    );
    ids.insert(priming.id.clone().expect("the priming event has an id"));
    // The session's connection watcher starts in a task of its own after `initialized`: a
    // second provider is connected if the first change came before it was listening.
    let mut changed = None;
    for provider in ["slack", "google"] {
        let record = keyward::oauth::token_response::parse(
            &json!({"access_token": format!("tok-{provider}"), "token_type": "bearer",
                    "scope": "x"})
            .to_string(),
            chrono::Utc::now().timestamp(),
        )
        .unwrap();
        h.vault()
            .put(
                &ConnKey::new("alice", provider, "default").unwrap(),
                None,
                &record,
            )
            .await
            .unwrap();
        let heard = tokio::time::timeout(Duration::from_secs(20), async {
            loop {
                let event = stream.next_event().await.expect("the stream stays open");
                if event.data.is_some() {
                    return event;
                }
            }
        })
        .await;
        if let Ok(event) = heard {
            changed = Some(event);
            break;
        }
    }
    let changed = changed.expect("tools/list_changed on the standalone stream");
    let message: Value = serde_json::from_str(changed.data.as_deref().unwrap()).unwrap();
    assert_eq!(message["method"], "notifications/tools/list_changed");
    let id = changed.id.clone().expect("a notification has an event id");
    assert!(
        ids.insert(id.clone()),
        "{id} repeats the priming event's id"
    );

    // A request's stream: its own ids, unique in the session too. The client drops it after
    // the priming event, and resumes from there while the call is still running.
    h.up.hold_api(&format!("/seen-by/issues/{GATED_ISSUE}"));
    let call = json!({"jsonrpc": "2.0", "id": 7, "method": "tools/call",
                      "params": {"name": "github_get_issue",
                                 "arguments": {"owner": "octo", "repo": "seen-by", "number": GATED_ISSUE}}});
    let answer = raw_post(&h.base, &key, Some(&session), call.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
    let mut first = EventStream::new(answer);
    let priming = first
        .next_event()
        .await
        .expect("the request's priming event");
    let priming_id = priming.id.clone().expect("an id to resume from");
    assert!(
        ids.insert(priming_id.clone()),
        "{priming_id} was used before in this session"
    );
    drop(first);
    let resumed = get(Some(&priming_id)).await.unwrap();
    assert_eq!(resumed.status(), 200);
    h.up.release_api();
    let events = all_events(resumed).await;
    let resent: Vec<&SseEvent> = events.iter().filter(|e| e.id.is_some()).collect();
    assert_eq!(
        resent.len(),
        1,
        "resuming after {priming_id} sends only the answer: {events:?}"
    );
    let answer_id = resent[0].id.clone().unwrap();
    assert!(
        ids.insert(answer_id.clone()),
        "{answer_id} was used before in this session"
    );
    let reply: Value = serde_json::from_str(resent[0].data.as_deref().unwrap()).unwrap();
    assert_eq!(reply["id"], 7);
    assert_eq!(
        reply["result"]["structuredContent"]["title"],
        format!("octo/seen-by#{GATED_ISSUE} seen by alice-default")
    );
    h.stop().await;
}

/// One server-sent event.
#[derive(Debug)]
pub(crate) struct SseEvent {
    pub(crate) id: Option<String>,
    pub(crate) name: String,
    /// `None` for an event without `data:` lines; a priming event's data is empty.
    pub(crate) data: Option<String>,
}

/// Reads a `text/event-stream` body event by event, keeping every byte for leak checks.
pub(crate) struct EventStream {
    body: Pin<Box<dyn Stream<Item = reqwest::Result<Bytes>> + Send>>,
    buf: Vec<u8>,
    raw: Vec<u8>,
}

impl EventStream {
    pub(crate) fn new(response: reqwest::Response) -> EventStream {
        EventStream {
            body: Box::pin(response.bytes_stream()),
            buf: Vec::new(),
            raw: Vec::new(),
        }
    }

    /// The next event with data (not a priming event): (event name, data). `None` when the
    /// stream ends.
    pub(crate) async fn next(&mut self) -> Option<(String, String)> {
        loop {
            let event = tokio::time::timeout(Duration::from_secs(10), self.next_event())
                .await
                .expect("an event within 10 s")?;
            if let Some(data) = event.data.filter(|d| !d.is_empty()) {
                return Some((event.name, data));
            }
        }
    }

    /// The next event, with or without data (a priming event has an id and no data; a
    /// keep-alive comment has neither). `None` when the stream ends.
    async fn next_event(&mut self) -> Option<SseEvent> {
        loop {
            if let Some(end) = self.buf.windows(2).position(|w| w == b"\n\n") {
                let event: Vec<u8> = self.buf.drain(..end + 2).collect();
                let text = String::from_utf8_lossy(&event).to_string();
                let mut parsed = SseEvent {
                    id: None,
                    name: "message".to_string(),
                    data: None,
                };
                let mut data = Vec::new();
                for line in text.lines() {
                    if let Some(v) = line.strip_prefix("event:") {
                        parsed.name = v.trim().to_string();
                    } else if let Some(v) = line.strip_prefix("data:") {
                        data.push(v.strip_prefix(' ').unwrap_or(v).to_string());
                    } else if let Some(v) = line.strip_prefix("id:") {
                        parsed.id = Some(v.trim().to_string());
                    }
                }
                if !data.is_empty() {
                    parsed.data = Some(data.join("\n"));
                }
                return Some(parsed);
            }
            let chunk = tokio::time::timeout(Duration::from_secs(60), self.body.next())
                .await
                .expect("an event within 60 s")?
                .ok()?;
            self.raw.extend_from_slice(&chunk);
            self.buf.extend_from_slice(&chunk);
        }
    }

    pub(crate) async fn next_message(&mut self) -> Value {
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
    let key = h.add_user("alice").await;
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
    // A batch: one -32600 per element id, as on the other transports.
    let batch = json!([{"jsonrpc": "2.0", "id": 4, "method": "ping"},
                       {"jsonrpc": "2.0", "id": 5, "method": "ping"}]);
    let refused = post(&h.base, &endpoint, Some(&key), &batch)
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 400);
    let body: Value = refused.json().await.unwrap();
    let errors: Vec<(Value, i64)> = body.as_array().unwrap().iter().map(error_of).collect();
    assert_eq!(errors, vec![(json!(4), -32600), (json!(5), -32600)]);

    assert_no_canary("the legacy SSE transcript", &events.raw);
    h.stop().await;
}

#[tokio::test]
async fn requests_without_a_valid_key_get_401_and_healthz_needs_none() {
    let h = http(&[("alice", "default")]).await;
    let key = h.add_user("alice").await;
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
    let key = h.add_user("alice").await;
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
    let alice_key = h.add_user("alice").await;
    let bob_key = h.add_user("bob").await;
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
    let seen: Vec<String> =
        h.up.requests()
            .iter()
            .filter_map(|r| r.bearer_token().map(String::from))
            .collect();
    assert!(seen.contains(&alice_token));
    assert!(seen
        .iter()
        .filter(|t| bob_tokens.contains(t))
        .all(|t| *t == token("bob", "work")));
    assert_eq!(
        seen.iter().filter(|t| bob_tokens.contains(t)).count(),
        1,
        "only bob's own call used a token of bob's"
    );

    let audit = h.audit().await;
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
    let key = h.add_user("alice").await;
    let client = mcp_client(&h.base, &key).await;
    ok_value(&call(&client, "github_get_me", json!({})).await);
    let (mut events, endpoint) = open_legacy(&h.base, &key).await;

    assert!(users::remove(h.vault(), "alice").await.unwrap());

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
    let key = h.add_user("alice").await;
    let client = Arc::new(mcp_client(&h.base, &key).await);
    let calls = (1..=200u64).map(|n| {
        let client = client.clone();
        async move {
            let result = call(
                &client,
                "github_get_issue",
                json!({"owner": "octo", "repo": "seen-by", "number": n}),
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
            format!("octo/seen-by#{n} seen by alice-default")
        );
        assert_eq!(value["number"], n);
    }
    let audit = h.audit().await;
    assert_eq!(audit.iter().filter(|e| e.event == "tool-call").count(), 200);
    h.stop().await;
}

/// The tools a Streamable HTTP session sees, by hand.
async fn raw_tool_names(base: &str, key: &str, session: &str) -> Vec<String> {
    let list = json!({"jsonrpc": "2.0", "id": 2, "method": "tools/list"});
    let answer = raw_post(base, key, Some(session), list.to_string())
        .send()
        .await
        .unwrap();
    let answer = all_events(answer)
        .await
        .into_iter()
        .filter_map(|e| e.data.filter(|d| !d.is_empty()))
        .map(|d| serde_json::from_str::<Value>(&d).unwrap())
        .find(|m| m["id"] == 2)
        .expect("the answer to tools/list");
    answer["result"]["tools"]
        .as_array()
        .expect("tools")
        .iter()
        .map(|t| t["name"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn clients_hear_tools_list_changed_when_connections_change() {
    let h = http(&[("alice", "default")]).await;
    let key = h.add_user("alice").await;
    let session = open_session(&h.base, &key).await;
    let before = raw_tool_names(&h.base, &key, &session).await;
    assert!(
        !before.iter().any(|t| t.starts_with("slack_")),
        "{before:?}"
    );
    // The server-to-client stream. A notification sent before it is open is lost, so the
    // changes below wait for it: open once its priming event has arrived.
    let stream = reqwest::Client::new()
        .get(format!("{}/mcp", h.base))
        .bearer_auth(&key)
        .header("accept", "text/event-stream")
        .header("mcp-session-id", &session)
        .send()
        .await
        .unwrap();
    assert_eq!(stream.status(), 200);
    let mut events = EventStream::new(stream);
    let priming = events.next_event().await.expect("the priming event");
    assert!(priming.data.unwrap_or_default().is_empty());

    // Another user's change is none of alice's business. It comes first: the session's watcher
    // takes changes in order, so a notification for it would reach alice before the one for
    // her own change.
    let record = keyward::oauth::token_response::parse(
        &json!({"access_token": "xoxb-test-slack", "token_type": "bearer", "scope": "chat:write"})
            .to_string(),
        chrono::Utc::now().timestamp(),
    )
    .unwrap();
    for user in ["bob", "alice"] {
        h.vault()
            .put(
                &ConnKey::new(user, "slack", "default").unwrap(),
                None,
                &record,
            )
            .await
            .unwrap();
    }
    let (_, first) = events.next().await.expect("tools/list_changed");
    let first: Value = serde_json::from_str(&first).unwrap();
    assert_eq!(
        first["method"], "notifications/tools/list_changed",
        "{first}"
    );
    let after = raw_tool_names(&h.base, &key, &session).await;
    assert!(after.iter().any(|t| t.starts_with("slack_")), "{after:?}");
    // Ending the session ends the stream after everything sent on it: nothing else was.
    let deleted = reqwest::Client::new()
        .delete(format!("{}/mcp", h.base))
        .bearer_auth(&key)
        .header("mcp-session-id", &session)
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), 204);
    let mut rest = Vec::new();
    while let Some((_, data)) = events.next().await {
        rest.push(data);
    }
    assert!(rest.is_empty(), "one notification for one change: {rest:?}");
    h.stop().await;
}

#[tokio::test]
async fn the_binary_serves_http_and_refuses_a_public_bind_without_users() {
    keyward::server::install_crypto_provider();
    let up = FakeUpstream::start().await;
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
    assert!(wait_healthy(&base, 30).await, "the server did not come up");
    let client = mcp_client(&base, &key).await;
    let me = ok_value(&call(&client, "github_get_me", json!({})).await);
    assert_eq!(me["login"], "alice-default");

    // SIGTERM while streams are open — the 2025 session above, a legacy SSE stream, a
    // 2026-07-28 `subscriptions/listen` stream — still ends the process cleanly: a stream that
    // never ends by itself must not hold a rolling deploy up.
    let sse = reqwest::Client::new()
        .get(format!("{base}/sse"))
        .bearer_auth(&key)
        .header("accept", "text/event-stream")
        .send()
        .await
        .unwrap();
    assert_eq!(sse.status(), 200);
    let listen = crate::server_stateless::request(
        1,
        "subscriptions/listen",
        json!({"notifications": {"toolsListChanged": true}}),
    );
    let listen = crate::server_stateless::post(&base, &key, &listen)
        .send()
        .await
        .unwrap();
    assert_eq!(listen.status(), 200);
    let mut listen = EventStream::new(listen);
    let ack = listen.next_message().await;
    assert_eq!(ack["method"], "notifications/subscriptions/acknowledged");

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
    // The open streams were ended by the server, not left hanging.
    let ended = tokio::time::timeout(Duration::from_secs(10), sse.bytes()).await;
    assert!(ended.is_ok(), "the legacy SSE stream outlived the server");
    let _ = client.cancel().await;
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
