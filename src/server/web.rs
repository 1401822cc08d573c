//! The browser side of `keyward serve --http` (with `[server] public_url`): signing people in
//! with the team's identity provider, and the account page where they see and manage their
//! connections. `/connect` links and the providers' redirects are [`super::connect_web`]'s.
//!
//! Routes (all server-rendered HTML, no script):
//! - `GET /` — the account page of the signed-in user: each connection with provider, account,
//!   scopes, expiry and status, with reconnect and disconnect buttons, and a form to connect
//!   another account. Signed out: a sign-in button.
//! - `GET /auth/sign-in?next=/…` → the identity provider (OIDC authorization code with PKCE
//!   S256, `state` and `nonce`); `GET /auth/callback` exchanges the code, checks the ID token
//!   ([`Oidc::validate_id_token`]: signature, `iss`, `aud` = keyward's client id, `nonce`) and
//!   admits the user exactly as a bearer token would (a user `keyward users remove` cut off stays
//!   out); `POST /auth/sign-out`.
//! - `POST /account/connect`, `POST /account/disconnect` — the page's buttons.
//!
//! What keeps a browser session safe:
//! - The session is a sealed cookie ([`WebKey`]: XChaCha20-Poly1305) holding the user, an expiry
//!   and a CSRF token; `Secure; HttpOnly; SameSite=Lax`, so no script reads it and no cross-site
//!   POST carries it. In-flight sign-ins and provider flows are sealed cookies too, scoped to
//!   their callback path, so any process sharing the home folder can finish a flow another
//!   started.
//! - Every form carries the session's CSRF token, compared in constant time; `Host` and `Origin`
//!   are checked as for `/mcp` (`public_url`'s host and origin are allowed).
//! - Pages are sent with `Content-Security-Policy: default-src 'none'` (inline style only),
//!   `frame-ancestors 'none'`, `Referrer-Policy: same-origin` (a ticket in a URL never leaks in
//!   a `Referer` to another site; `no-referrer` would make browsers send `Origin: null` with
//!   the forms, which the Origin check refuses) and `Cache-Control: no-store`.
//! - `next` after sign-in is a path on this server only (no open redirect).

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Form, Query, Request, State};
use axum::middleware::{self, Next};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use http::{header, HeaderMap, HeaderValue, StatusCode};
use serde::{Deserialize, Serialize};

use super::auth::Access;
use super::connect_web::{self, Links};
use super::oidc::Oidc;
use super::seal::WebKey;
use super::ServerState;
use crate::config::Config;
use crate::error::Result;
use crate::exec::Executor;
use crate::vault::users::{Admission, KeyCache};
use crate::vault::{ConnKey, ConnectionStatus};

/// How long a browser stays signed in.
pub const SESSION_TTL: Duration = Duration::from_secs(8 * 3600);

/// How long a sign-in or a provider flow may take in the browser.
pub const FLOW_TTL: Duration = Duration::from_secs(600);

const SESSION_COOKIE: &str = "keyward_session";
const SIGN_IN_COOKIE: &str = "keyward_signin";

/// Everything the browser routes share.
pub struct Web {
    /// `public_url` without a trailing slash.
    pub(crate) base: String,
    pub(crate) oidc: Option<Arc<Oidc>>,
    pub(crate) key: Arc<WebKey>,
    pub(crate) links: Arc<Links>,
    pub(crate) state: Arc<ServerState>,
    pub(crate) config: Config,
    pub(crate) keys: Arc<KeyCache>,
    pub(crate) access: Arc<Access>,
    /// One ticket redemption at a time in this process (a read, then a write: see
    /// [`crate::vault::users::redeem_ticket`]).
    pub(crate) redeeming: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for Web {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Web")
            .field("base", &self.base)
            .finish_non_exhaustive()
    }
}

