#![allow(dead_code)]
//! A fake upstream for the integration tests and benches: one axum server on 127.0.0.1 that
//! plays the GitHub REST API, the Slack Web API and the Google Calendar API, and the OAuth
//! authorization servers of all three (authorization code + PKCE, device flow, refresh with
//! rotation and reuse detection, revocation).
//!
//! It answers the way the providers do — status codes, headers, error bodies — so a test that
//! passes against it says something about the real keyward binary. Everything it receives is
//! recorded ([`SharedState::requests`]); behaviour is steered at runtime through knobs on
//! [`SharedState`] (reachable from [`FakeUpstream`] through `Deref`).
//!
//! URL layout (`B` = [`SharedState::base_url`]):
//! - GitHub API `B/github`, OAuth `B/github/login/oauth/{authorize,access_token}`, device flow
//!   `B/github/login/device/code`, revocation `DELETE B/github/applications/{client_id}/grant`
//!   (and `/token`).
//! - Slack Web API `B/slack/api/{method}`, OAuth `B/slack/oauth/v2/authorize` and
//!   `B/slack/api/oauth.v2.access`, revocation `B/slack/api/auth.revoke`.
//! - Google Calendar `B/google/calendar/v3`, OAuth `B/google/o/oauth2/v2/auth`,
//!   `B/google/token`, `B/google/device/code`, `B/google/revoke`.
//! - A second listener on 127.0.0.2 (another host) records everything sent to it: the GitHub
//!   repository `moved` redirects there ([`SharedState::steal_requests`]).

pub mod browser;
pub mod canary;
mod echo;
pub mod fixtures;
mod github;
mod github_data;
mod google;
pub mod home;
pub mod issuer;
pub mod mcp;
mod oauth;
pub mod postgres;
mod slack;

use std::collections::HashMap;
use std::ops::Deref;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use axum::response::Response;
use axum::Router;
use base64::Engine;
use serde_json::Value;

#[allow(unused_imports)]
pub use echo::Echo;
#[allow(unused_imports)]
pub use github_data::{LAST_ISSUE, LAST_PR, OPEN_PRS};
#[allow(unused_imports)]
pub use google::{GOOGLE_EVENTS_FROM, GOOGLE_EVENTS_UNTIL, HOLIDAY_CALENDAR, TEAM_CALENDAR};
#[allow(unused_imports)]
pub use oauth::IssuedToken;

/// An access token a test imports into keyward; must never show up in any keyward output.
pub const CANARY_ACCESS: &str = "kwcanary_access_9f8e7d6c5b4a";
/// A refresh token a test imports into keyward; must never show up in any keyward output.
pub const CANARY_REFRESH: &str = "kwcanary_refresh_1a2b3c4d5e6f";

pub const GITHUB_CLIENT_ID: &str = "Iv1.kwfake0github01";
pub const GITHUB_CLIENT_SECRET: &str = "kwcanary_secret_github_0d9c8b7a6f5e";
pub const SLACK_CLIENT_ID: &str = "1234567890.0987654321";
pub const SLACK_CLIENT_SECRET: &str = "kwcanary_secret_slack_6e5f4a3b2c1d";
pub const GOOGLE_CLIENT_ID: &str = "123456789012-kwfake.apps.googleusercontent.com";
pub const GOOGLE_CLIENT_SECRET: &str = "kwcanary_secret_google_2c1d0e9f8a7b";

/// Every Google scope starts with this.
pub const GOOGLE_SCOPE_PREFIX: &str = "https://www.googleapis.com/auth/";
/// RFC 8628 grant type.
pub const DEVICE_GRANT_TYPE: &str = "urn:ietf:params:oauth:grant-type:device_code";

/// The GitHub login every granted token belongs to.
pub const GITHUB_LOGIN: &str = "kw-tester";
/// The Slack user every user token belongs to, and its team.
pub const SLACK_USER_ID: &str = "U0TESTER01";
pub const SLACK_TEAM_ID: &str = "T0ACME0001";
/// The Google account of the primary calendar.
pub const GOOGLE_EMAIL: &str = "tester@example.com";

