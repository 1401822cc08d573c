//! One call of the standard request, five ways (a `Caller`), and a row: warm-up, then calls
//! spread over a number of concurrent callers, bounded in count and in time. Every tool is
//! called with the arguments of its fixture (`tests/fixtures/<tool>.json`), the call the
//! integration tests pin down.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rmcp::model::{CallToolRequestParams, CallToolResult, JsonObject};
use rmcp::service::{Peer, RoleClient};
use serde_json::{json, Value};
use tokio::task::JoinSet;

use crate::clients::{RawHttp, SseClient};
use crate::procs::RawStdio;
use crate::report::{lat, progress, Lat};
use crate::support::{fixtures, RecordedRequest};
use crate::{CALLS, CANARY, ROW_CAP, WARMUP};

/// A tool and its fixture's arguments, read once (not per call).
#[derive(Clone)]
pub(crate) struct ToolCall {
    pub(crate) tool: &'static str,
    pub(crate) args: Arc<Value>,
}

impl ToolCall {
    pub(crate) fn of(tool: &'static str) -> ToolCall {
        ToolCall {
            tool,
            args: Arc::new(fixtures::load(tool).args()),
        }
    }

    /// The params of its `tools/call`.
    fn params(&self) -> Value {
        json!({"name": self.tool, "arguments": *self.args})
    }
}

// ---- one call of the standard request, five ways ------------------------------------------------

/// The upstream request keyward sent for a tool call, to replay directly.
#[derive(Clone)]
pub(crate) struct Replay {
    pub(crate) method: reqwest::Method,
    pub(crate) url: String,
    pub(crate) headers: reqwest::header::HeaderMap,
    pub(crate) body: Vec<u8>,
}

impl Replay {
    pub(crate) fn from_recorded(base_url: &str, rec: &RecordedRequest) -> Replay {
        let mut headers = reqwest::header::HeaderMap::new();
        for (name, value) in &rec.headers {
            if matches!(name.as_str(), "host" | "content-length") {
                continue;
            }
            if let (Ok(n), Ok(v)) = (
                reqwest::header::HeaderName::from_bytes(name.as_bytes()),
                reqwest::header::HeaderValue::from_str(value),
            ) {
                headers.append(n, v);
            }
        }
        let url = match &rec.query {
            Some(q) => format!("{base_url}{}?{q}", rec.path),
            None => format!("{base_url}{}", rec.path),
        };
        Replay {
            method: rec.method.parse().expect("an HTTP method"),
            url,
            headers,
            body: rec.body.clone(),
        }
    }

    pub(crate) async fn send(&self, http: &reqwest::Client) -> Result<Vec<u8>, String> {
        let response = http
            .request(self.method.clone(), &self.url)
            .headers(self.headers.clone())
            .body(self.body.clone())
            .send()
            .await
            .map_err(|e| e.to_string())?;
        let status = response.status();
        let body = response.bytes().await.map_err(|e| e.to_string())?;
        if status.is_success() {
            Ok(body.to_vec())
        } else {
            Err(format!("the upstream answered {status}"))
        }
    }
}

#[derive(Clone)]
pub(crate) enum Caller {
    /// (a): the request keyward sends, straight to the upstream with the token.
    Direct(reqwest::Client, Arc<Replay>),
    /// (b), (c), (e): rmcp's client over stdio or Streamable HTTP.
    Mcp(Peer<RoleClient>, ToolCall),
    /// (d): the legacy HTTP+SSE transport.
    Sse(Arc<SseClient>, ToolCall),
    /// Streamable HTTP without a client library.
    RawHttp(Arc<RawHttp>, ToolCall),
    /// stdio without a client library (one caller at a time).
    RawStdio(Arc<tokio::sync::Mutex<(RawStdio, u64)>>, ToolCall),
}

pub(crate) fn text_of(result: &CallToolResult) -> String {
    result
        .content
        .first()
        .and_then(|c| c.as_text())
        .map(|t| t.text.clone())
        .unwrap_or_default()
}