impl Web {
    /// The executor, or the page that says keyward could not open it (a page handler's early
    /// return).
    pub(crate) async fn executor(&self) -> std::result::Result<Arc<Executor>, Response> {
        self.state.executor().await.map_err(|e| {
            message(
                StatusCode::SERVICE_UNAVAILABLE,
                "keyward is not ready",
                &e.to_string(),
            )
        })
    }

    /// Whether a browser can sign in (`[server.auth]` with a `client_id`).
    pub fn can_sign_in(&self) -> bool {
        self.oidc.as_ref().is_some_and(|o| o.client().is_some())
    }

    /// `/connect` requires a signed-in browser whenever there is an identity provider.
    pub fn requires_sign_in(&self) -> bool {
        self.oidc.is_some()
    }

    pub(crate) fn now() -> i64 {
        chrono::Utc::now().timestamp()
    }

    /// The signed-in user of a request, if its session cookie opens, is current, and its user
    /// was not removed since (`keyward users remove` signs the browser out too).
    pub(crate) async fn session(&self, headers: &HeaderMap) -> Option<Session> {
        let session: Session = self
            .key
            .open("session", &cookie(headers, SESSION_COOKIE)?)?;
        if session.exp <= Web::now() {
            return None;
        }
        match self.keys.admit_oidc(&session.user).await {
            Ok(Admission::Admitted) => Some(session),
            _ => None,
        }
    }
}

/// A signed-in browser.
#[derive(Serialize, Deserialize)]
pub(crate) struct Session {
    pub user: String,
    pub csrf: String,
    pub exp: i64,
}

/// A sign-in on its way through the identity provider.
#[derive(Serialize, Deserialize)]
struct SignIn {
    state: String,
    nonce: String,
    verifier: String,
    next: String,
    exp: i64,
}

/// The routes of the browser side, behind the Host/Origin checks and the page headers.
pub fn routes(web: Arc<Web>) -> Router {
    Router::new()
        .route("/", get(account))
        .route("/auth/sign-in", get(sign_in))
        .route("/auth/callback", get(sign_in_callback))
        .route("/auth/sign-out", post(sign_out))
        .route("/account/connect", post(account_connect))
        .route("/account/disconnect", post(account_disconnect))
        .route("/connect/{provider}", get(connect_web::connect))
        .route("/oauth/callback/{provider}", get(connect_web::callback))
        .layer(middleware::from_fn_with_state(web.clone(), guard))
        .with_state(web)
}

/// Host and Origin as for `/mcp`; and the headers every page carries.
async fn guard(State(web): State<Arc<Web>>, request: Request, next: Next) -> Response {
    if let Err(rejection) = web.access.check_host(request.headers()) {
        return rejection.into_response();
    }
    if let Err(rejection) = web.access.check_origin(request.headers()) {
        return rejection.into_response();
    }
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    for (name, value) in [
        (
            header::CONTENT_SECURITY_POLICY,
            "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'; base-uri 'none'",
        ),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::REFERRER_POLICY, "same-origin"),
        (header::CACHE_CONTROL, "no-store"),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
    ] {
        headers.insert(name, HeaderValue::from_static(value));
    }
    response
}

// ----- cookies ---------------------------------------------------------------------------------

/// The value of cookie `name` on a request.
pub(crate) fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_string())
}

/// A `Set-Cookie` value: `Secure; HttpOnly; SameSite=Lax` always, scoped to `path`.
pub(crate) fn set_cookie(name: &str, value: &str, path: &str, max_age: Duration) -> HeaderValue {
    HeaderValue::from_str(&format!(
        "{name}={value}; Path={path}; Max-Age={}; Secure; HttpOnly; SameSite=Lax",
        max_age.as_secs()
    ))
    .expect("cookie values are base64url")
}

/// A `Set-Cookie` that removes cookie `name`.
pub(crate) fn clear_cookie(name: &str, path: &str) -> HeaderValue {
    set_cookie(name, "", path, Duration::ZERO)
}

