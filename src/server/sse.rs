//! The legacy HTTP+SSE transport (MCP 2024-11-05), for clients that predate Streamable HTTP.
//!
//! `GET /sse` opens an event stream. Its first event is `endpoint`, whose data is the URL to
//! POST to: `/messages?sessionId=<random id>`. JSON-RPC messages POSTed there are accepted with
//! 202 and answered as `message` events on the stream. The session lives as long as the stream:
//! when the client disconnects, the session (and any call it was running) ends.
//!
//! rmcp 3 no longer ships this transport, so it is built on rmcp's generic [`Transport`]: two
//! channels, one fed by the POST handler, one drained into the event stream.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Mutex;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Extension, Query, State};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::Stream;
use http::StatusCode;
use rmcp::model::{ClientJsonRpcMessage, ServerJsonRpcMessage};
use rmcp::service::{RoleServer, RxJsonRpcMessage, TxJsonRpcMessage};
use rmcp::transport::Transport;
use rmcp::ServiceExt;
use serde::Deserialize;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::auth::{self, AuthUser, Ownership, SessionKind};
use super::http::App;
use super::{random_id, KeywardServer};
use crate::sync::lock;

/// How many messages may wait in each direction before the sender waits.
const CHANNEL: usize = 64;

/// One rmcp transport made of two channels.
pub struct ChannelTransport {
    incoming: mpsc::Receiver<ClientJsonRpcMessage>,
    outgoing: mpsc::Sender<ServerJsonRpcMessage>,
}

impl Transport<RoleServer> for ChannelTransport {
    type Error = std::io::Error;

    fn send(
        &mut self,
        item: TxJsonRpcMessage<RoleServer>,
    ) -> impl std::future::Future<Output = Result<(), Self::Error>> + Send + 'static {
        let outgoing = self.outgoing.clone();
        async move {
            outgoing.send(item).await.map_err(|_| {
                std::io::Error::new(
                    std::io::ErrorKind::BrokenPipe,
                    "the client's event stream is closed",
                )
            })
        }
    }

    fn receive(
        &mut self,
    ) -> impl std::future::Future<Output = Option<RxJsonRpcMessage<RoleServer>>> + Send {
        self.incoming.recv()
    }

    async fn close(&mut self) -> Result<(), Self::Error> {
        self.incoming.close();
        Ok(())
    }
}

/// One session's ends; who owns it is in the server's [`auth::SessionOwners`].
struct Session {
    incoming: mpsc::Sender<ClientJsonRpcMessage>,
    stop: CancellationToken,
}

/// The open legacy sessions of one server.
#[derive(Default)]
pub struct SseSessions {
    sessions: Mutex<HashMap<String, Session>>,
}

impl SseSessions {
    /// End a session: its service stops and its event stream ends.
    pub fn close(&self, id: &str) {
        if let Some(session) = lock(&self.sessions).remove(id) {
            session.stop.cancel();
        }
    }
}

/// `GET /sse`: start a session for the authenticated user and stream its messages.
pub async fn open(State(app): State<App>, Extension(user): Extension<AuthUser>) -> Response {
    let id = random_id(16);
    let (to_server, incoming) = mpsc::channel(CHANNEL);
    let (outgoing, from_server) = mpsc::channel::<ServerJsonRpcMessage>(CHANNEL);
    let stop = app.shutdown.child_token();
    lock(&app.sse.sessions).insert(
        id.clone(),
        Session {
            incoming: to_server,
            stop: stop.clone(),
        },
    );
    tracing::info!(user = user.name, session = id, "legacy SSE session opened");
    let evicted = app
        .owners
        .insert(id.clone(), user.clone(), SessionKind::LegacySse);
    app.close_evicted(&user, evicted).await;

    let server = KeywardServer::for_user(app.state.clone(), user.name.clone(), id.clone());
    let server = match &app.sign_ins {
        Some(sign_ins) => server.with_sign_ins(sign_ins.clone()),
        None => server,
    };
    let transport = ChannelTransport { incoming, outgoing };
    let sessions = app.sse.clone();
    let owners = app.owners.clone();
    let session_id = id.clone();
    let service_stop = stop.clone();
    tokio::spawn(async move {
        match server.serve_with_ct(transport, service_stop).await {
            Ok(running) => {
                let _ = running.waiting().await;
            }
            Err(e) => tracing::info!(session = session_id, "legacy SSE session ended early: {e}"),
        }
        sessions.close(&session_id);
        owners.remove(&session_id);
    });

    // The stream ends when the session does; dropping it (client gone) ends the session.
    let endpoint = Event::default()
        .event("endpoint")
        .data(format!("/messages?sessionId={id}"));
    let guard = stop.drop_guard();
    let messages = futures::stream::unfold(
        (Some(endpoint), from_server, guard),
        |(first, mut from_server, guard)| async move {
            if let Some(event) = first {
                return Some((Ok::<Event, Infallible>(event), (None, from_server, guard)));
            }
            let message = from_server.recv().await?;
            let data = serde_json::to_string(&message).ok()?;
            let event = Event::default().event("message").data(data);
            Some((Ok(event), (None, from_server, guard)))
        },
    );
    sse_response(messages)
}

fn sse_response(
    stream: impl Stream<Item = Result<Event, Infallible>> + Send + 'static,
) -> Response {
    Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response()
}

#[derive(Deserialize)]
pub struct MessageQuery {
    #[serde(rename = "sessionId")]
    session_id: Option<String>,
}

/// `POST /messages?sessionId=…`: hand one JSON-RPC message to the session; the answer goes out
/// on its event stream.
pub async fn message(
    State(app): State<App>,
    Extension(user): Extension<AuthUser>,
    Query(query): Query<MessageQuery>,
    body: Bytes,
) -> Response {
    let Some(id) = query.session_id else {
        return (
            StatusCode::BAD_REQUEST,
            "400 Bad Request: the sessionId query parameter is missing; use the URL from the \
             `endpoint` event of GET /sse\n",
        )
            .into_response();
    };
    // Another user's session looks exactly like one that does not exist.
    if app.owners.check(&id, &user) != Ownership::Own {
        return auth::session_not_found();
    }
    let incoming = match lock(&app.sse.sessions).get(&id) {
        Some(session) => session.incoming.clone(),
        None => return auth::session_not_found(),
    };
    // Answered here rather than on the stream: the message never reached the session.
    let message = match super::jsonrpc::parse(&body) {
        Ok(message) => message,
        Err(refusal) => return super::streamable::refused(StatusCode::BAD_REQUEST, &refusal),
    };
    if incoming.send(message).await.is_err() {
        return auth::session_not_found();
    }
    (StatusCode::ACCEPTED, "Accepted").into_response()
}
