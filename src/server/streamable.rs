//! The edges of Streamable HTTP (`/mcp`) that rmcp's `StreamableHttpService` gets wrong, fixed
//! around it rather than in a fork:
//!
//! - **Malformed bodies.** rmcp answers a body it cannot parse with `415` and plain text; a
//!   client expects a JSON-RPC error. [`edges`] reads the body first (at most
//!   [`MAX_MESSAGE_BYTES`], `413` beyond) and answers what [`super::jsonrpc::parse`] refuses
//!   with `400` and the JSON-RPC error(s): `-32700` with `"id": null` for what is not JSON,
//!   `-32600` for a batch (a JSON array of one error per element id) or a non-message. A body
//!   whose `Content-Type` is not JSON still gets rmcp's `415`: that one is right.
//! - **`--json-response`.** Replies that hold exactly one JSON-RPC response become
//!   `application/json` (see `json_when_single`). rmcp insists that a POST accept both JSON and
//!   `text/event-stream`; in this mode a client that accepts only `application/json` is served
//!   too, and gets the final answer as JSON (a notification sent before it, such as progress,
//!   cannot reach such a client and is dropped).
//! - **`DELETE /mcp`** is answered `204 No Content` instead of rmcp's `202 Accepted`: the
//!   session is gone when the answer leaves, and clients (the official Python SDK) treat 202 as
//!   a failed termination.
//! - **Event ids** ([`EventIds`]): on a `GET` stream rmcp sends its priming event with id `0`
//!   and numbers the session's own events from `0` too, so the first `list_changed` repeats the
//!   priming id; and a resume with `Last-Event-ID: N` replays event `N` itself. [`EventIds`]
//!   numbers the standalone stream's events from `1` (the priming event keeps `0`, "before
//!   everything"), and asks rmcp for what follows the event the client names on a request's
//!   stream (`N/R`), so every id in a session is unique and a resume sends only what the client
//!   has not seen.

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use futures::{Stream, StreamExt};
use http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use rmcp::model::{ClientJsonRpcMessage, ServerJsonRpcMessage};
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::streamable_http_server::session::{
    EventStore, RestoreOutcome, ServerSseMessage, SessionId, SessionManager,
};
use serde_json::Value;

use super::jsonrpc::{self, Refusal, MAX_MESSAGE_BYTES};

const JSON: &str = "application/json";
const EVENT_STREAM: &str = "text/event-stream";

/// How [`edges`] treats replies.
#[derive(Debug, Clone, Copy)]
pub struct Edges {
    /// `--json-response`: a single answer goes out as `application/json`.
    pub json_response: bool,
}

/// The middleware on `/mcp`, between the access checks and rmcp.
pub async fn edges(State(edges): State<Edges>, request: Request, next: Next) -> Response {
    match *request.method() {
        Method::POST => post(edges, request, next).await,
        Method::DELETE => {
            let response = next.run(request).await;
            if response.status() != StatusCode::ACCEPTED {
                return response;
            }
            let (mut parts, _) = response.into_parts();
            parts.status = StatusCode::NO_CONTENT;
            parts.headers.remove(header::CONTENT_LENGTH);
            Response::from_parts(parts, Body::empty())
        }
        _ => next.run(request).await,
    }
}

async fn post(edges: Edges, request: Request, next: Next) -> Response {
    let (mut parts, body) = request.into_parts();
    let json_only = edges.json_response
        && accepts(&parts.headers, JSON)
        && !accepts(&parts.headers, EVENT_STREAM);
    if json_only {
        // rmcp requires both; the answer will be JSON whatever rmcp sends.
        parts.headers.insert(
            header::ACCEPT,
            HeaderValue::from_static("application/json, text/event-stream"),
        );
    }
    let body = if is_json(&parts.headers) {
        let bytes = match read_body(body).await {
            Ok(bytes) => bytes,
            Err(response) => return response,
        };
        if let Err(refusal) = jsonrpc::parse(&bytes) {
            tracing::info!("refused a POST /mcp: {}", refusal.reason());
            return refused(StatusCode::BAD_REQUEST, &refusal);
        }
        Body::from(bytes)
    } else {
        body
    };
    let response = next.run(Request::from_parts(parts, body)).await;
    if edges.json_response {
        json_when_single(response, json_only).await
    } else {
        response
    }
}

