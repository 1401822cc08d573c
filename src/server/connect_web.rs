//! Connecting an account from a browser: `/connect/<provider>?ticket=…` links and the
//! providers' redirects to `/oauth/callback/<provider>`.
//!
//! When a remote user's call needs a connection they lack (or more scopes, or a reconnect), the
//! MCP side ([`super::sign_in`]) hands them a link with a **ticket**: a value sealed with the
//! web key ([`WebKey`], XChaCha20-Poly1305) that names the user, the provider, the account and
//! the scopes, with a random id and an expiry [`TICKET_TTL`] away. The link carries no
//! credential: it cannot call a tool or read a token, it can only start a sign-in.
//!
//! `/connect/<provider>` opens the ticket (refused when tampered with, expired, or for another
//! provider). With an identity provider (`[server.auth]`) the browser must be signed in with it
//! ([`super::web`]) **as the ticket's user**, else nothing happens: a link that leaked, or
//! that an attacker sent to a victim, cannot attach the attacker's account to the victim's
//! identity or the other way round (the MCP specification's guidance on URL elicitation
//! phishing). Only then is the ticket redeemed — once, whichever process sharing the vault sees
//! it ([`users::redeem_ticket`]) — and the browser sent to the provider: the authorization-code
//! flow with PKCE and `state` ([`WebFlow`]), redirecting to `<public_url>/oauth/callback/<provider>`.
//! The verifier and the state travel in a sealed cookie scoped to that callback path.
//!
//! The callback checks the state, exchanges the code and stores the grant under the ticket's
//! user exactly as `keyward connect` does (flushed and audited before the page says it is
//! done). Without `[server.auth]` (API keys only) the ticket alone decides: whoever holds an
//! unexpired, unused link can connect an account for that user — the README states this weaker
//! guarantee.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::response::Response;
use http::{header, HeaderMap, StatusCode, Uri};
use serde::{Deserialize, Serialize};

use super::seal::WebKey;
use super::web::{
    self, clear_cookie, cookie, escape, message, page, redirect, set_cookie, Web, FLOW_TTL,
};
use crate::oauth::connect::{Selection, WebFlow, WebPending};
use crate::tool_error::SignIn;
use crate::vault::users;
use crate::vault::ConnKey;

/// How long a `/connect` link works.
pub const TICKET_TTL: Duration = Duration::from_secs(600);

/// What a `/connect` link's ticket names, sealed.
#[derive(Debug, Serialize, Deserialize)]
pub struct Ticket {
    pub id: String,
    pub user: String,
    pub provider: String,
    pub account: String,
    /// Exactly these scopes; `None`: what `keyward connect` would ask for.
    pub scopes: Option<Vec<String>>,
    /// Unix seconds.
    pub exp: i64,
}

/// Issues and opens `/connect` links.
pub struct Links {
    base: String,
    key: Arc<WebKey>,
}

impl std::fmt::Debug for Links {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Links")
            .field("base", &self.base)
            .finish_non_exhaustive()
    }
}

/// A link to give a person, and when it stops working (unix seconds).
#[derive(Debug, Clone)]
pub struct Link {
    pub url: String,
    pub expires_at: i64,
}

impl Links {
    pub fn new(base: String, key: Arc<WebKey>) -> Links {
        Links { base, key }
    }

    /// A link that lets the user of `sign_in` connect its provider account, once, within
    /// [`TICKET_TTL`].
    pub fn issue(&self, sign_in: &SignIn) -> Link {
        let expires_at = Web::now() + TICKET_TTL.as_secs() as i64;
        let ticket = Ticket {
            id: web::random(16),
            user: sign_in.key.user.clone(),
            provider: sign_in.key.provider.clone(),
            account: sign_in.key.account.clone(),
            scopes: sign_in.scopes.clone(),
            exp: expires_at,
        };
        let sealed = self.key.seal("ticket", &ticket);
        Link {
            url: format!(
                "{}/connect/{}?ticket={sealed}",
                self.base, sign_in.key.provider
            ),
            expires_at,
        }
    }

    /// The ticket of a link for `provider`, unless it was tampered with or has expired.
    fn open(&self, provider: &str, sealed: &str) -> Option<Ticket> {
        self.key
            .open::<Ticket>("ticket", sealed)
            .filter(|t| t.provider == provider && t.exp > Web::now())
    }
}

#[derive(Deserialize)]
pub(crate) struct ConnectQuery {
    ticket: Option<String>,
}

