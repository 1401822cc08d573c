//! The loopback redirect of the authorization-code flow (RFC 8252 §7.3).
//!
//! A small HTTP server on `127.0.0.1:PORT` (0 = a free port) receives the browser's redirect at
//! `/callback`. It is bound to the IPv4 loopback literal only, serves nothing but that path, and
//! accepts one answer: the first callback whose `state` matches takes the pending sign-in, so a
//! second one — a replay of that answer — finds nothing to match and is refused.
//!
//! A callback whose `state` is missing or wrong is answered with a 400 page saying it was
//! ignored, and the sign-in keeps waiting. Any local process or web page can send a request to
//! the loopback port; if a wrong `state` ended the sign-in, a stale tab of an earlier sign-in or a
//! forged request could abort the user's real one. Only the holder of the `state` keyward put in
//! the authorization URL decides how the sign-in ends.
//! The browser's request is held open until the terminal side is done, so the page can say
//! whether the connection was stored, and that the tab can be closed.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse};
use axum::routing::get;
use axum::Router;
use tokio::sync::{mpsc, oneshot};

use crate::error::{Error, Result};

/// What the browser brought back.
pub enum Callback {
    /// An authorization code whose `state` matched.
    Code(oauth2::AuthorizationCode),
    /// The provider sent an error instead (`access_denied` when the user declined).
    Denied {
        error: String,
        description: Option<String>,
    },
    /// The callback carried the right `state` but no usable answer (no `code`).
    Rejected(String),
}

/// The page the browser shows, and the request it answers.
pub struct Reply(oneshot::Sender<Page>);

/// The final page: success or failure text.
pub struct Page {
    pub ok: bool,
    pub text: String,
}

impl Reply {
    pub fn send(self, ok: bool, text: impl Into<String>) {
        let _ = self.0.send(Page {
            ok,
            text: text.into(),
        });
    }
}

/// The expected `state`, and where the callback that carries it goes.
type Waiting = (String, oneshot::Sender<(Callback, Reply)>);

/// The sign-in waiting for its callback, and where ignored callbacks are reported.
#[derive(Clone)]
struct Pending {
    slot: Arc<Mutex<Option<Waiting>>>,
    ignored: mpsc::UnboundedSender<()>,
}

/// A bound loopback listener waiting for one redirect.
pub struct Loopback {
    listener: tokio::net::TcpListener,
    port: u16,
}

impl Loopback {
    /// Bind `127.0.0.1:port`.
    pub async fn bind(port: u16, provider: &str) -> Result<Loopback> {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
            .await
            .map_err(|e| {
                if port != 0 && e.kind() == std::io::ErrorKind::AddrInUse {
                    Error::usage(format!(
                        "port {port} on 127.0.0.1 (`redirect_port` of [providers.{provider}]) is in use; \
                         stop what holds it, or pick another port and register \
                         http://127.0.0.1:NEWPORT/callback with the provider"
                    ))
                } else {
                    Error::io(format!("listening on 127.0.0.1:{port} for the OAuth redirect"), e)
                }
            })?;
        let port = listener
            .local_addr()
            .map_err(|e| Error::io("reading the loopback listener's address", e))?
            .port();
        Ok(Loopback { listener, port })
    }

    pub fn redirect_uri(&self) -> String {
        format!("http://127.0.0.1:{}/callback", self.port)
    }

    /// Serve until one callback with `state` arrives or `timeout` passes. `Ok(None)`: timeout.
    /// Each callback ignored meanwhile (wrong or missing `state`) is told to `notify`.
    pub async fn wait(
        self,
        state: &str,
        title: &str,
        timeout: Duration,
        notify: &(dyn Fn(&str) + Sync),
    ) -> Result<Option<(Callback, Reply, Server)>> {
        let (tx, rx) = oneshot::channel();
        let (ignored, mut ignored_rx) = mpsc::unbounded_channel();
        let pending = Pending {
            slot: Arc::new(Mutex::new(Some((state.to_string(), tx)))),
            ignored,
        };
        let app = Router::new()
            .route("/callback", get(callback))
            .fallback(|| async { (StatusCode::NOT_FOUND, "not found") })
            .with_state((pending, title.to_string()));
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let listener = self.listener;
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = stop_rx.await;
                })
                .await;
        });
        let server = Server {
            stop: Some(stop_tx),
            task,
        };
        let answered = async {
            tokio::pin!(rx);
            loop {
                tokio::select! {
                    answer = &mut rx => return answer,
                    Some(()) = ignored_rx.recv() => notify(
                        "keyward: ignored a redirect whose `state` does not match this sign-in \
                         (a stale tab, another sign-in, or a forged request); still waiting",
                    ),
                }
            }
        };
        match tokio::time::timeout(timeout, answered).await {
            Ok(Ok((callback, reply))) => Ok(Some((callback, reply, server))),
            Ok(Err(_)) => Err(Error::other("the loopback listener stopped unexpectedly")),
            Err(_) => {
                server.stop().await;
                Ok(None)
            }
        }
    }
}