/// A 303 to `location` (after a form) or 302 (after a GET), with cookies to set.
pub(crate) fn redirect(status: StatusCode, location: &str, cookies: Vec<HeaderValue>) -> Response {
    let mut response = status.into_response();
    if let Ok(value) = HeaderValue::from_str(location) {
        response.headers_mut().insert(header::LOCATION, value);
    }
    for cookie in cookies {
        response.headers_mut().append(header::SET_COOKIE, cookie);
    }
    response
}

pub(crate) fn random(bytes: usize) -> String {
    use base64::Engine;
    let mut buf = vec![0u8; bytes];
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut buf);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(buf)
}

/// A path on this server to go to after sign-in; anything else (another host, `//host`,
/// `/\host`) becomes `/`.
fn local_path(next: Option<&str>) -> String {
    match next {
        Some(path)
            if path.starts_with('/')
                && !path.starts_with("//")
                && !path.starts_with("/\\")
                && !path.chars().any(|c| c.is_control()) =>
        {
            path.to_string()
        }
        _ => "/".into(),
    }
}

// ----- pages -----------------------------------------------------------------------------------

pub(crate) fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

const STYLE: &str = "\
*{box-sizing:border-box}\
body{margin:0;font:15px/1.5 system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;color:#1f2328;background:#f6f8fa}\
header{background:#24292f;color:#fff;padding:14px 0}\
header .wrap{display:flex;align-items:center;justify-content:space-between}\
header strong{font-size:18px;letter-spacing:.02em}\
header form{margin:0}\
header .wrap>div{display:flex;align-items:center}\
header span{margin-right:12px;color:#d0d7de}\
.wrap{max-width:960px;margin:0 auto;padding:0 24px}\
main{padding:28px 0}\
.card{background:#fff;border:1px solid #d0d7de;border-radius:8px;padding:20px 24px;margin-bottom:20px}\
h1{font-size:22px;margin:0 0 12px}h2{font-size:17px;margin:0 0 12px}\
table{width:100%;border-collapse:collapse}\
th,td{text-align:left;padding:9px 8px;border-bottom:1px solid #eaeef2;vertical-align:top}\
th{font-size:12px;text-transform:uppercase;color:#57606a;letter-spacing:.04em}\
td.scopes code{display:inline-block;background:#eef1f4;border-radius:4px;padding:0 6px;margin:0 4px 4px 0;font-size:12px}\
.ok{color:#1a7f37;font-weight:600}.warn{color:#9a6700;font-weight:600}\
.actions{white-space:nowrap}.actions form{display:inline;margin:0}\
button,.button{font:inherit;font-size:13px;border-radius:6px;border:1px solid #d0d7de;background:#f6f8fa;color:#24292f;padding:5px 12px;cursor:pointer;text-decoration:none;display:inline-block}\
button.primary,.button.primary{background:#1f883d;border-color:#1a7f37;color:#fff}\
button.danger{color:#cf222e}\
header button{background:transparent;color:#fff;border-color:#57606a}\
select,input[type=text]{font:inherit;font-size:14px;padding:5px 8px;border:1px solid #d0d7de;border-radius:6px;margin-right:8px}\
.notice{background:#dafbe1;border:1px solid #aceebb;border-radius:6px;padding:10px 14px;margin-bottom:20px}\
.error{background:#ffebe9;border:1px solid #ffcecb;border-radius:6px;padding:10px 14px;margin-bottom:20px}\
.muted{color:#57606a}";

/// A whole page: `body` is HTML already escaped where it holds data.
pub(crate) fn page(
    status: StatusCode,
    title: &str,
    user: Option<(&str, &str)>,
    body: &str,
) -> Response {
    let bar = match user {
        Some((user, csrf)) => format!(
            "<div><span>Signed in as <b>{}</b></span><form method=\"post\" action=\"/auth/sign-out\">\
             <input type=\"hidden\" name=\"csrf\" value=\"{}\"><button>Sign out</button></form></div>",
            escape(user),
            escape(csrf)
        ),
        None => String::new(),
    };
    let html = format!(
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">\
         <title>{} · keyward</title><style>{STYLE}</style></head><body>\
         <header><div class=\"wrap\"><strong>keyward</strong>{bar}</div></header>\
         <main><div class=\"wrap\">{body}</div></main></body></html>",
        escape(title)
    );
    (status, Html(html)).into_response()
}