/// `GET /connect/<provider>?ticket=…`.
pub(crate) async fn connect(
    State(web): State<Arc<Web>>,
    Path(provider): Path<String>,
    Query(query): Query<ConnectQuery>,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    let Some(ticket) = query
        .ticket
        .as_deref()
        .and_then(|sealed| web.links.open(&provider, sealed))
    else {
        return message(
            StatusCode::BAD_REQUEST,
            "This link does not work",
            "It has expired (links work for 10 minutes), was damaged, or is not keyward's. Ask \
             your assistant again for a new one. Nothing was changed.",
        );
    };
    if web.requires_sign_in() {
        if !web.can_sign_in() {
            return message(
                StatusCode::SERVICE_UNAVAILABLE,
                "Browser sign-in is not set up",
                "keyward needs to know who you are before it connects an account, and its \
                 administrator has not configured browser sign-in (`client_id` in [server.auth]).",
            );
        }
        let Some(session) = web.session(&headers).await else {
            let next = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
            let location = format!(
                "/auth/sign-in?next={}",
                percent_encoding::utf8_percent_encode(next, percent_encoding::NON_ALPHANUMERIC)
            );
            return redirect(StatusCode::FOUND, &location, Vec::new());
        };
        if session.user != ticket.user {
            tracing::warn!(
                signed_in = session.user,
                ticket_user = ticket.user,
                provider,
                "refused a connect link: the browser is signed in as another user"
            );
            return message(
                StatusCode::FORBIDDEN,
                "This link is for someone else",
                &format!(
                    "You are signed in as {}, and this link was made for another user. keyward \
                     connects accounts only for the person the link was made for. Nothing was \
                     changed.",
                    session.user
                ),
            );
        }
    }
    let executor = match web.executor().await {
        Ok(executor) => executor,
        Err(page) => return page,
    };
    let key = match ConnKey::new(&ticket.user, &ticket.provider, &ticket.account) {
        Ok(key) => key,
        Err(e) => {
            return message(
                StatusCode::BAD_REQUEST,
                "This link does not work",
                &e.to_string(),
            )
        }
    };
    let fresh = {
        let _one_at_a_time = web.redeeming.lock().await;
        users::redeem_ticket(executor.vault(), ticket.id.as_bytes(), ticket.exp)
            .await
            .map_err(|e| e.to_string())
    };
    match fresh {
        Ok(true) => {}
        Ok(false) => {
            return message(
                StatusCode::BAD_REQUEST,
                "This link was already used",
                "Each link works once. If the account is not connected yet, ask your assistant \
                 again for a new link. Nothing was changed.",
            )
        }
        Err(e) => {
            return message(
                StatusCode::SERVICE_UNAVAILABLE,
                "keyward could not check the link",
                &e,
            )
        }
    }
    start_provider_flow(&web, key, ticket.scopes, StatusCode::FOUND).await
}

/// A provider flow on its way: what the callback needs, sealed in a cookie.
#[derive(Serialize, Deserialize)]
struct Flow {
    state: String,
    user: String,
    account: String,
    pending: WebPending,
    exp: i64,
}

fn flow_cookie(provider: &str) -> (String, String) {
    (
        format!("keyward_connect_{}", provider.replace('-', "_")),
        format!("/oauth/callback/{provider}"),
    )
}

/// Send the browser to the provider to connect `key` (exactly `scopes`, or what `keyward
/// connect` would ask for on this server).
pub(crate) async fn start_provider_flow(
    web: &Web,
    key: ConnKey,
    scopes: Option<Vec<String>>,
    status: StatusCode,
) -> Response {
    let executor = match web.executor().await {
        Ok(executor) => executor,
        Err(page) => return page,
    };
    let selection = match scopes {
        Some(scopes) => Selection {
            scopes: vec![scopes.join(",")],
            ..Selection::default()
        },
        None => Selection {
            read_only: web.state.offer().filter.read_only,
            ..Selection::default()
        },
    };
    let redirect_uri = format!("{}/oauth/callback/{}", web.base, key.provider);
    let flow = match WebFlow::start(
        &web.config,
        executor.catalog(),
        &key.provider,
        &selection,
        &redirect_uri,
    ) {
        Ok(flow) => flow,
        Err(e) => {
            return message(
                StatusCode::BAD_REQUEST,
                "Cannot connect that",
                &e.to_string(),
            )
        }
    };
    let sealed = web.key.seal(
        "connect",
        &Flow {
            state: flow.state,
            user: key.user.clone(),
            account: key.account.clone(),
            pending: WebPending {
                verifier: flow.verifier,
                redirect_uri,
                requested: flow.requested,
            },
            exp: Web::now() + FLOW_TTL.as_secs() as i64,
        },
    );
    let (name, path) = flow_cookie(&key.provider);
    redirect(
        status,
        &flow.url,
        vec![set_cookie(&name, &sealed, &path, FLOW_TTL)],
    )
}