/// The running listener; stop it once the page was answered.
pub struct Server {
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl Server {
    /// Stop accepting; give the last page a moment to reach the browser.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let abort = self.task.abort_handle();
        if tokio::time::timeout(Duration::from_secs(2), &mut self.task)
            .await
            .is_err()
        {
            abort.abort();
        }
    }
}

async fn callback(
    State((pending, title)): State<(Pending, String)>,
    Query(params): Query<HashMap<String, String>>,
) -> impl IntoResponse {
    // Take the pending sign-in only for the callback that carries its `state`: anything else
    // leaves it waiting for the real one.
    let taken = {
        let mut slot = pending
            .slot
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match slot.as_ref() {
            Some((expected, _)) if state_matches(&params, expected) => slot.take(),
            Some(_) => {
                let _ = pending.ignored.send(());
                return page(
                    StatusCode::BAD_REQUEST,
                    &title,
                    false,
                    "keyward ignored this redirect: its `state` does not match the sign-in that is \
                     waiting (a stale tab, another sign-in, or a forged request). The sign-in is \
                     still waiting for the browser tab keyward opened. Nothing was changed.",
                );
            }
            None => None,
        }
    };
    let Some((_, tx)) = taken else {
        return page(
            StatusCode::BAD_REQUEST,
            &title,
            false,
            "This sign-in was already answered; keyward ignores repeated or late redirects. Nothing was changed.",
        );
    };
    let callback = classify(&params);
    let (reply_tx, reply_rx) = oneshot::channel();
    if tx.send((callback, Reply(reply_tx))).is_err() {
        return page(
            StatusCode::GONE,
            &title,
            false,
            "keyward is no longer waiting for this sign-in.",
        );
    }
    match tokio::time::timeout(Duration::from_secs(120), reply_rx).await {
        Ok(Ok(Page { ok, text })) => {
            let status = if ok {
                StatusCode::OK
            } else {
                StatusCode::BAD_REQUEST
            };
            page(status, &title, ok, &text)
        }
        _ => page(
            StatusCode::OK,
            &title,
            false,
            "keyward received the answer; see the terminal for the result.",
        ),
    }
}

/// Does the callback carry the `state` keyward sent?
fn state_matches(params: &HashMap<String, String>, expected: &str) -> bool {
    params
        .get("state")
        .is_some_and(|s| constant_time_eq(s.as_bytes(), expected.as_bytes()))
}

/// What a callback whose `state` matched says.
fn classify(params: &HashMap<String, String>) -> Callback {
    if let Some(error) = params.get("error") {
        return Callback::Denied {
            error: error.clone(),
            description: params.get("error_description").cloned(),
        };
    }
    match params.get("code").filter(|c| !c.is_empty()) {
        Some(code) => Callback::Code(oauth2::AuthorizationCode::new(code.clone())),
        None => Callback::Rejected("the redirect carried no authorization `code`".into()),
    }
}

/// Compare without an early exit, so timing does not reveal how much of the state matched.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn page(status: StatusCode, title: &str, ok: bool, text: &str) -> (StatusCode, Html<String>) {
    let heading = if ok {
        format!("keyward is connected to {}", escape(title))
    } else {
        format!("keyward could not connect to {}", escape(title))
    };
    let html = format!(
        "<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>keyward</title></head>\
         <body style=\"font-family:sans-serif;max-width:40em;margin:3em auto\"><h1>{heading}</h1>\
         <p>{}</p><p>You can close this tab and return to the terminal.</p></body></html>",
        escape(text)
    );
    (status, Html(html))
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn state_must_match() {
        assert!(state_matches(
            &params(&[("code", "c"), ("state", "s1")]),
            "s1"
        ));
        assert!(!state_matches(
            &params(&[("code", "c"), ("state", "s2")]),
            "s1"
        ));
        assert!(!state_matches(&params(&[("code", "c")]), "s1"));
        assert!(!state_matches(&params(&[("state", "s1x")]), "s1"));
        assert!(matches!(
            classify(&params(&[("code", "c"), ("state", "s1")])),
            Callback::Code(_)
        ));
        assert!(matches!(
            classify(&params(&[("state", "s1")])),
            Callback::Rejected(_)
        ));
        assert!(matches!(
            classify(&params(&[("error", "access_denied"), ("state", "s1")])),
            Callback::Denied { .. }
        ));
    }

    #[test]
    fn pages_escape_provider_text() {
        let (_, Html(html)) = page(
            StatusCode::BAD_REQUEST,
            "X",
            false,
            "<script>alert(1)</script>",
        );
        assert!(!html.contains("<script>"));
        assert!(html.contains("close this tab"));
    }
}