/// A page with one message, for the end of a flow or a refusal.
pub(crate) fn message(status: StatusCode, title: &str, text: &str) -> Response {
    page(
        status,
        title,
        None,
        &format!(
            "<div class=\"card\"><h1>{}</h1><p>{}</p><p><a class=\"button\" href=\"/\">Your \
             connections</a></p></div>",
            escape(title),
            escape(text)
        ),
    )
}

// ----- the account page ------------------------------------------------------------------------

#[derive(Deserialize)]
struct Notice {
    notice: Option<String>,
}

async fn account(
    State(web): State<Arc<Web>>,
    Query(notice): Query<Notice>,
    headers: HeaderMap,
) -> Response {
    let Some(session) = web.session(&headers).await else {
        return signed_out(&web);
    };
    let executor = match web.executor().await {
        Ok(executor) => executor,
        Err(page) => return page,
    };
    let rows = executor
        .vault()
        .status(Some(&session.user))
        .await
        .unwrap_or_default();
    let now = Web::now();
    let csrf = escape(&session.csrf);
    let mut table = String::new();
    for row in rows {
        let Ok((conn, _last_used)) = row else {
            continue;
        };
        let title = executor
            .catalog()
            .provider(&conn.key.provider)
            .map(|p| p.title.clone())
            .unwrap_or_else(|| conn.key.provider.clone());
        let scopes: String = if conn.record.scopes.is_empty() {
            "<span class=\"muted\">(not stated)</span>".into()
        } else {
            conn.record
                .scopes
                .iter()
                .map(|s| format!("<code>{}</code>", escape(s)))
                .collect()
        };
        let expiry = match conn.record.expires_in(now) {
            None => "does not expire".to_string(),
            Some(secs) if secs <= 0 => "expired (refreshed on next use)".into(),
            Some(secs) => format!("in {}", human(secs)),
        };
        let status = match &conn.record.status {
            ConnectionStatus::Active => "<span class=\"ok\">active</span>".to_string(),
            ConnectionStatus::NeedsReconnect { .. } => {
                "<span class=\"warn\">needs reconnecting</span>".to_string()
            }
        };
        let (provider, account) = (escape(&conn.key.provider), escape(&conn.key.account));
        let form = |action: &str, label: &str, class: &str| {
            format!(
                "<form method=\"post\" action=\"/account/{action}\"><input type=\"hidden\" \
                 name=\"csrf\" value=\"{csrf}\"><input type=\"hidden\" name=\"provider\" \
                 value=\"{provider}\"><input type=\"hidden\" name=\"account\" \
                 value=\"{account}\"><button class=\"{class}\">{label}</button></form> "
            )
        };
        table.push_str(&format!(
            "<tr data-provider=\"{provider}\" data-account=\"{account}\"><td>{}</td><td>{account}</td>\
             <td class=\"scopes\">{scopes}</td><td>{expiry}</td><td>{status}</td>\
             <td class=\"actions\">{}{}</td></tr>",
            escape(&title),
            form("connect", "Reconnect", ""),
            form("disconnect", "Disconnect", "danger"),
        ));
    }
    let connections = if table.is_empty() {
        "<p class=\"muted\" id=\"none\">No connections yet. Connect an account below, or call a \
         tool from your assistant: it gives you a link when it needs one.</p>"
            .to_string()
    } else {
        format!(
            "<table id=\"connections\"><thead><tr><th>Provider</th><th>Account</th><th>Scopes</th>\
             <th>Expires</th><th>Status</th><th></th></tr></thead><tbody>{table}</tbody></table>"
        )
    };
    let options: String = executor
        .catalog()
        .providers()
        .map(|p| {
            format!(
                "<option value=\"{}\">{}</option>",
                escape(&p.name),
                escape(&p.title)
            )
        })
        .collect();
    let notice = match notice.notice.as_deref() {
        Some(text) => format!("<div class=\"notice\">{}</div>", escape(text)),
        None => String::new(),
    };
    let body = format!(
        "{notice}<div class=\"card\"><h1>Your connections</h1><p class=\"muted\">keyward keeps \
         these accounts' tokens in its vault and uses them for the tools your assistant calls. \
         The assistant never sees a token.</p>{connections}</div>\
         <div class=\"card\"><h2>Connect an account</h2><form method=\"post\" \
         action=\"/account/connect\"><input type=\"hidden\" name=\"csrf\" value=\"{csrf}\">\
         <select name=\"provider\">{options}</select><input type=\"text\" name=\"account\" \
         value=\"default\" aria-label=\"account name\"><button class=\"primary\">Connect</button>\
         </form></div>"
    );
    page(
        StatusCode::OK,
        "Your connections",
        Some((&session.user, &session.csrf)),
        &body,
    )
}