/// An RFC 6749 §5.1 token response (what `keyward import` reads).
pub fn token_response_json(
    access: &str,
    refresh: Option<&str>,
    expires_in: Option<u64>,
    scope: &str,
) -> String {
    let mut obj = serde_json::Map::new();
    obj.insert("access_token".into(), Value::from(access));
    obj.insert("token_type".into(), Value::from("bearer"));
    if let Some(secs) = expires_in {
        obj.insert("expires_in".into(), Value::from(secs));
    }
    if let Some(refresh) = refresh {
        obj.insert("refresh_token".into(), Value::from(refresh));
    }
    obj.insert("scope".into(), Value::from(scope));
    Value::Object(obj).to_string()
}

/// One of the three providers the fake plays.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Provider {
    Github,
    Slack,
    Google,
}

impl Provider {
    pub const ALL: [Provider; 3] = [Provider::Github, Provider::Slack, Provider::Google];

    /// `github`, `slack`, `google` (also `google-calendar`, `calendar`). Panics otherwise.
    pub fn from_name(name: &str) -> Provider {
        match name.to_ascii_lowercase().as_str() {
            "github" => Provider::Github,
            "slack" => Provider::Slack,
            "google" | "google-calendar" | "google_calendar" | "calendar" => Provider::Google,
            other => panic!("fake upstream: unknown provider {other:?} (github, slack, google)"),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Provider::Github => "github",
            Provider::Slack => "slack",
            Provider::Google => "google",
        }
    }

    pub fn client_id(self) -> &'static str {
        match self {
            Provider::Github => GITHUB_CLIENT_ID,
            Provider::Slack => SLACK_CLIENT_ID,
            Provider::Google => GOOGLE_CLIENT_ID,
        }
    }

    pub fn client_secret(self) -> &'static str {
        match self {
            Provider::Github => GITHUB_CLIENT_SECRET,
            Provider::Slack => SLACK_CLIENT_SECRET,
            Provider::Google => GOOGLE_CLIENT_SECRET,
        }
    }

    fn index(self) -> usize {
        match self {
            Provider::Github => 0,
            Provider::Slack => 1,
            Provider::Google => 2,
        }
    }
}

/// One request the fake received, as it arrived.
#[derive(Clone, Debug)]
pub struct RecordedRequest {
    pub method: String,
    /// The raw (still percent-encoded) path, prefix included, e.g. `/github/repos/o/r/pulls`.
    pub path: String,
    pub query: Option<String>,
    /// Names lowercased, in arrival order.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl RecordedRequest {
    /// The first header of that name (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn body_json(&self) -> Option<Value> {
        serde_json::from_slice(&self.body).ok()
    }

    pub fn body_form(&self) -> Vec<(String, String)> {
        url::form_urlencoded::parse(&self.body)
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect()
    }

    pub fn body_text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn query_pairs(&self) -> Vec<(String, String)> {
        url::form_urlencoded::parse(self.query.as_deref().unwrap_or("").as_bytes())
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect()
    }

    pub fn query_param(&self, name: &str) -> Option<String> {
        self.query_pairs()
            .into_iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v)
    }

    /// The path with each segment percent-decoded.
    pub fn decoded_path(&self) -> String {
        percent_encoding::percent_decode_str(&self.path)
            .decode_utf8_lossy()
            .into_owned()
    }

    /// The token of an `Authorization: Bearer …` (or GitHub's `token …`) header.
    pub fn bearer_token(&self) -> Option<&str> {
        parse_authorization(self.header("authorization")?, true)
    }

    /// Whether `needle` appears anywhere in the request: path, query, any header, body.
    pub fn contains(&self, needle: &str) -> bool {
        self.path.contains(needle)
            || self.decoded_path().contains(needle)
            || self.query.as_deref().is_some_and(|q| q.contains(needle))
            || self
                .query_pairs()
                .iter()
                .any(|(k, v)| k.contains(needle) || v.contains(needle))
            || self
                .headers
                .iter()
                .any(|(k, v)| k.contains(needle) || v.contains(needle))
            || self.body_text().contains(needle)
            || self
                .body_form()
                .iter()
                .any(|(k, v)| k.contains(needle) || v.contains(needle))
    }
}

fn parse_authorization(value: &str, allow_token_scheme: bool) -> Option<&str> {
    let (scheme, rest) = value.trim().split_once(' ')?;
    let ok = scheme.eq_ignore_ascii_case("bearer")
        || (allow_token_scheme && scheme.eq_ignore_ascii_case("token"));
    let token = rest.trim();
    (ok && !token.is_empty()).then_some(token)
}