pub(crate) async fn mcp_call(
    peer: &Peer<RoleClient>,
    tool: &str,
    args: &Value,
) -> Result<String, String> {
    let args: JsonObject = args.as_object().cloned().unwrap_or_default();
    let result = peer
        .call_tool(CallToolRequestParams::new(tool.to_string()).with_arguments(args))
        .await
        .map_err(|e| e.to_string())?;
    let text = text_of(&result);
    if result.is_error == Some(true) {
        return Err(format!("{tool} failed: {text}"));
    }
    Ok(text)
}

impl Caller {
    /// One call of the standard request. With `check`, also verify that the answer holds no
    /// token.
    pub(crate) async fn call(&self, check: bool) -> Result<(), String> {
        let answer: Vec<u8> = match self {
            Caller::Direct(http, replay) => {
                replay.send(http).await?;
                return Ok(());
            }
            Caller::Mcp(peer, call) => mcp_call(peer, call.tool, &call.args).await?.into_bytes(),
            Caller::RawHttp(raw, call) => {
                let answer = raw.request("tools/call", call.params()).await?;
                check_answer(call.tool, &answer, check)?
            }
            Caller::RawStdio(raw, call) => {
                let mut raw = raw.lock().await;
                raw.1 += 1;
                let id = raw.1;
                let line = raw.0.request(id, "tools/call", Some(call.params())).await;
                let answer: Value = serde_json::from_str(&line).map_err(|e| e.to_string())?;
                check_answer(call.tool, &answer, check)?
            }
            Caller::Sse(sse, call) => {
                let answer = sse.request("tools/call", call.params()).await?;
                check_answer(call.tool, &answer, check)?
            }
        };
        if check && answer.windows(CANARY.len()).any(|w| w == CANARY.as_bytes()) {
            return Err("a token appeared in a tool result".into());
        }
        Ok(())
    }
}

/// A `tools/call` answer as JSON-RPC: an error unless it is a successful result; with
/// `check`, its bytes for the token check.
pub(crate) fn check_answer(tool: &str, answer: &Value, check: bool) -> Result<Vec<u8>, String> {
    let result = answer
        .get("result")
        .ok_or_else(|| format!("{tool}: a JSON-RPC error: {}", answer["error"]))?;
    if result["isError"] == true {
        return Err(format!("{tool} failed: {}", result["content"]));
    }
    Ok(if check {
        answer.to_string().into_bytes()
    } else {
        Vec::new()
    })
}

/// What one row measured.
pub(crate) struct Run {
    pub(crate) lat: Lat,
    pub(crate) wall: Duration,
    pub(crate) errors: usize,
    pub(crate) first_error: Option<String>,
}

impl Run {
    pub(crate) fn throughput(&self) -> f64 {
        self.lat.n as f64 / self.wall.as_secs_f64()
    }
}

/// `n` calls spread over `concurrency` callers (each calls in a loop, one call at a time).
pub(crate) async fn run_calls(caller: &Caller, concurrency: usize, n: usize, check: bool) -> Run {
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let deadline = started + ROW_CAP;
    let mut tasks = JoinSet::new();
    for _ in 0..concurrency {
        let (caller, next) = (caller.clone(), next.clone());
        tasks.spawn(async move {
            let mut lats = Vec::with_capacity(n / concurrency + 1);
            let mut errors = Vec::new();
            while next.fetch_add(1, Ordering::Relaxed) < n && Instant::now() < deadline {
                let t = Instant::now();
                match caller.call(check).await {
                    Ok(()) => lats.push(t.elapsed()),
                    Err(e) => errors.push(e),
                }
            }
            (lats, errors)
        });
    }
    let mut lats = Vec::with_capacity(n);
    let mut errors = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        let (l, e) = joined.expect("a caller task");
        lats.extend(l);
        errors.extend(e);
    }
    let wall = started.elapsed();
    Run {
        lat: lat(lats),
        wall,
        errors: errors.len(),
        first_error: errors.into_iter().next(),
    }
}

/// Warm up, then measure one row.
pub(crate) async fn row(caller: &Caller, concurrency: usize) -> Run {
    let warm = run_calls(caller, concurrency, WARMUP, true).await;
    if let Some(e) = &warm.first_error {
        progress(format!("warm-up: {} errors, first: {e}", warm.errors));
    }
    run_calls(caller, concurrency, CALLS, false).await
}
