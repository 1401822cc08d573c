//! MCP over HTTP without a client library: the legacy HTTP+SSE transport (row (d)) and
//! Streamable HTTP with nothing but reqwest (row (c-)).

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::{Stream, StreamExt};
use serde_json::{json, Value};

use crate::CANARY;

// ---- the legacy HTTP+SSE transport, by hand ----------------------------------------------------

pub(crate) type ByteStream = Pin<Box<dyn Stream<Item = reqwest::Result<axum::body::Bytes>> + Send>>;

/// Reads a `text/event-stream` body event by event.
pub(crate) struct Events {
    pub(crate) body: ByteStream,
    pub(crate) buf: Vec<u8>,
}

impl Events {
    /// The next event with data: (event name, data); `None` when the stream ends.
    pub(crate) async fn next(&mut self) -> Option<(String, String)> {
        loop {
            if let Some(end) = self.buf.windows(2).position(|w| w == b"\n\n") {
                let event: Vec<u8> = self.buf.drain(..end + 2).collect();
                let text = String::from_utf8_lossy(&event);
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
            let chunk = self.body.next().await?.ok()?;
            self.buf
                .extend(chunk.iter().copied().filter(|&b| b != b'\r'));
        }
    }
}

pub(crate) type Pending = Arc<Mutex<HashMap<u64, tokio::sync::oneshot::Sender<Value>>>>;

/// A legacy SSE session: requests are POSTed to the endpoint the stream announced, answers
/// arrive on the stream and are matched to their caller by JSON-RPC id, so any number of
/// callers can share the session.
pub(crate) struct SseClient {
    pub(crate) http: reqwest::Client,
    pub(crate) post_url: String,
    pub(crate) key: String,
    pub(crate) next_id: AtomicU64,
    pub(crate) pending: Pending,
    /// Messages on the stream that contained the token marker.
    pub(crate) leaks: Arc<AtomicUsize>,
    pub(crate) reader: tokio::task::JoinHandle<()>,
}

impl Drop for SseClient {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

impl SseClient {
    pub(crate) async fn open(base: &str, key: &str) -> SseClient {
        let http = reqwest::Client::new();
        let response = http
            .get(format!("{base}/sse"))
            .bearer_auth(key)
            .header("accept", "text/event-stream")
            .send()
            .await
            .expect("GET /sse");
        assert_eq!(response.status(), 200, "GET /sse");
        let mut events = Events {
            body: Box::pin(response.bytes_stream()),
            buf: Vec::new(),
        };
        let (name, endpoint) = tokio::time::timeout(Duration::from_secs(10), events.next())
            .await
            .expect("the endpoint event within 10 s")
            .expect("the endpoint event");
        assert_eq!(name, "endpoint");
        let pending: Pending = Arc::default();
        let leaks = Arc::new(AtomicUsize::new(0));
        let reader = {
            let (pending, leaks) = (pending.clone(), leaks.clone());
            tokio::spawn(async move {
                while let Some((name, data)) = events.next().await {
                    if name != "message" {
                        continue;
                    }
                    if data.contains(CANARY) {
                        leaks.fetch_add(1, Ordering::Relaxed);
                    }
                    let Ok(message) = serde_json::from_str::<Value>(&data) else {
                        continue;
                    };
                    if let Some(id) = message.get("id").and_then(Value::as_u64) {
                        if let Some(tx) = pending.lock().unwrap().remove(&id) {
                            let _ = tx.send(message);
                        }
                    }
                }
            })
        };
        let client = SseClient {
            http,
            post_url: format!("{base}{endpoint}"),
            key: key.to_string(),
            next_id: AtomicU64::new(1),
            pending,
            leaks,
            reader,
        };
        let init = client
            .request(
                "initialize",
                json!({"protocolVersion": "2025-06-18", "capabilities": {},
                       "clientInfo": {"name": "keyward-bench", "version": "1"}}),
            )
            .await
            .expect("initialize over legacy SSE");
        assert!(init.get("result").is_some(), "initialize: {init}");
        client
            .post(&json!({"jsonrpc": "2.0", "method": "notifications/initialized"}))
            .await
            .expect("notifications/initialized");
        client
    }

    pub(crate) async fn post(&self, message: &Value) -> Result<(), String> {
        let response = self
            .http
            .post(&self.post_url)
            .bearer_auth(&self.key)
            .header("accept", "application/json, text/event-stream")
            .header("content-type", "application/json")
            .body(message.to_string())
            .send()
            .await
            .map_err(|e| e.to_string())?;
        let status = response.status();
        let _ = response.bytes().await;
        if status == 202 {
            Ok(())
        } else {
            Err(format!("POST /messages answered {status}"))
        }
    }