fn signed_out(web: &Web) -> Response {
    let body = if web.can_sign_in() {
        "<div class=\"card\"><h1>keyward</h1><p>Sign in to see the accounts keyward holds for \
         you.</p><p><a class=\"button primary\" href=\"/auth/sign-in\">Sign in</a></p></div>"
    } else {
        "<div class=\"card\"><h1>keyward</h1><p>This page needs browser sign-in, which is not set \
         up: an administrator adds <code>[server.auth]</code> with a <code>client_id</code> to \
         keyward's config.toml. Links your assistant gives you to connect an account still \
         work.</p></div>"
    };
    page(StatusCode::OK, "keyward", None, body)
}

/// `3 h 20 min`, `5 min`, `40 s`.
fn human(secs: i64) -> String {
    match secs {
        s if s >= 86_400 => format!("{} d {} h", s / 86_400, (s % 86_400) / 3600),
        s if s >= 3600 => format!("{} h {} min", s / 3600, (s % 3600) / 60),
        s if s >= 60 => format!("{} min", s / 60),
        s => format!("{s} s"),
    }
}

#[derive(Deserialize)]
pub(crate) struct AccountForm {
    csrf: String,
    provider: String,
    account: String,
}

/// Why a form POST was refused.
enum FormRefusal {
    SignedOut,
    BadCsrf,
}

impl IntoResponse for FormRefusal {
    fn into_response(self) -> Response {
        match self {
            FormRefusal::SignedOut => redirect(StatusCode::SEE_OTHER, "/", Vec::new()),
            FormRefusal::BadCsrf => message(
                StatusCode::FORBIDDEN,
                "The form has expired",
                "Reload the page and try again.",
            ),
        }
    }
}

/// The session of a form POST whose CSRF token matches.
async fn form_session(
    web: &Web,
    headers: &HeaderMap,
    csrf: &str,
) -> std::result::Result<Session, FormRefusal> {
    let session = web.session(headers).await.ok_or(FormRefusal::SignedOut)?;
    if !crate::vault::users::ct_eq(session.csrf.as_bytes(), csrf.as_bytes()) {
        return Err(FormRefusal::BadCsrf);
    }
    Ok(session)
}

async fn account_connect(
    State(web): State<Arc<Web>>,
    headers: HeaderMap,
    Form(form): Form<AccountForm>,
) -> Response {
    let session = match form_session(&web, &headers, &form.csrf).await {
        Ok(session) => session,
        Err(refusal) => return refusal.into_response(),
    };
    let key = match ConnKey::new(&session.user, &form.provider, form.account.trim()) {
        Ok(key) => key,
        Err(e) => {
            return message(
                StatusCode::BAD_REQUEST,
                "Cannot connect that",
                &e.to_string(),
            )
        }
    };
    connect_web::start_provider_flow(&web, key, None, StatusCode::SEE_OTHER).await
}