/// A running fake upstream. Dropping it stops the server.
pub struct FakeUpstream {
    state: Arc<SharedState>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for FakeUpstream {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

impl Deref for FakeUpstream {
    type Target = SharedState;
    fn deref(&self) -> &SharedState {
        &self.state
    }
}

impl FakeUpstream {
    /// Bind 127.0.0.1:0 (and 127.0.0.2:0 for the redirect target) and serve on the current
    /// tokio runtime.
    pub async fn start() -> FakeUpstream {
        Self::start_on(&tokio::runtime::Handle::current())
    }

    /// Same as [`FakeUpstream::start`], from sync code (benches): serves on `handle`.
    pub fn start_on(handle: &tokio::runtime::Handle) -> FakeUpstream {
        let main = std::net::TcpListener::bind("127.0.0.1:0").expect("fake upstream: bind");
        // 127.0.0.0/8 is all loopback on Linux; fall back to another port where it is not.
        let steal = std::net::TcpListener::bind("127.0.0.2:0")
            .or_else(|_| std::net::TcpListener::bind("127.0.0.1:0"))
            .expect("fake upstream: bind the redirect target");
        main.set_nonblocking(true).expect("nonblocking");
        steal.set_nonblocking(true).expect("nonblocking");
        let main_addr = main.local_addr().expect("local addr");
        let steal_addr = steal.local_addr().expect("local addr");
        let state = Arc::new(SharedState::new(
            format!("http://{main_addr}"),
            format!("http://{steal_addr}"),
        ));
        let _enter = handle.enter();
        let main = tokio::net::TcpListener::from_std(main).expect("tokio listener");
        let steal = tokio::net::TcpListener::from_std(steal).expect("tokio listener");
        let app = Router::new().fallback(dispatch).with_state(state.clone());
        let steal_app = Router::new()
            .fallback(steal_dispatch)
            .with_state(state.clone());
        let tasks = vec![
            handle.spawn(async move {
                let _ = axum::serve(main, app).await;
            }),
            handle.spawn(async move {
                let _ = axum::serve(steal, steal_app).await;
            }),
        ];
        FakeUpstream { state, tasks }
    }

    /// The shared state, e.g. to move a handle into another task.
    pub fn state(&self) -> &Arc<SharedState> {
        &self.state
    }
}

/// Everything the fake knows, with the knobs and counters tests use.
pub struct SharedState {
    base_url: String,
    steal_base_url: String,
    recording: AtomicBool,
    requests: Mutex<Vec<RecordedRequest>>,
    steal: Mutex<Vec<RecordedRequest>>,
    pub(crate) auth: Mutex<oauth::AuthState>,
    pub(crate) data: Mutex<Data>,
    api_knobs: Mutex<ApiKnobs>,
    pub(crate) cache: Mutex<HashMap<String, Bytes>>,
    pub(crate) sequence: AtomicU64,
    pub(crate) token_echo: Mutex<[Option<echo::TokenEcho>; 3]>,
    /// GitHub logins of tokens granted with [`SharedState::grant_github_as`].
    pub(crate) github_logins: Mutex<HashMap<String, String>>,
    /// Releases held API requests, one per [`SharedState::release_api`].
    release: tokio::sync::Notify,
    /// API requests that started waiting at a hold, and those abandoned (their connection
    /// closed) before they were released.
    held: AtomicU64,
    held_abandoned: Arc<AtomicU64>,
}

/// The mutable provider data (created issues, posted messages, calendars and events).
pub(crate) struct Data {
    pub github: github_data::GithubData,
    pub slack: slack::SlackData,
    pub google: google::GoogleData,
}

struct ApiFailure {
    path_substring: String,
    remaining: u32,
    status: u16,
    retry_after: Option<u64>,
    /// Answer with a body quoting the request instead of the provider's plain error.
    echo: Option<Echo>,
}

/// An answer a test gave the fake for one API request (see [`SharedState::answer_api`]).
struct CannedAnswer {
    method: String,
    path: String,
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

#[derive(Default)]
struct ApiKnobs {
    failures: Vec<ApiFailure>,
    answers: Vec<CannedAnswer>,
    /// Path substrings whose API requests wait for [`SharedState::release_api`].
    holds: Vec<String>,
}

/// Counts a held request whose future is dropped before it was released: the server drops a
/// handler when its client goes away.
struct Abandoned(Arc<AtomicU64>);

impl Drop for Abandoned {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl SharedState {
    fn new(base_url: String, steal_base_url: String) -> SharedState {
        SharedState {
            data: Mutex::new(Data {
                github: github_data::GithubData::default(),
                slack: slack::SlackData::new(),
                google: google::GoogleData::new(),
            }),
            base_url,
            steal_base_url,
            recording: AtomicBool::new(true),
            requests: Mutex::new(Vec::new()),
            steal: Mutex::new(Vec::new()),
            auth: Mutex::new(oauth::AuthState::new()),
            api_knobs: Mutex::new(ApiKnobs::default()),
            cache: Mutex::new(HashMap::new()),
            sequence: AtomicU64::new(1),
            token_echo: Mutex::new([None, None, None]),
            github_logins: Mutex::new(HashMap::new()),
            release: tokio::sync::Notify::new(),
            held: AtomicU64::new(0),
            held_abandoned: Arc::new(AtomicU64::new(0)),
        }
    }

    // ----- URLs ------------------------------------------------------------------------------

    /// `http://127.0.0.1:PORT`
    pub fn base_url(&self) -> String {
        self.base_url.clone()
    }

    /// The other-host listener (`http://127.0.0.2:PORT`) that `moved` redirects to.
    pub fn steal_base_url(&self) -> String {
        self.steal_base_url.clone()
    }

    /// Stands for `https://api.github.com`.
    pub fn github_api_base(&self) -> String {
        format!("{}/github", self.base_url)
    }

    /// Stands for `https://slack.com/api`.
    pub fn slack_api_base(&self) -> String {
        format!("{}/slack/api", self.base_url)
    }

    /// Stands for `https://www.googleapis.com/calendar/v3`.
    pub fn google_api_base(&self) -> String {
        format!("{}/google/calendar/v3", self.base_url)
    }

    pub fn api_base(&self, provider: &str) -> String {
        match Provider::from_name(provider) {
            Provider::Github => self.github_api_base(),
            Provider::Slack => self.slack_api_base(),
            Provider::Google => self.google_api_base(),
        }
    }

    pub fn authorize_url(&self, provider: &str) -> String {
        let b = &self.base_url;
        match Provider::from_name(provider) {
            Provider::Github => format!("{b}/github/login/oauth/authorize"),
            Provider::Slack => format!("{b}/slack/oauth/v2/authorize"),
            Provider::Google => format!("{b}/google/o/oauth2/v2/auth"),
        }
    }

    pub fn token_url(&self, provider: &str) -> String {
        let b = &self.base_url;
        match Provider::from_name(provider) {
            Provider::Github => format!("{b}/github/login/oauth/access_token"),
            Provider::Slack => format!("{b}/slack/api/oauth.v2.access"),
            Provider::Google => format!("{b}/google/token"),
        }
    }

    /// The revocation URL as a keyward config holds it (GitHub keeps `{client_id}` literal).
    pub fn revoke_url(&self, provider: &str) -> String {
        let b = &self.base_url;
        match Provider::from_name(provider) {
            Provider::Github => format!("{b}/github/applications/{{client_id}}/grant"),
            Provider::Slack => format!("{b}/slack/api/auth.revoke"),
            Provider::Google => format!("{b}/google/revoke"),
        }
    }

    /// The device authorization endpoint; Slack has none.
    pub fn device_authorization_url(&self, provider: &str) -> Option<String> {
        let b = &self.base_url;
        match Provider::from_name(provider) {
            Provider::Github => Some(format!("{b}/github/login/device/code")),
            Provider::Slack => None,
            Provider::Google => Some(format!("{b}/google/device/code")),
        }
    }

    /// A keyward `config.toml` whose `[providers.*]` sections point here.
    pub fn config_toml(&self) -> String {
        let mut out = String::new();
        for p in Provider::ALL {
            let name = p.name();
            out.push_str(&format!("[providers.{name}]\n"));
            out.push_str(&format!("api_base = \"{}\"\n", self.api_base(name)));
            out.push_str(&format!(
                "authorize_url = \"{}\"\n",
                self.authorize_url(name)
            ));
            out.push_str(&format!("token_url = \"{}\"\n", self.token_url(name)));
            out.push_str(&format!("revoke_url = \"{}\"\n", self.revoke_url(name)));
            if let Some(url) = self.device_authorization_url(name) {
                out.push_str(&format!("device_authorization_url = \"{url}\"\n"));
            }
            out.push_str(&format!("client_id = \"{}\"\n", p.client_id()));
            out.push_str(&format!("client_secret = \"{}\"\n\n", p.client_secret()));
        }
        out
    }

    // ----- recorded requests -----------------------------------------------------------------

    /// Every request received on 127.0.0.1, in order.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        lock(&self.requests).clone()
    }

    /// Recorded requests whose path contains `path_substring`.
    pub fn requests_to(&self, path_substring: &str) -> Vec<RecordedRequest> {
        lock(&self.requests)
            .iter()
            .filter(|r| r.path.contains(path_substring))
            .cloned()
            .collect()
    }

    pub fn clear_requests(&self) {
        lock(&self.requests).clear();
        lock(&self.steal).clear();
    }

    /// Everything that reached the other-host listener (or a `/steal` path).
    pub fn steal_requests(&self) -> Vec<RecordedRequest> {
        lock(&self.steal).clone()
    }

    /// Turn request recording off (benches) or on. On by default.
    pub fn set_recording(&self, on: bool) {
        self.recording.store(on, Ordering::Relaxed);
    }

    // ----- API knobs --------------------------------------------------------------------------

    /// The next `n` API requests whose raw path contains `path_substring` (prefix included,
    /// e.g. `/github/repos/o/r/pulls`) answer `status` in the provider's error shape, with
    /// `Retry-After` when given. Token, authorize and revoke endpoints are not affected.
    pub fn fail_api(&self, path_substring: &str, n: u32, status: u16, retry_after: Option<u64>) {
        lock(&self.api_knobs).failures.push(ApiFailure {
            path_substring: path_substring.to_string(),
            remaining: n,
            status,
            retry_after,
            echo: None,
        });
    }

    /// The next `n` API requests whose raw path contains `path_substring` answer as `echo`
    /// says, quoting everything the request carried (see [`Echo`]).
    pub fn echo_api(&self, path_substring: &str, n: u32, echo: Echo) {
        lock(&self.api_knobs).failures.push(ApiFailure {
            path_substring: path_substring.to_string(),
            remaining: n,
            status: 0,
            retry_after: None,
            echo: Some(echo),
        });
    }

    /// The next API request for exactly `method` and `path` (raw, prefix included, e.g.
    /// `/github/repos/o/r/pulls`, query aside) gets this answer instead of the fake's own, once:
    /// for a tool's fixture (see [`fixtures`]), whose sample answer is the provider's documented
    /// shape rather than what the fake generates. Injected failures still come first.
    pub fn answer_api(
        &self,
        method: &str,
        path: &str,
        status: u16,
        headers: Vec<(String, String)>,
        body: Vec<u8>,
    ) {
        lock(&self.api_knobs).answers.push(CannedAnswer {
            method: method.to_string(),
            path: path.to_string(),
            status,
            headers,
            body,
        });
    }

    /// API requests whose raw path contains `path_substring` wait until the test calls
    /// [`SharedState::release_api`] (one release per request): to cancel a call in flight, or
    /// to act while it runs.
    pub fn hold_api(&self, path_substring: &str) {
        lock(&self.api_knobs).holds.push(path_substring.to_string());
    }

    /// Let one held API request (or the next one to arrive) go on.
    pub fn release_api(&self) {
        self.release.notify_one();
    }

    /// API requests that reached a hold.
    pub fn held(&self) -> u64 {
        self.held.load(Ordering::SeqCst)
    }

    /// Held API requests whose client went away before they were released.
    pub fn held_abandoned(&self) -> u64 {
        self.held_abandoned.load(Ordering::SeqCst)
    }

    /// Make `access_token` a GitHub token (scopes `repo read:user`, never expiring) of the
    /// account `login`: `GET /user` names it, and the issues of the repository `seen-by` say
    /// which login read them.
    pub fn grant_github_as(&self, access_token: &str, login: &str) {
        self.grant("github", access_token, &["repo", "read:user"], None);
        lock(&self.github_logins).insert(access_token.to_string(), login.to_string());
    }

    // ----- internals --------------------------------------------------------------------------

    pub(crate) fn next_seq(&self) -> u64 {
        self.sequence.fetch_add(1, Ordering::Relaxed)
    }

    fn record(&self, r: &Req, steal: bool) {
        if !steal && !self.recording.load(Ordering::Relaxed) {
            return;
        }
        let rec = RecordedRequest {
            method: r.method.to_string(),
            path: r.path.clone(),
            query: r.raw_query.clone(),
            headers: r
                .headers
                .iter()
                .map(|(k, v)| {
                    (
                        k.as_str().to_string(),
                        String::from_utf8_lossy(v.as_bytes()).into_owned(),
                    )
                })
                .collect(),
            body: r.body.to_vec(),
        };
        if steal {
            lock(&self.steal).push(rec);
        } else {
            lock(&self.requests).push(rec);
        }
    }

    /// Injected failures and holds of API calls.
    async fn api_preamble(&self, p: Provider, r: &Req) -> Option<Response> {
        let failure = {
            let mut knobs = lock(&self.api_knobs);
            let failure = knobs
                .failures
                .iter_mut()
                .find(|f| f.remaining > 0 && r.path.contains(&f.path_substring))
                .map(|f| {
                    f.remaining -= 1;
                    (f.status, f.retry_after, f.echo)
                });
            knobs.failures.retain(|f| f.remaining > 0);
            failure
        };
        let held = lock(&self.api_knobs)
            .holds
            .iter()
            .any(|h| r.path.contains(h.as_str()));
        if held {
            let abandoned = Abandoned(self.held_abandoned.clone());
            self.held.fetch_add(1, Ordering::SeqCst);
            self.release.notified().await;
            std::mem::forget(abandoned);
        }
        let Some((status, retry_after, echo)) = failure else {
            return self.canned(r);
        };
        if let Some(echo) = echo {
            return Some(echo::api_failure(p, echo, r));
        }
        let mut resp = match p {
            Provider::Github => github::failure(status),
            Provider::Slack => slack::failure(status),
            Provider::Google => google::failure(status),
        };
        if let Some(secs) = retry_after {
            set_header(&mut resp, "retry-after", &secs.to_string());
        }
        Some(resp)
    }

    /// The canned answer for `r`, if a test gave one (taken: it answers once).
    fn canned(&self, r: &Req) -> Option<Response> {
        let answer = {
            let mut knobs = lock(&self.api_knobs);
            let i = knobs
                .answers
                .iter()
                .position(|a| a.method == r.method.as_str() && a.path == r.path)?;
            knobs.answers.remove(i)
        };
        let mut resp = Response::new(Body::from(answer.body));
        *resp.status_mut() = status_code(answer.status);
        for (name, value) in &answer.headers {
            set_header(&mut resp, name, value);
        }
        Some(resp)
    }
}

/// A request as the handlers see it.
pub(crate) struct Req {
    pub method: Method,
    pub path: String,
    pub raw_query: Option<String>,
    pub query: Vec<(String, String)>,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Req {
    pub fn query_get(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    pub fn content_type(&self) -> String {
        self.header("content-type")
            .unwrap_or("")
            .to_ascii_lowercase()
    }

    /// The body as a form, when it is one.
    pub fn form(&self) -> Vec<(String, String)> {
        let ct = self.content_type();
        if ct.starts_with("application/x-www-form-urlencoded")
            || (ct.is_empty() && !self.body.is_empty() && self.body[0] != b'{')
        {
            url::form_urlencoded::parse(&self.body)
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect()
        } else {
            Vec::new()
        }
    }

    /// The body as JSON, when it is JSON.
    pub fn json(&self) -> Option<Value> {
        serde_json::from_slice(&self.body).ok()
    }

    /// Query parameters followed by form parameters.
    pub fn params(&self) -> Vec<(String, String)> {
        let mut all = self.query.clone();
        all.extend(self.form());
        all
    }

    /// Query, form and (flat) JSON body parameters, JSON values as text.
    pub fn params_with_json(&self) -> Vec<(String, String)> {
        let mut all = self.params();
        if self.content_type().starts_with("application/json") {
            if let Some(Value::Object(obj)) = self.json() {
                for (k, v) in obj {
                    let text = match v {
                        Value::String(s) => s,
                        Value::Null => continue,
                        other => other.to_string(),
                    };
                    all.push((k, text));
                }
            }
        }
        all
    }

    pub fn bearer(&self, allow_token_scheme: bool) -> Option<&str> {
        parse_authorization(self.header("authorization")?, allow_token_scheme)
    }

    pub fn basic_auth(&self) -> Option<(String, String)> {
        let value = self.header("authorization")?.trim();
        let (scheme, rest) = value.split_once(' ')?;
        if !scheme.eq_ignore_ascii_case("basic") {
            return None;
        }
        let raw = base64::engine::general_purpose::STANDARD
            .decode(rest.trim())
            .ok()?;
        let text = String::from_utf8(raw).ok()?;
        let (id, secret) = text.split_once(':')?;
        let decode = |s: &str| {
            url::form_urlencoded::parse(format!("x={s}").as_bytes())
                .next()
                .map(|(_, v)| v.into_owned())
                .unwrap_or_default()
        };
        Some((decode(id), decode(secret)))
    }

    pub fn accepts_json(&self) -> bool {
        self.header("accept")
            .is_some_and(|a| a.to_ascii_lowercase().contains("json"))
    }
}

pub(crate) fn param<'a>(params: &'a [(String, String)], name: &str) -> Option<&'a str> {
    params
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

/// Percent-decoded path segments of `path` (which has no leading prefix left but may start
/// with `/`).
pub(crate) fn segments(path: &str) -> Vec<String> {
    let trimmed = path.strip_prefix('/').unwrap_or(path);
    if trimmed.is_empty() {
        return Vec::new();
    }
    trimmed
        .split('/')
        .map(|s| {
            percent_encoding::percent_decode_str(s)
                .decode_utf8_lossy()
                .into_owned()
        })
        .collect()
}

// ----- responses ---------------------------------------------------------------------------

pub(crate) fn status_code(status: u16) -> StatusCode {
    StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
}

pub(crate) fn bytes_response(status: u16, content_type: &str, body: impl Into<Body>) -> Response {
    let mut resp = Response::new(body.into());
    *resp.status_mut() = status_code(status);
    set_header(&mut resp, "content-type", content_type);
    resp
}

pub(crate) fn json_response(status: u16, value: &Value) -> Response {
    bytes_response(
        status,
        "application/json; charset=utf-8",
        serde_json::to_vec(value).unwrap_or_default(),
    )
}

pub(crate) fn empty_response(status: u16) -> Response {
    let mut resp = Response::new(Body::empty());
    *resp.status_mut() = status_code(status);
    resp
}

pub(crate) fn html_response(status: u16, title: &str, text: &str) -> Response {
    bytes_response(
        status,
        "text/html; charset=utf-8",
        format!(
            "<!DOCTYPE html><html><head><title>{title}</title></head><body><h1>{title}</h1><p>{text}</p></body></html>"
        ),
    )
}

pub(crate) fn redirect_response(status: u16, location: &str) -> Response {
    let mut resp = empty_response(status);
    set_header(&mut resp, "location", location);
    resp
}

pub(crate) fn set_header(resp: &mut Response, name: &str, value: &str) {
    if let (Ok(name), Ok(value)) = (
        HeaderName::from_bytes(name.as_bytes()),
        HeaderValue::from_str(value),
    ) {
        resp.headers_mut().insert(name, value);
    }
}

/// A generic error page for injected 5xx/429 answers.
pub(crate) fn outage_response(status: u16) -> Response {
    let reason = status_code(status)
        .canonical_reason()
        .unwrap_or("Error")
        .to_string();
    let mut resp = html_response(
        status,
        &format!("{status} {reason}"),
        "Please try again later.",
    );
    if status == 429 || status == 503 {
        set_header(&mut resp, "retry-after", "1");
    }
    resp
}

// ----- small shared helpers -------------------------------------------------------------------

pub(crate) fn now_unix() -> i64 {
    chrono::Utc::now().timestamp()
}

/// An opaque page cursor (`prefix:offset`, base64).
pub(crate) fn encode_cursor(prefix: &str, offset: usize) -> String {
    base64::engine::general_purpose::STANDARD.encode(format!("{prefix}:{offset}"))
}

pub(crate) fn decode_cursor(prefix: &str, cursor: &str) -> Option<usize> {
    let raw = base64::engine::general_purpose::STANDARD
        .decode(cursor.trim())
        .or_else(|_| base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(cursor.trim()))
        .ok()?;
    let text = String::from_utf8(raw).ok()?;
    text.strip_prefix(prefix)?.strip_prefix(':')?.parse().ok()
}

/// A stable 64-bit hash (FNV-1a) for deterministic fixtures.
pub(crate) fn fnv(parts: &[&str]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for b in part.bytes().chain(std::iter::once(0xff)) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    h
}

/// 40 hex characters derived from `parts` (stands for a git SHA).
pub(crate) fn fake_sha(parts: &[&str]) -> String {
    use sha2::Digest;
    let mut hasher = sha2::Sha256::new();
    for part in parts {
        hasher.update(part.as_bytes());
        hasher.update([0]);
    }
    let digest = hasher.finalize();
    digest[..20].iter().map(|b| format!("{b:02x}")).collect()
}

pub(crate) fn random_string(charset: &[u8], len: usize) -> String {
    use rand::Rng;
    let mut rng = rand::thread_rng();
    (0..len)
        .map(|_| charset[rng.gen_range(0..charset.len())] as char)
        .collect()
}

pub(crate) const ALNUM: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";

// ----- dispatch ---------------------------------------------------------------------------------

async fn read_request(req: Request) -> Req {
    let (parts, body) = req.into_parts();
    let body = axum::body::to_bytes(body, 64 << 20)
        .await
        .unwrap_or_default();
    let raw_query = parts.uri.query().map(str::to_string);
    let query = url::form_urlencoded::parse(raw_query.as_deref().unwrap_or("").as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    Req {
        method: parts.method,
        path: parts.uri.path().to_string(),
        raw_query,
        query,
        headers: parts.headers,
        body,
    }
}

async fn steal_dispatch(State(st): State<Arc<SharedState>>, req: Request) -> Response {
    let r = read_request(req).await;
    st.record(&r, true);
    json_response(200, &serde_json::json!({ "stolen": true }))
}

async fn dispatch(State(st): State<Arc<SharedState>>, req: Request) -> Response {
    let r = read_request(req).await;
    let path = r.path.clone();
    if path == "/steal" || path.starts_with("/steal/") {
        st.record(&r, true);
        return json_response(200, &serde_json::json!({ "stolen": true }));
    }
    st.record(&r, false);
    if let Some(rest) = path.strip_prefix("/github") {
        return route_github(&st, &r, rest).await;
    }
    if let Some(rest) = path.strip_prefix("/slack") {
        return route_slack(&st, &r, rest).await;
    }
    if let Some(rest) = path.strip_prefix("/google") {
        return route_google(&st, &r, rest).await;
    }
    bytes_response(
        404,
        "text/plain; charset=utf-8",
        "fake upstream: no such path",
    )
}

async fn route_github(st: &SharedState, r: &Req, rest: &str) -> Response {
    match rest {
        "/login/oauth/authorize" => return oauth::authorize(st, Provider::Github, r),
        "/login/oauth/access_token" => return oauth::token_endpoint(st, Provider::Github, r).await,
        "/login/device/code" => return oauth::device_code(st, Provider::Github, r),
        "/login/device" => {
            return html_response(
                200,
                "Device activation",
                "Enter the code shown by your device.",
            )
        }
        _ => {}
    }
    let segs = segments(rest);
    if let [a, client_id, what] = segs.as_slice() {
        if a == "applications" && (what == "grant" || what == "token") {
            return oauth::github_revoke(st, r, client_id, what == "grant");
        }
    }
    if let Some(resp) = st.api_preamble(Provider::Github, r).await {
        return resp;
    }
    github::handle(st, r, &segs)
}

async fn route_slack(st: &SharedState, r: &Req, rest: &str) -> Response {
    match rest {
        "/oauth/v2/authorize" => return oauth::authorize(st, Provider::Slack, r),
        "/api/oauth.v2.access" => return oauth::token_endpoint(st, Provider::Slack, r).await,
        _ => {}
    }
    let Some(method) = rest.strip_prefix("/api/") else {
        return html_response(404, "404 Not Found", "There is nothing here.");
    };
    if let Some(resp) = st.api_preamble(Provider::Slack, r).await {
        return resp;
    }
    slack::handle(st, r, method)
}

async fn route_google(st: &SharedState, r: &Req, rest: &str) -> Response {
    match rest {
        "/o/oauth2/v2/auth" => return oauth::authorize(st, Provider::Google, r),
        "/token" => return oauth::token_endpoint(st, Provider::Google, r).await,
        "/device/code" => return oauth::device_code(st, Provider::Google, r),
        "/device" => {
            return html_response(
                200,
                "Connect a device",
                "Enter the code displayed on your device.",
            )
        }
        "/revoke" => return oauth::google_revoke(st, r),
        _ => {}
    }
    let Some(api_path) = rest.strip_prefix("/calendar/v3") else {
        return google::not_found();
    };
    if let Some(resp) = st.api_preamble(Provider::Google, r).await {
        return resp;
    }
    google::handle(st, r, &segments(api_path))
}