    pub(crate) async fn request(&self, method: &str, params: Value) -> Result<Value, String> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.pending.lock().unwrap().insert(id, tx);
        let message = json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params});
        if let Err(e) = self.post(&message).await {
            self.pending.lock().unwrap().remove(&id);
            return Err(e);
        }
        match tokio::time::timeout(Duration::from_secs(30), rx).await {
            Ok(Ok(answer)) => Ok(answer),
            _ => {
                self.pending.lock().unwrap().remove(&id);
                Err("no answer on the event stream within 30 s".into())
            }
        }
    }
}

/// Streamable HTTP with nothing but reqwest: each message is a POST to `/mcp`; a request's
/// answer comes back as the event stream (or JSON) of its own response. No client library, so
/// what it measures is the server.
pub(crate) struct RawHttp {
    pub(crate) http: reqwest::Client,
    pub(crate) url: String,
    pub(crate) key: String,
    pub(crate) session: String,
    pub(crate) next_id: AtomicU64,
    /// MCP 2026-07-28: no session; each request carries its version in `_meta` and headers.
    pub(crate) stateless: bool,
}

/// The protocol revision of [`RawHttp`]'s sessions: the newest with an `initialize`.
const SESSION_PROTOCOL: &str = "2025-11-25";
/// The revision of [`RawHttp::stateless`].
const STATELESS_PROTOCOL: &str = "2026-07-28";

impl RawHttp {
    pub(crate) async fn open(base: &str, key: &str) -> RawHttp {
        let mut client = RawHttp {
            http: reqwest::Client::new(),
            url: format!("{base}/mcp"),
            key: key.to_string(),
            session: String::new(),
            next_id: AtomicU64::new(1),
            stateless: false,
        };
        let init = json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
            "protocolVersion": SESSION_PROTOCOL, "capabilities": {},
            "clientInfo": {"name": "keyward-bench", "version": "1"}}});
        let response = client.post(&init).await.expect("initialize over raw HTTP");
        client.session = response
            .headers()
            .get("mcp-session-id")
            .and_then(|v| v.to_str().ok())
            .expect("a session id")
            .to_string();
        RawHttp::answer(response, 0)
            .await
            .expect("initialize answered");
        client
            .post(&json!({"jsonrpc": "2.0", "method": "notifications/initialized"}))
            .await
            .expect("notifications/initialized");
        client
    }

    /// A 2026-07-28 client: nothing to open, every request stands alone.
    pub(crate) fn stateless(base: &str, key: &str) -> RawHttp {
        RawHttp {
            http: reqwest::Client::new(),
            url: format!("{base}/mcp"),
            key: key.to_string(),
            session: String::new(),
            next_id: AtomicU64::new(1),
            stateless: true,
        }
    }

    pub(crate) async fn post(&self, message: &Value) -> Result<reqwest::Response, String> {
        let mut request = self
            .http
            .post(&self.url)
            .bearer_auth(&self.key)
            .header("accept", "application/json, text/event-stream")
            .header("content-type", "application/json")
            .body(message.to_string());
        if !self.session.is_empty() {
            request = request
                .header("mcp-session-id", &self.session)
                .header("mcp-protocol-version", SESSION_PROTOCOL);
        }
        if self.stateless {
            request = request
                .header("mcp-protocol-version", STATELESS_PROTOCOL)
                .header("mcp-method", message["method"].as_str().unwrap_or_default());
            if let Some(name) = message["params"]["name"].as_str() {
                request = request.header("mcp-name", name);
            }
        }
        let response = request.send().await.map_err(|e| e.to_string())?;
        if response.status().is_success() {
            Ok(response)
        } else {
            Err(format!("POST /mcp answered {}", response.status()))
        }
    }

    /// The JSON-RPC answer with `id` in a POST's response.
    pub(crate) async fn answer(response: reqwest::Response, id: u64) -> Result<Value, String> {
        let is_json = response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|ct| ct.starts_with("application/json"));
        if is_json {
            return response.json().await.map_err(|e| e.to_string());
        }
        let mut events = Events {
            body: Box::pin(response.bytes_stream()),
            buf: Vec::new(),
        };
        while let Some((_, data)) = events.next().await {
            if let Ok(message) = serde_json::from_str::<Value>(&data) {
                if message["id"] == id {
                    return Ok(message);
                }
            }
        }
        Err("the event stream ended without the answer".into())
    }

    pub(crate) async fn request(&self, method: &str, params: Value) -> Result<Value, String> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let mut params = params;
        if self.stateless {
            params["_meta"] = json!({
                "io.modelcontextprotocol/protocolVersion": STATELESS_PROTOCOL,
                "io.modelcontextprotocol/clientCapabilities": {},
                "io.modelcontextprotocol/clientInfo": {"name": "keyward-bench", "version": "1"},
            });
        }
        let message = json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params});
        let response = self.post(&message).await?;
        RawHttp::answer(response, id).await
    }
}