/// Does the `Accept` header name `mime` (by its essence, as rmcp compares)?
fn accepts(headers: &HeaderMap, mime: &str) -> bool {
    headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|item| {
            let essence = item.split(';').next().unwrap_or("").trim();
            essence.eq_ignore_ascii_case(mime)
        })
}

fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            let essence = v.split(';').next().unwrap_or("").trim();
            essence.eq_ignore_ascii_case(JSON)
        })
}

/// The whole body, refusing (413) one longer than [`MAX_MESSAGE_BYTES`] as soon as it is.
async fn read_body(body: Body) -> Result<Bytes, Response> {
    let mut stream = body.into_data_stream();
    let mut collected = Vec::new();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| {
            refused(
                StatusCode::BAD_REQUEST,
                &Refusal::Parse(format!("the request body could not be read: {e}")),
            )
        })?;
        if collected.len() + chunk.len() > MAX_MESSAGE_BYTES {
            return Err(refused(StatusCode::PAYLOAD_TOO_LARGE, &Refusal::too_long()));
        }
        collected.extend_from_slice(&chunk);
    }
    Ok(Bytes::from(collected))
}

/// `status` with the JSON-RPC error(s) for `refusal`: one object, or an array for a batch.
pub(super) fn refused(status: StatusCode, refusal: &Refusal) -> Response {
    let mut replies = refusal.replies();
    let body = match replies.len() {
        // A notification HTTP must still answer: say it was not a usable message.
        0 => Refusal::Invalid {
            id: Value::Null,
            why: refusal.reason().to_string(),
        }
        .replies()
        .remove(0),
        1 => replies.remove(0),
        _ => Value::Array(replies),
    };
    (status, axum::Json(body)).into_response()
}

/// Turn an SSE reply that holds exactly one JSON-RPC response into `application/json`. A reply
/// that starts with anything else (a notification, a server request) stays a stream, replayed
/// from its start — unless the client accepts only JSON (`json_only`): then what comes before
/// the answer is dropped and the answer is sent as JSON.
async fn json_when_single(response: Response, json_only: bool) -> Response {
    let is_sse = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with(EVENT_STREAM));
    if response.status() != StatusCode::OK || !is_sse {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    let mut stream = body.into_data_stream();
    let mut seen: Vec<u8> = Vec::new();
    let mut scanned = 0;
    loop {
        // Complete events so far: look for the first one with data.
        while let Some(end) = find_event_end(&seen[scanned..]) {
            let event = &seen[scanned..scanned + end.0];
            scanned += end.0 + end.1;
            let data = event_data(event);
            if data.trim().is_empty() {
                continue; // priming event or keep-alive
            }
            let is_reply = serde_json::from_str::<Value>(&data).ok().is_some_and(|v| {
                v.get("id").is_some() && (v.get("result").is_some() || v.get("error").is_some())
            });
            if is_reply {
                parts
                    .headers
                    .insert(header::CONTENT_TYPE, HeaderValue::from_static(JSON));
                parts.headers.remove(header::CONTENT_LENGTH);
                parts.headers.remove(header::CACHE_CONTROL);
                return Response::from_parts(parts, Body::from(data));
            }
            if json_only {
                tracing::debug!("dropped a message a JSON-only client cannot receive");
                continue;
            }
            return replay(parts, seen, stream);
        }
        match stream.next().await {
            Some(Ok(chunk)) => seen.extend_from_slice(&chunk),
            Some(Err(_)) | None if json_only => {
                let error = serde_json::json!({"jsonrpc": "2.0", "id": null, "error": {
                    "code": -32603,
                    "message": "the server ended the reply before its answer; retry the request"}});
                return (StatusCode::INTERNAL_SERVER_ERROR, axum::Json(error)).into_response();
            }
            Some(Err(_)) | None => return replay(parts, seen, stream),
        }
    }
}

fn replay(
    parts: http::response::Parts,
    seen: Vec<u8>,
    rest: impl Stream<Item = std::result::Result<Bytes, axum::Error>> + Send + 'static,
) -> Response {
    let head = futures::stream::once(async move { Ok::<Bytes, axum::Error>(Bytes::from(seen)) });
    Response::from_parts(parts, Body::from_stream(head.chain(rest)))
}

/// The end of the first SSE event in `buf`: (length of the event, length of the separator).
fn find_event_end(buf: &[u8]) -> Option<(usize, usize)> {
    for i in 0..buf.len() {
        if buf[i..].starts_with(b"\n\n") {
            return Some((i, 2));
        }
        if buf[i..].starts_with(b"\r\n\r\n") {
            return Some((i, 4));
        }
    }
    None
}