async fn account_disconnect(
    State(web): State<Arc<Web>>,
    headers: HeaderMap,
    Form(form): Form<AccountForm>,
) -> Response {
    let session = match form_session(&web, &headers, &form.csrf).await {
        Ok(session) => session,
        Err(refusal) => return refusal.into_response(),
    };
    let key = match ConnKey::new(&session.user, &form.provider, &form.account) {
        Ok(key) => key,
        Err(e) => {
            return message(
                StatusCode::BAD_REQUEST,
                "Cannot disconnect that",
                &e.to_string(),
            )
        }
    };
    let executor = match web.executor().await {
        Ok(executor) => executor,
        Err(page) => return page,
    };
    // As `keyward disconnect --force`: the person asked for it to go, so a provider that cannot
    // revoke does not keep it; the notice says where to revoke by hand then.
    let done = crate::oauth::revoke::disconnect(
        executor.vault().clone(),
        executor.catalog().clone(),
        &web.config,
        &key,
        true,
    )
    .await;
    let notice = match done {
        Ok(done) => match done.revocation {
            Ok(_) => format!(
                "Disconnected {} ({}); the grant is revoked.",
                key.provider, key.account
            ),
            Err(reason) => format!(
                "Disconnected {} ({}). The provider did not revoke the grant ({reason}): {}",
                key.provider, key.account, done.manual_revoke
            ),
        },
        Err(e) => format!(
            "Could not disconnect {} ({}): {e}",
            key.provider, key.account
        ),
    };
    let location = format!(
        "/?notice={}",
        percent_encoding::utf8_percent_encode(&notice, percent_encoding::NON_ALPHANUMERIC)
    );
    redirect(StatusCode::SEE_OTHER, &location, Vec::new())
}

// ----- sign-in with the identity provider ------------------------------------------------------

#[derive(Deserialize)]
struct After {
    next: Option<String>,
}

/// What the sign-in asks the identity provider for: `openid`, and what the user claim needs.
fn sign_in_scopes(user_claim: &str) -> &'static str {
    match user_claim {
        "email" => "openid email",
        "preferred_username" | "name" | "nickname" => "openid profile",
        _ => "openid",
    }
}

async fn sign_in(State(web): State<Arc<Web>>, Query(next): Query<After>) -> Response {
    let Some(oidc) = web.oidc.as_ref() else {
        return signed_out(&web);
    };
    let Some((client_id, _)) = oidc.client() else {
        return signed_out(&web);
    };
    let discovery = match oidc.discovery().await {
        Ok(discovery) => discovery,
        Err(e) => {
            return message(
                StatusCode::SERVICE_UNAVAILABLE,
                "Cannot reach the identity provider",
                &e.to_string(),
            )
        }
    };
    let Some(authorize) = discovery.authorization_endpoint.as_deref() else {
        return message(
            StatusCode::SERVICE_UNAVAILABLE,
            "Cannot sign in",
            "The identity provider's discovery document names no authorization endpoint.",
        );
    };
    let flow = SignIn {
        state: random(24),
        nonce: random(24),
        verifier: random(48),
        next: local_path(next.next.as_deref()),
        exp: Web::now() + FLOW_TTL.as_secs() as i64,
    };
    let challenge = {
        use base64::Engine;
        use sha2::Digest;
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(sha2::Sha256::digest(flow.verifier.as_bytes()))
    };
    let Ok(mut url) = url::Url::parse(authorize) else {
        return message(
            StatusCode::SERVICE_UNAVAILABLE,
            "Cannot sign in",
            "The identity provider's authorization endpoint is not a URL.",
        );
    };
    url.query_pairs_mut()
        .append_pair("response_type", "code")
        .append_pair("client_id", client_id)
        .append_pair("redirect_uri", &format!("{}/auth/callback", web.base))
        .append_pair("scope", sign_in_scopes(oidc.user_claim()))
        .append_pair("state", &flow.state)
        .append_pair("nonce", &flow.nonce)
        .append_pair("code_challenge", &challenge)
        .append_pair("code_challenge_method", "S256");
    let sealed = web.key.seal("sign-in", &flow);
    redirect(
        StatusCode::FOUND,
        url.as_str(),
        vec![set_cookie(SIGN_IN_COOKIE, &sealed, "/auth", FLOW_TTL)],
    )
}