/// What an authorization server sends back to a redirect URI (RFC 6749 §4.1.2): the
/// providers' answers here, the identity provider's to the sign-in callback.
#[derive(Deserialize)]
pub(crate) struct CallbackQuery {
    pub(crate) code: Option<String>,
    pub(crate) state: Option<String>,
    pub(crate) error: Option<String>,
    pub(crate) error_description: Option<String>,
}

/// `GET /oauth/callback/<provider>`: the provider's answer.
pub(crate) async fn callback(
    State(web): State<Arc<Web>>,
    Path(provider): Path<String>,
    Query(query): Query<CallbackQuery>,
    headers: HeaderMap,
) -> Response {
    let executor = match web.executor().await {
        Ok(executor) => executor,
        Err(page) => return page,
    };
    let Some(spec) = executor.catalog().provider(&provider) else {
        return message(
            StatusCode::NOT_FOUND,
            "Unknown provider",
            "keyward has no such provider.",
        );
    };
    let title = spec.title.clone();
    let (name, path) = flow_cookie(&provider);
    let clear = clear_cookie(&name, &path);
    let done = |status: StatusCode, heading: &str, text: &str| {
        let mut response = message(status, heading, text);
        response
            .headers_mut()
            .append(header::SET_COOKIE, clear.clone());
        response
    };
    let Some(flow) = cookie(&headers, &name)
        .and_then(|sealed| web.key.open::<Flow>("connect", &sealed))
        .filter(|f| f.exp > Web::now())
    else {
        return done(
            StatusCode::BAD_REQUEST,
            &format!("Could not connect {title}"),
            "This browser did not start connecting here, or it took longer than 10 minutes. \
             Start again from your assistant's link or your connections page. Nothing was stored.",
        );
    };
    let state_ok = query
        .state
        .as_deref()
        .is_some_and(|s| users::ct_eq(s.as_bytes(), flow.state.as_bytes()));
    if !state_ok {
        return done(
            StatusCode::BAD_REQUEST,
            &format!("Could not connect {title}"),
            "The answer does not belong to the sign-in this browser started (its state does not \
             match). Nothing was stored.",
        );
    }
    if let Some(error) = &query.error {
        let detail = query
            .error_description
            .as_deref()
            .map(|d| format!(": {d}"))
            .unwrap_or_default();
        let text = if error == "access_denied" {
            format!("The authorization was declined ({error}{detail}). Nothing was stored.")
        } else {
            format!("{title} answered with an error ({error}{detail}). Nothing was stored.")
        };
        return done(
            StatusCode::BAD_REQUEST,
            &format!("Could not connect {title}"),
            &text,
        );
    }
    let Some(code) = query.code.as_deref().filter(|c| !c.is_empty()) else {
        return done(
            StatusCode::BAD_REQUEST,
            &format!("Could not connect {title}"),
            "The provider sent no authorization code. Nothing was stored.",
        );
    };
    let key = match ConnKey::new(&flow.user, &provider, &flow.account) {
        Ok(key) => key,
        Err(e) => {
            return done(
                StatusCode::BAD_REQUEST,
                &format!("Could not connect {title}"),
                &e.to_string(),
            )
        }
    };
    let stored = WebFlow::exchange(
        executor.vault(),
        &web.config,
        executor.catalog(),
        &key,
        code,
        flow.pending,
    )
    .await;
    match stored {
        Ok(connected) => {
            tracing::info!(connection = %key, "connected from a browser");
            let missing = if connected.missing.is_empty() {
                String::new()
            } else {
                format!(
                    "<p class=\"warn\">{title} did not grant every scope asked for; missing: {}. \
                     Tools that need them will ask again.</p>",
                    escape(&connected.missing.join(" "))
                )
            };
            let body = format!(
                "<div class=\"card\" id=\"connected\"><h1>{} is connected</h1><p>keyward stored \
                 the connection {} (account <b>{}</b>) in its vault. You can close this tab and \
                 return to your assistant.</p>{missing}<p><a class=\"button\" href=\"/\">Your \
                 connections</a></p></div>",
                escape(&title),
                escape(&key.provider),
                escape(&key.account),
            );
            let mut response = page(StatusCode::OK, &format!("{title} connected"), None, &body);
            response.headers_mut().append(header::SET_COOKIE, clear);
            response
        }
        Err(e) => done(
            StatusCode::BAD_GATEWAY,
            &format!("Could not connect {title}"),
            &e.to_string(),
        ),
    }
}