/// The `data:` lines of one SSE event, joined with newlines.
fn event_data(event: &[u8]) -> String {
    let text = String::from_utf8_lossy(event);
    let mut data = Vec::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("data:") {
            data.push(rest.strip_prefix(' ').unwrap_or(rest).to_string());
        }
    }
    data.join("\n")
}

/// rmcp's in-memory session manager with event ids unique within a session (see the module
/// docs). Everything else is passed through. The ids are rmcp's own counters: keyward gives the
/// manager no external event store, whose ids would be the store's.
pub struct EventIds(pub Arc<LocalSessionManager>);

/// An event of the standalone stream: rmcp's index + 1, so `0` stays the priming event's.
fn shift_standalone(mut message: ServerSseMessage) -> ServerSseMessage {
    if let Some(index) = message
        .event_id
        .as_deref()
        .and_then(|id| id.parse::<u64>().ok())
    {
        message.event_id = Some((index + 1).to_string());
    }
    message
}

impl SessionManager for EventIds {
    type Error = <LocalSessionManager as SessionManager>::Error;
    type Transport = <LocalSessionManager as SessionManager>::Transport;

    async fn create_session(&self) -> Result<(SessionId, Self::Transport), Self::Error> {
        self.0.create_session().await
    }

    async fn initialize_session(
        &self,
        id: &SessionId,
        message: ClientJsonRpcMessage,
    ) -> Result<ServerJsonRpcMessage, Self::Error> {
        self.0.initialize_session(id, message).await
    }

    async fn has_session(&self, id: &SessionId) -> Result<bool, Self::Error> {
        self.0.has_session(id).await
    }

    async fn close_session(&self, id: &SessionId) -> Result<(), Self::Error> {
        self.0.close_session(id).await
    }

    async fn create_stream(
        &self,
        id: &SessionId,
        message: ClientJsonRpcMessage,
    ) -> Result<impl Stream<Item = ServerSseMessage> + Send + Sync + 'static, Self::Error> {
        self.0.create_stream(id, message).await
    }

    async fn accept_message(
        &self,
        id: &SessionId,
        message: ClientJsonRpcMessage,
    ) -> Result<(), Self::Error> {
        self.0.accept_message(id, message).await
    }

    async fn create_standalone_stream(
        &self,
        id: &SessionId,
    ) -> Result<impl Stream<Item = ServerSseMessage> + Send + Sync + 'static, Self::Error> {
        Ok(self
            .0
            .create_standalone_stream(id)
            .await?
            .map(shift_standalone))
    }

    async fn resume(
        &self,
        id: &SessionId,
        last_event_id: String,
    ) -> Result<impl Stream<Item = ServerSseMessage> + Send + Sync + 'static, Self::Error> {
        match last_event_id.split_once('/') {
            // A request's stream (`index/request`): rmcp replays from `index` itself, which the
            // client already has.
            Some((index, request)) => {
                let after = match index.parse::<u64>() {
                    Ok(index) => format!("{}/{request}", index + 1),
                    Err(_) => last_event_id.clone(),
                };
                Ok(self.0.resume(id, after).await?.left_stream())
            }
            // The standalone stream: the client's `N` is rmcp's `N - 1`, so rmcp's replay from
            // `N` is exactly what follows.
            None => Ok(self
                .0
                .resume(id, last_event_id)
                .await?
                .map(shift_standalone)
                .right_stream()),
        }
    }

    fn event_store(&self) -> Option<Arc<dyn EventStore>> {
        self.0.event_store()
    }

    async fn restore_session(
        &self,
        id: SessionId,
    ) -> Result<RestoreOutcome<Self::Transport>, Self::Error> {
        self.0.restore_session(id).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sse_event_parsing() {
        let buf = b"id: 0\nretry: 3000\ndata: \n\ndata: {\"id\":1}\n\n";
        let (end, sep) = find_event_end(buf).unwrap();
        assert_eq!(event_data(&buf[..end]), "");
        let rest = &buf[end + sep..];
        let (end, _) = find_event_end(rest).unwrap();
        assert_eq!(event_data(&rest[..end]), "{\"id\":1}");
    }

    #[test]
    fn accept_is_read_by_essence() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::ACCEPT,
            HeaderValue::from_static("Application/JSON; q=1, text/plain"),
        );
        assert!(accepts(&headers, JSON));
        assert!(!accepts(&headers, EVENT_STREAM));
    }
}