async fn sign_in_callback(
    State(web): State<Arc<Web>>,
    Query(query): Query<connect_web::CallbackQuery>,
    headers: HeaderMap,
) -> Response {
    let (Some(oidc), Some(sealed)) = (web.oidc.as_ref(), cookie(&headers, SIGN_IN_COOKIE)) else {
        return message(StatusCode::BAD_REQUEST, "Sign-in failed", "This browser did not start a sign-in here (or it took longer than 10 minutes). Start again.");
    };
    let clear = clear_cookie(SIGN_IN_COOKIE, "/auth");
    let fail = |text: String| {
        let mut response = message(StatusCode::BAD_REQUEST, "Sign-in failed", &text);
        response
            .headers_mut()
            .append(header::SET_COOKIE, clear.clone());
        response
    };
    let Some(flow) = web
        .key
        .open::<SignIn>("sign-in", &sealed)
        .filter(|f| f.exp > Web::now())
    else {
        return fail(
            "The sign-in took longer than 10 minutes, or its cookie was damaged. Start again."
                .into(),
        );
    };
    let state_ok = query
        .state
        .as_deref()
        .is_some_and(|s| crate::vault::users::ct_eq(s.as_bytes(), flow.state.as_bytes()));
    if !state_ok {
        return fail("The answer does not belong to the sign-in this browser started (its state does not match). Start again.".into());
    }
    if let Some(error) = &query.error {
        let detail = query
            .error_description
            .as_deref()
            .map(|d| format!(": {d}"))
            .unwrap_or_default();
        return fail(format!(
            "The identity provider refused the sign-in ({error}{detail})."
        ));
    }
    let Some(code) = query.code.as_deref() else {
        return fail("The identity provider sent no authorization code.".into());
    };
    let user = match exchange_sign_in(&web, oidc, code, &flow).await {
        Ok(user) => user,
        Err(text) => return fail(text),
    };
    match web.keys.admit_oidc(&user).await {
        Ok(Admission::Admitted) => {}
        Ok(Admission::Removed) => {
            return fail(format!(
            "You signed in as {user}, but {user} was removed from keyward; ask its administrator \
                 (`keyward users add {user} --oidc`)."
        ))
        }
        Err(e) => return fail(format!("keyward could not check the user: {e}")),
    }
    tracing::info!(user, "signed in through the identity provider (browser)");
    let session = Session {
        user,
        csrf: random(24),
        exp: Web::now() + SESSION_TTL.as_secs() as i64,
    };
    let sealed = web.key.seal("session", &session);
    redirect(
        StatusCode::FOUND,
        &flow.next,
        vec![clear, set_cookie(SESSION_COOKIE, &sealed, "/", SESSION_TTL)],
    )
}

/// Trade the sign-in's code at the identity provider's token endpoint and check the ID token;
/// the user it names, or what to tell the person.
async fn exchange_sign_in(
    web: &Web,
    oidc: &Oidc,
    code: &str,
    flow: &SignIn,
) -> std::result::Result<String, String> {
    use crate::oauth::token_endpoint::Answer;
    let (client_id, secret) = oidc.client().ok_or("browser sign-in is not configured")?;
    let discovery = oidc.discovery().await.map_err(|e| e.to_string())?;
    let token_url = discovery
        .token_endpoint
        .as_deref()
        .ok_or("the identity provider names no token endpoint")?;
    let redirect_uri = format!("{}/auth/callback", web.base);
    let mut form = vec![
        ("grant_type", "authorization_code"),
        ("code", code),
        ("redirect_uri", redirect_uri.as_str()),
        ("code_verifier", flow.verifier.as_str()),
    ];
    let basic = match secret {
        Some(secret) if discovery.wants_basic_auth() => Some((client_id, secret.expose())),
        Some(secret) => {
            form.extend([("client_id", client_id), ("client_secret", secret.expose())]);
            None
        }
        None => {
            form.push(("client_id", client_id));
            None
        }
    };
    let http = oidc.http();
    let answer =
        crate::oauth::token_endpoint::request_as(http, token_url, &form, basic, http.timeout())
            .await;
    let value = match answer {
        Answer::Token(value) => value,
        Answer::Error(e) => {
            return Err(format!(
                "the identity provider refused the code ({})",
                e.reason()
            ))
        }
        Answer::Unavailable(why) | Answer::Malformed(why) => {
            return Err(format!(
                "the identity provider's token endpoint failed: {why}"
            ))
        }
    };
    let id_token = value
        .get("id_token")
        .and_then(serde_json::Value::as_str)
        .ok_or("the identity provider sent no ID token (is `openid` an allowed scope of keyward's client?)")?;
    oidc.validate_id_token(id_token, &flow.nonce)
        .await
        .map(|claims| claims.user)
        .map_err(|e| format!("the ID token was refused: {e}"))
}

#[derive(Deserialize)]
struct SignOut {
    csrf: String,
}

async fn sign_out(
    State(web): State<Arc<Web>>,
    headers: HeaderMap,
    Form(form): Form<SignOut>,
) -> Response {
    if let Err(refusal) = form_session(&web, &headers, &form.csrf).await {
        return refusal.into_response();
    }
    redirect(
        StatusCode::SEE_OTHER,
        "/",
        vec![clear_cookie(SESSION_COOKIE, "/")],
    )
}

/// The config the browser routes are built from, checked: `None` without `public_url`.
pub fn build(
    config: &Config,
    state: Arc<ServerState>,
    keys: Arc<KeyCache>,
    access: Arc<Access>,
    oidc: Option<Arc<Oidc>>,
    home: &crate::config::Home,
) -> Result<Option<Arc<Web>>> {
    let Some(base) = config.server.public_base()? else {
        return Ok(None);
    };
    let key = Arc::new(WebKey::for_deployment(home, config.store.url.is_some())?);
    let links = Arc::new(Links::new(base.clone(), key.clone()));
    Ok(Some(Arc::new(Web {
        base,
        oidc,
        key,
        links,
        state,
        config: config.clone(),
        keys,
        access,
        redeeming: tokio::sync::Mutex::new(()),
    })))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_is_a_local_path_only() {
        assert_eq!(
            local_path(Some("/connect/github?ticket=x")),
            "/connect/github?ticket=x"
        );
        for bad in [
            "https://evil.example",
            "//evil.example",
            "/\\evil.example",
            "evil",
            "/\n",
        ] {
            assert_eq!(local_path(Some(bad)), "/", "{bad}");
        }
        assert_eq!(local_path(None), "/");
    }

    #[test]
    fn cookies_are_read_by_exact_name() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::COOKIE,
            HeaderValue::from_static("a=1; keyward_session=xyz; b=2"),
        );
        assert_eq!(cookie(&headers, "keyward_session").as_deref(), Some("xyz"));
        assert_eq!(cookie(&headers, "keyward"), None);
        let set = set_cookie("n", "v", "/", Duration::from_secs(5));
        let set = set.to_str().unwrap();
        assert!(set.contains("Secure") && set.contains("HttpOnly") && set.contains("SameSite=Lax"));
    }
}
