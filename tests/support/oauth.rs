//! The authorization servers: authorize (code + PKCE), token endpoint (code, refresh with
//! rotation and reuse detection, device code), device authorization, revocation — and the
//! token store the API handlers check bearer tokens against.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use axum::response::Response;
use base64::Engine;
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};

use super::{
    html_response, json_response, lock, outage_response, param, random_string, redirect_response,
    set_header, Provider, Req, SharedState, ALNUM, DEVICE_GRANT_TYPE, SLACK_TEAM_ID, SLACK_USER_ID,
};

/// How long an authorization code may wait before it is exchanged.
const CODE_TTL: Duration = Duration::from_secs(600);
/// Grace for clients that poll a device code exactly on the interval.
const POLL_TOLERANCE: Duration = Duration::from_millis(250);

/// One token the fake handed out through a token endpoint (not through `grant`).
#[derive(Clone, Debug)]
pub struct IssuedToken {
    pub access_token: String,
    pub refresh_token: Option<String>,
    pub scopes: Vec<String>,
    pub expires_in: Option<u64>,
    /// `authorization_code`, `refresh_token` or the device grant URN.
    pub grant_type: String,
    /// Tokens of one family descend from one authorization (or one `grant`).
    pub family: usize,
}

/// The answer to "is this bearer token good?".
pub(crate) enum TokenStatus {
    Valid { scopes: Vec<String>, bot: bool },
    Expired,
    Revoked,
    Unknown,
}

struct AccessEntry {
    scopes: Vec<String>,
    expires_at: Option<Instant>,
    family: usize,
    revoked: bool,
    bot: bool,
}

struct RefreshEntry {
    scopes: Vec<String>,
    family: usize,
    used: bool,
    revoked: bool,
}

struct CodeEntry {
    client_id: String,
    redirect_uri: Option<String>,
    scopes: Vec<String>,
    bot_scopes: Vec<String>,
    challenge: Option<(String, String)>,
    issued: Instant,
    used: bool,
    family: Option<usize>,
    offline: bool,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum DeviceState {
    Pending,
    Approved,
    Denied,
    Redeemed,
}

struct DeviceEntry {
    device_code: String,
    user_code: String,
    client_id: String,
    scopes: Vec<String>,
    expires: Instant,
    interval: u64,
    last_poll: Option<Instant>,
    state: DeviceState,
}

pub(crate) struct Knobs {
    fail_token: u32,
    fail_status: u16,
    token_delay: Duration,
    /// Moved on by [`FakeUpstream::abandon_delayed_token_requests`]: a request that waited
    /// through a change of it is dropped unprocessed.
    token_epoch: u64,
    omit_refresh: bool,
    force_invalid_grant: bool,
    access_ttl: Duration,
    rotate: bool,
    device_interval: u64,
    device_ttl: Duration,
    force_slow_down: u32,
    deny_authorization: bool,
    scope_override: Option<Vec<String>>,
    /// Sent as `expires_in` instead of the real lifetime (which the fake still enforces).
    advertised_expires_in: Option<Value>,
}

#[derive(Default)]
pub(crate) struct Counters {
    token_requests: u64,
    refresh_count: u64,
    successful_refreshes: u64,
    authorizations: u64,
    revocations: Vec<String>,
    family_revoked: bool,
    issued: Vec<IssuedToken>,
}

pub(crate) struct ProviderAuth {
    provider: Provider,
    access: HashMap<String, AccessEntry>,
    refresh: HashMap<String, RefreshEntry>,
    families: Vec<bool>,
    codes: HashMap<String, CodeEntry>,
    devices: Vec<DeviceEntry>,
    knobs: Knobs,
    counters: Counters,
}

pub(crate) struct AuthState {
    providers: [ProviderAuth; 3],
}

impl AuthState {
    pub fn new() -> AuthState {
        AuthState {
            providers: Provider::ALL.map(ProviderAuth::new),
        }
    }

    pub fn get(&mut self, p: Provider) -> &mut ProviderAuth {
        &mut self.providers[p.index()]
    }

    pub fn get_ref(&self, p: Provider) -> &ProviderAuth {
        &self.providers[p.index()]
    }
}

/// Why a token request failed; rendered in each provider's own way.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fail {
    InvalidRequest,
    UnknownClient,
    BadSecret,
    BadCode,
    BadVerifier,
    RedirectMismatch,
    BadRefresh,
    Pending,
    SlowDown(u64),
    ExpiredDevice,
    Denied,
    BadDeviceCode,
    UnsupportedGrant,
}

fn split_scopes(s: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for scope in s.split([' ', ',']).map(str::trim).filter(|s| !s.is_empty()) {
        if !out.iter().any(|have| have == scope) {
            out.push(scope.to_string());
        }
    }
    out
}

impl ProviderAuth {
    fn new(provider: Provider) -> ProviderAuth {
        let (ttl, rotate, device_ttl) = match provider {
            Provider::Github => (
                Duration::from_secs(8 * 3600),
                true,
                Duration::from_secs(900),
            ),
            Provider::Slack => (
                Duration::from_secs(12 * 3600),
                true,
                Duration::from_secs(900),
            ),
            Provider::Google => (Duration::from_secs(3599), false, Duration::from_secs(1800)),
        };
        ProviderAuth {
            provider,
            access: HashMap::new(),
            refresh: HashMap::new(),
            families: Vec::new(),
            codes: HashMap::new(),
            devices: Vec::new(),
            knobs: Knobs {
                fail_token: 0,
                fail_status: 503,
                token_delay: Duration::ZERO,
                token_epoch: 0,
                omit_refresh: false,
                force_invalid_grant: false,
                access_ttl: ttl,
                rotate,
                device_interval: 1,
                device_ttl,
                force_slow_down: 0,
                deny_authorization: false,
                scope_override: None,
                advertised_expires_in: None,
            },
            counters: Counters::default(),
        }
    }

    pub fn check(&self, token: &str) -> TokenStatus {
        let Some(entry) = self.access.get(token) else {
            return TokenStatus::Unknown;
        };
        if entry.revoked || self.families[entry.family] {
            TokenStatus::Revoked
        } else if entry.expires_at.is_some_and(|t| Instant::now() >= t) {
            TokenStatus::Expired
        } else {
            TokenStatus::Valid {
                scopes: entry.scopes.clone(),
                bot: entry.bot,
            }
        }
    }

    fn new_family(&mut self) -> usize {
        self.families.push(false);
        self.families.len() - 1
    }

    fn revoke_family(&mut self, family: usize) {
        if let Some(f) = self.families.get_mut(family) {
            *f = true;
        }
    }

    fn new_access_token(&self, bot: bool) -> String {
        match self.provider {
            Provider::Github => format!("gho_{}", random_string(ALNUM, 36)),
            Provider::Slack if bot => format!(
                "xoxb-{}-{}-{}",
                random_string(b"0123456789", 12),
                random_string(b"0123456789", 13),
                random_string(ALNUM, 24)
            ),
            Provider::Slack => format!("xoxe.xoxp-1-{}", random_string(ALNUM, 120)),
            Provider::Google => format!(
                "ya29.a0{}",
                random_string(
                    b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_",
                    160
                )
            ),
        }
    }

    fn new_refresh_token(&self) -> String {
        match self.provider {
            Provider::Github => format!("ghr_{}", random_string(ALNUM, 76)),
            Provider::Slack => format!("xoxe-1-{}", random_string(ALNUM, 140)),
            Provider::Google => format!(
                "1//0g{}",
                random_string(
                    b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_",
                    98
                )
            ),
        }
    }

    /// Register a token the test created itself (no expiry when `expires_in` is `None`).
    pub fn register(
        &mut self,
        access: &str,
        refresh: Option<&str>,
        scopes: Vec<String>,
        expires_in: Option<Duration>,
    ) -> usize {
        let family = self.new_family();
        self.access.insert(
            access.to_string(),
            AccessEntry {
                scopes: scopes.clone(),
                expires_at: expires_in.map(|d| Instant::now() + d),
                family,
                revoked: false,
                bot: false,
            },
        );
        if let Some(rt) = refresh {
            self.refresh.insert(
                rt.to_string(),
                RefreshEntry {
                    scopes,
                    family,
                    used: false,
                    revoked: false,
                },
            );
        }
        family
    }

    /// Issue an access token (and a refresh token unless told otherwise) in `family`.
    fn issue(
        &mut self,
        scopes: &[String],
        family: usize,
        with_refresh: bool,
        grant_type: &str,
    ) -> IssuedToken {
        let access = self.new_access_token(false);
        let expires_in = Some(self.knobs.access_ttl.as_secs());
        let expires_at = Some(Instant::now() + self.knobs.access_ttl);
        self.access.insert(
            access.clone(),
            AccessEntry {
                scopes: scopes.to_vec(),
                expires_at,
                family,
                revoked: false,
                bot: false,
            },
        );
        let refresh = (with_refresh && !self.knobs.omit_refresh).then(|| {
            let rt = self.new_refresh_token();
            self.refresh.insert(
                rt.clone(),
                RefreshEntry {
                    scopes: scopes.to_vec(),
                    family,
                    used: false,
                    revoked: false,
                },
            );
            rt
        });
        let token = IssuedToken {
            access_token: access,
            refresh_token: refresh,
            scopes: scopes.to_vec(),
            expires_in,
            grant_type: grant_type.to_string(),
            family,
        };
        self.counters.issued.push(token.clone());
        token
    }

    /// Revoke whatever `token` is (access or refresh) with its whole family.
    fn revoke_any(&mut self, token: &str) -> bool {
        let family = self
            .access
            .get(token)
            .map(|e| e.family)
            .or_else(|| self.refresh.get(token).map(|e| e.family));
        match family {
            Some(f) if !self.families[f] => {
                self.revoke_family(f);
                self.counters.revocations.push(token.to_string());
                true
            }
            _ => false,
        }
    }

    fn scope_text(&self, scopes: &[String]) -> String {
        match self.provider {
            Provider::Github | Provider::Slack => scopes.join(","),
            Provider::Google => scopes.join(" "),
        }
    }

    /// The provider-shaped success body of a token endpoint.
    fn success_body(&self, t: &IssuedToken, refresh_grant: bool) -> Value {
        let scope = self.scope_text(&t.scopes);
        let mut m = Map::new();
        match self.provider {
            Provider::Github => {
                m.insert("access_token".into(), json!(t.access_token));
                if let Some(e) = t.expires_in {
                    m.insert("expires_in".into(), json!(e));
                }
                if let Some(rt) = &t.refresh_token {
                    m.insert("refresh_token".into(), json!(rt));
                    m.insert("refresh_token_expires_in".into(), json!(15_897_600));
                }
                m.insert("scope".into(), json!(scope));
                m.insert("token_type".into(), json!("bearer"));
            }
            Provider::Google => {
                m.insert("access_token".into(), json!(t.access_token));
                if let Some(e) = t.expires_in {
                    m.insert("expires_in".into(), json!(e));
                }
                if let Some(rt) = &t.refresh_token {
                    m.insert("refresh_token".into(), json!(rt));
                }
                m.insert("scope".into(), json!(scope));
                m.insert("token_type".into(), json!("Bearer"));
            }
            Provider::Slack if refresh_grant => {
                m.insert("ok".into(), json!(true));
                m.insert("app_id".into(), json!("A0KWFAKE01"));
                m.insert("authed_user".into(), json!({ "id": SLACK_USER_ID }));
                m.insert("scope".into(), json!(scope));
                m.insert("token_type".into(), json!("user"));
                m.insert("access_token".into(), json!(t.access_token));
                if let Some(rt) = &t.refresh_token {
                    m.insert("refresh_token".into(), json!(rt));
                }
                if let Some(e) = t.expires_in {
                    m.insert("expires_in".into(), json!(e));
                }
                m.insert(
                    "team".into(),
                    json!({ "id": SLACK_TEAM_ID, "name": "Acme" }),
                );
                m.insert("enterprise".into(), Value::Null);
                m.insert("is_enterprise_install".into(), json!(false));
            }
            Provider::Slack => {
                let mut user = Map::new();
                user.insert("id".into(), json!(SLACK_USER_ID));
                user.insert("scope".into(), json!(scope));
                user.insert("access_token".into(), json!(t.access_token));
                user.insert("token_type".into(), json!("user"));
                if let Some(rt) = &t.refresh_token {
                    user.insert("refresh_token".into(), json!(rt));
                }
                if let Some(e) = t.expires_in {
                    user.insert("expires_in".into(), json!(e));
                }
                m.insert("ok".into(), json!(true));
                m.insert("app_id".into(), json!("A0KWFAKE01"));
                m.insert("authed_user".into(), Value::Object(user));
                m.insert(
                    "team".into(),
                    json!({ "id": SLACK_TEAM_ID, "name": "Acme" }),
                );
                m.insert("enterprise".into(), Value::Null);
                m.insert("is_enterprise_install".into(), json!(false));
            }
        }
        if let Some(claimed) = &self.knobs.advertised_expires_in {
            let holder = match m.get_mut("authed_user") {
                Some(Value::Object(user)) if user.contains_key("access_token") => user,
                _ => &mut m,
            };
            holder.insert("expires_in".into(), claimed.clone());
        }
        Value::Object(m)
    }

    /// Client authentication of a token-endpoint request.
    fn check_client(
        &self,
        params: &[(String, String)],
        basic: &Option<(String, String)>,
        secret_needed: bool,
    ) -> Result<(), Fail> {
        let id = param(params, "client_id").or(basic.as_ref().map(|b| b.0.as_str()));
        let secret = param(params, "client_secret").or(basic.as_ref().map(|b| b.1.as_str()));
        if id != Some(self.provider.client_id()) {
            return Err(Fail::UnknownClient);
        }
        match secret {
            Some(s) if s != self.provider.client_secret() => Err(Fail::BadSecret),
            None if secret_needed => Err(Fail::BadSecret),
            _ => Ok(()),
        }
    }

    fn grant(
        &mut self,
        params: &[(String, String)],
        basic: &Option<(String, String)>,
    ) -> Result<Value, Fail> {
        let grant_type = match (param(params, "grant_type"), self.provider) {
            (Some(g), _) => g.to_string(),
            // GitHub does not insist on grant_type for the code exchange.
            (None, Provider::Github) if param(params, "code").is_some() => {
                "authorization_code".to_string()
            }
            (None, _) => return Err(Fail::InvalidRequest),
        };
        match grant_type.as_str() {
            "authorization_code" => {
                self.check_client(params, basic, true)?;
                self.code_grant(params)
            }
            "refresh_token" => {
                self.check_client(params, basic, true)?;
                self.refresh_grant(params)
            }
            DEVICE_GRANT_TYPE if self.provider != Provider::Slack => {
                // GitHub's device flow has no client secret; Google's needs it.
                self.check_client(params, basic, self.provider == Provider::Google)?;
                self.device_grant(params)
            }
            _ => Err(Fail::UnsupportedGrant),
        }
    }

    fn code_grant(&mut self, params: &[(String, String)]) -> Result<Value, Fail> {
        let code = param(params, "code").ok_or(Fail::BadCode)?;
        let entry = self.codes.get_mut(code).ok_or(Fail::BadCode)?;
        if entry.client_id != self.provider.client_id() {
            return Err(Fail::BadCode);
        }
        if entry.used {
            // RFC 6749 §4.1.2: a code used twice revokes what it produced.
            if let Some(family) = entry.family {
                self.revoke_family(family);
                self.counters.family_revoked = true;
            }
            return Err(Fail::BadCode);
        }
        entry.used = true;
        if entry.issued.elapsed() > CODE_TTL {
            return Err(Fail::BadCode);
        }
        if let Some(expected) = &entry.redirect_uri {
            let given = param(params, "redirect_uri");
            let mismatch = match self.provider {
                Provider::Github => given.is_some_and(|g| g != expected),
                _ => given != Some(expected.as_str()),
            };
            if mismatch {
                return Err(Fail::RedirectMismatch);
            }
        }
        if let Some((challenge, method)) = &entry.challenge {
            let verifier = param(params, "code_verifier").ok_or(Fail::BadVerifier)?;
            let valid_shape = (43..=128).contains(&verifier.len())
                && verifier
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-._~".contains(&b));
            let derived = if method == "S256" {
                base64::engine::general_purpose::URL_SAFE_NO_PAD
                    .encode(Sha256::digest(verifier.as_bytes()))
            } else {
                verifier.to_string()
            };
            if !valid_shape || &derived != challenge {
                return Err(Fail::BadVerifier);
            }
        }
        let scopes = entry.scopes.clone();
        let bot_scopes = entry.bot_scopes.clone();
        let with_refresh = match self.provider {
            Provider::Google => entry.offline,
            _ => self.knobs.rotate,
        };
        let family = self.new_family();
        if let Some(e) = self.codes.get_mut(code) {
            e.family = Some(family);
        }
        let issued = self.issue(&scopes, family, with_refresh, "authorization_code");
        let mut body = self.success_body(&issued, false);
        if self.provider == Provider::Slack && !bot_scopes.is_empty() {
            // A bot token sits at the top level of Slack's answer.
            let bot = self.new_access_token(true);
            self.access.insert(
                bot.clone(),
                AccessEntry {
                    scopes: bot_scopes.clone(),
                    expires_at: None,
                    family,
                    revoked: false,
                    bot: true,
                },
            );
            if let Value::Object(m) = &mut body {
                m.insert("access_token".into(), json!(bot));
                m.insert("token_type".into(), json!("bot"));
                m.insert("scope".into(), json!(bot_scopes.join(",")));
                m.insert("bot_user_id".into(), json!("U0KWBOT001"));
            }
        }
        if self.provider == Provider::Slack && scopes.is_empty() {
            if let Some(Value::Object(user)) = body.get_mut("authed_user") {
                user.retain(|k, _| k == "id");
            }
        }
        Ok(body)
    }

    fn refresh_grant(&mut self, params: &[(String, String)]) -> Result<Value, Fail> {
        let token = param(params, "refresh_token").ok_or(Fail::InvalidRequest)?;
        if self.knobs.force_invalid_grant {
            return Err(Fail::BadRefresh);
        }
        let entry = self.refresh.get(token).ok_or(Fail::BadRefresh)?;
        let family = entry.family;
        if entry.revoked || self.families[family] {
            return Err(Fail::BadRefresh);
        }
        if entry.used {
            // Reuse of a rotated refresh token: someone else holds the family. Kill it.
            self.revoke_family(family);
            self.counters.family_revoked = true;
            return Err(Fail::BadRefresh);
        }
        let scopes = entry.scopes.clone();
        let rotate = self.knobs.rotate && !self.knobs.omit_refresh;
        if rotate {
            if let Some(e) = self.refresh.get_mut(token) {
                e.used = true;
            }
        }
        self.counters.successful_refreshes += 1;
        let issued = self.issue(&scopes, family, rotate, "refresh_token");
        Ok(self.success_body(&issued, true))
    }

    fn device_grant(&mut self, params: &[(String, String)]) -> Result<Value, Fail> {
        let code = param(params, "device_code").ok_or(Fail::InvalidRequest)?;
        let force = self.knobs.force_slow_down;
        let idx = self
            .devices
            .iter()
            .position(|d| d.device_code == code && d.client_id == self.provider.client_id())
            .ok_or(Fail::BadDeviceCode)?;
        let now = Instant::now();
        let d = &mut self.devices[idx];
        if d.state == DeviceState::Redeemed {
            return Err(Fail::BadDeviceCode);
        }
        if now >= d.expires {
            return Err(Fail::ExpiredDevice);
        }
        if d.state == DeviceState::Denied {
            return Err(Fail::Denied);
        }
        let last = d.last_poll.replace(now);
        if force > 0 {
            self.knobs.force_slow_down -= 1;
            d.interval += 5;
            return Err(Fail::SlowDown(d.interval));
        }
        if d.state == DeviceState::Pending {
            let interval = Duration::from_secs(d.interval);
            if let Some(last) = last {
                if now.duration_since(last) + POLL_TOLERANCE < interval {
                    d.interval += 5;
                    return Err(Fail::SlowDown(d.interval));
                }
            }
            return Err(Fail::Pending);
        }
        d.state = DeviceState::Redeemed;
        let scopes = d.scopes.clone();
        let family = self.new_family();
        let with_refresh = self.provider == Provider::Google || self.knobs.rotate;
        let issued = self.issue(&scopes, family, with_refresh, DEVICE_GRANT_TYPE);
        Ok(self.success_body(&issued, false))
    }
}

/// Render a token-endpoint failure the way `p` does.
fn render_failure(p: Provider, fail: Fail, form: bool) -> Response {
    let (code, desc): (&str, &str) = match (p, fail) {
        (Provider::Github, Fail::InvalidRequest) => ("invalid_request", "The request is missing a required parameter."),
        (Provider::Github, Fail::UnknownClient | Fail::BadSecret) => (
            "incorrect_client_credentials",
            "The client_id and/or client_secret passed are incorrect.",
        ),
        (Provider::Github, Fail::BadCode) => ("bad_verification_code", "The code passed is incorrect or expired."),
        (Provider::Github, Fail::BadVerifier) => (
            "bad_verification_code",
            "The code_verifier does not match the code_challenge supplied in the authorization request.",
        ),
        (Provider::Github, Fail::RedirectMismatch) => (
            "redirect_uri_mismatch",
            "The redirect_uri MUST match the registered callback URL for this application.",
        ),
        (Provider::Github, Fail::BadRefresh) => ("bad_refresh_token", "The refresh token passed is incorrect or expired."),
        (Provider::Github, Fail::Pending) => ("authorization_pending", "The authorization request is still pending."),
        (Provider::Github, Fail::SlowDown(_)) => (
            "slow_down",
            "Too many requests have been made in the same timeframe.",
        ),
        (Provider::Github, Fail::ExpiredDevice) => ("expired_token", "The `device_code` has expired."),
        (Provider::Github, Fail::Denied) => ("access_denied", "The authorization request was denied."),
        (Provider::Github, Fail::BadDeviceCode) => ("incorrect_device_code", "The device_code provided is not valid."),
        (Provider::Github, Fail::UnsupportedGrant) => ("unsupported_grant_type", "The grant type is not supported."),
        (Provider::Slack, f) => {
            let error = match f {
                Fail::InvalidRequest => "invalid_arguments",
                Fail::UnknownClient => "invalid_client_id",
                Fail::BadSecret => "bad_client_secret",
                Fail::BadCode => "invalid_code",
                Fail::BadVerifier => "invalid_code_verifier",
                Fail::RedirectMismatch => "bad_redirect_uri",
                Fail::BadRefresh => "invalid_refresh_token",
                _ => "invalid_grant_type",
            };
            return json_response(200, &json!({ "ok": false, "error": error }));
        }
        (Provider::Google, f) => {
            let (status, error, desc) = match f {
                Fail::InvalidRequest => (400, "invalid_request", "Missing required parameter."),
                Fail::UnknownClient => (401, "invalid_client", "The OAuth client was not found."),
                Fail::BadSecret => (401, "invalid_client", "Unauthorized"),
                Fail::BadCode => (400, "invalid_grant", "Malformed auth code."),
                Fail::BadVerifier => (400, "invalid_grant", "Invalid code verifier."),
                Fail::RedirectMismatch => (400, "redirect_uri_mismatch", "Bad Request"),
                Fail::BadRefresh => (400, "invalid_grant", "Token has been expired or revoked."),
                Fail::Pending => (428, "authorization_pending", "Precondition Required"),
                Fail::SlowDown(_) => (403, "slow_down", "Forbidden"),
                Fail::ExpiredDevice => (400, "expired_token", "Expired"),
                Fail::Denied => (403, "access_denied", "Forbidden"),
                Fail::BadDeviceCode => (400, "invalid_grant", "Malformed device code."),
                Fail::UnsupportedGrant => (400, "unsupported_grant_type", "Invalid grant_type."),
            };
            return json_response(status, &json!({ "error": error, "error_description": desc }));
        }
    };
    // GitHub answers 200 with an error body, form-encoded unless JSON was asked for.
    let mut m = Map::new();
    m.insert("error".into(), json!(code));
    m.insert("error_description".into(), json!(desc));
    m.insert(
        "error_uri".into(),
        json!(format!(
            "https://docs.github.com/apps/managing-oauth-apps/troubleshooting-oauth-app-access-token-request-errors/#{}",
            code.replace('_', "-")
        )),
    );
    if let Fail::SlowDown(interval) = fail {
        m.insert("interval".into(), json!(interval));
    }
    github_body(Value::Object(m), form)
}

/// GitHub's token endpoint answers `application/x-www-form-urlencoded` unless asked for JSON.
fn github_body(value: Value, form: bool) -> Response {
    if !form {
        return json_response(200, &value);
    }
    let mut out = url::form_urlencoded::Serializer::new(String::new());
    if let Value::Object(m) = &value {
        for (k, v) in m {
            let text = match v {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            out.append_pair(k, &text);
        }
    }
    super::bytes_response(
        200,
        "application/x-www-form-urlencoded; charset=utf-8",
        out.finish(),
    )
}

// ----- endpoints ------------------------------------------------------------------------------

/// `GET authorize`: checks the client and the request, then redirects to `redirect_uri` with a
/// single-use code bound to the PKCE challenge and the redirect URI.
pub(crate) fn authorize(st: &SharedState, p: Provider, r: &Req) -> Response {
    if r.method != axum::http::Method::GET && r.method != axum::http::Method::POST {
        return html_response(405, "405 Method Not Allowed", "Use GET.");
    }
    let q = |name: &str| r.query_get(name);
    if q("client_id") != Some(p.client_id()) {
        return html_response(
            400,
            "Error: invalid_client",
            "The OAuth client was not found (unknown client_id).",
        );
    }
    let Some(redirect) = q("redirect_uri") else {
        return html_response(
            400,
            "Error: invalid_request",
            "Missing required parameter: redirect_uri",
        );
    };
    let Ok(mut target) = url::Url::parse(redirect) else {
        return html_response(
            400,
            "Error: invalid_request",
            "Invalid parameter value for redirect_uri.",
        );
    };
    let loopback = matches!(
        target.host_str(),
        Some("127.0.0.1") | Some("localhost") | Some("[::1]")
    );
    if !(target.scheme() == "https" || (target.scheme() == "http" && loopback)) {
        return html_response(
            400,
            "Error: redirect_uri_mismatch",
            "The redirect URI is not registered for this client.",
        );
    }
    let state = q("state").map(str::to_string);
    let redirect_error = |mut target: url::Url, error: &str, desc: &str| {
        {
            let mut pairs = target.query_pairs_mut();
            pairs.append_pair("error", error);
            pairs.append_pair("error_description", desc);
            if let Some(s) = &state {
                pairs.append_pair("state", s);
            }
        }
        redirect_response(302, target.as_str())
    };
    match q("response_type") {
        Some("code") => {}
        None if p != Provider::Google => {}
        _ => {
            return redirect_error(
                target,
                "unsupported_response_type",
                "Only response_type=code is supported.",
            )
        }
    }
    let challenge = match q("code_challenge") {
        None => None,
        Some(c) => {
            let method = q("code_challenge_method").unwrap_or("plain");
            if method != "S256" && method != "plain" {
                return redirect_error(target, "invalid_request", "Invalid code_challenge_method.");
            }
            if !(43..=128).contains(&c.len()) {
                return redirect_error(target, "invalid_request", "Invalid code_challenge.");
            }
            Some((c.to_string(), method.to_string()))
        }
    };
    let (mut scopes, bot_scopes) = match p {
        Provider::Slack => (
            split_scopes(q("user_scope").unwrap_or("")),
            split_scopes(q("scope").unwrap_or("")),
        ),
        _ => (split_scopes(q("scope").unwrap_or("")), Vec::new()),
    };
    if p == Provider::Google && scopes.is_empty() {
        return html_response(
            400,
            "Error 400: invalid_request",
            "Missing required parameter: scope",
        );
    }
    if p == Provider::Slack && scopes.is_empty() && bot_scopes.is_empty() {
        return redirect_error(target, "invalid_scope", "No scopes were requested.");
    }
    let mut auth = lock(&st.auth);
    let pa = auth.get(p);
    pa.counters.authorizations += 1;
    if pa.knobs.deny_authorization {
        drop(auth);
        return redirect_error(
            target,
            "access_denied",
            "The user has denied your application access.",
        );
    }
    if let Some(granted) = &pa.knobs.scope_override {
        scopes = granted.clone();
    }
    let code = match p {
        Provider::Github => random_string(b"0123456789abcdef", 20),
        Provider::Slack => format!(
            "{}.{}.{}",
            random_string(b"0123456789", 12),
            random_string(b"0123456789", 13),
            random_string(b"0123456789abcdef", 64)
        ),
        Provider::Google => format!("4/0A{}", random_string(ALNUM, 70)),
    };
    pa.codes.insert(
        code.clone(),
        CodeEntry {
            client_id: p.client_id().to_string(),
            redirect_uri: Some(redirect.to_string()),
            scopes: scopes.clone(),
            bot_scopes,
            challenge,
            issued: Instant::now(),
            used: false,
            family: None,
            offline: q("access_type") == Some("offline"),
        },
    );
    drop(auth);
    {
        let mut pairs = target.query_pairs_mut();
        if let Some(s) = &state {
            pairs.append_pair("state", s);
        }
        pairs.append_pair("code", &code);
        if p == Provider::Google {
            pairs.append_pair("scope", &scopes.join(" "));
            pairs.append_pair("authuser", "0");
            pairs.append_pair("prompt", "consent");
        }
    }
    redirect_response(302, target.as_str())
}

/// The token endpoint of `p`, for every grant type.
pub(crate) async fn token_endpoint(st: &SharedState, p: Provider, r: &Req) -> Response {
    if r.method != axum::http::Method::POST {
        return html_response(405, "405 Method Not Allowed", "Use POST.");
    }
    let params = r.params_with_json();
    let (fail, delay, epoch) = {
        let mut auth = lock(&st.auth);
        let pa = auth.get(p);
        pa.counters.token_requests += 1;
        if param(&params, "grant_type") == Some("refresh_token") {
            pa.counters.refresh_count += 1;
        }
        let fail = (pa.knobs.fail_token > 0).then(|| {
            pa.knobs.fail_token -= 1;
            pa.knobs.fail_status
        });
        (fail, pa.knobs.token_delay, pa.knobs.token_epoch)
    };
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
        if lock(&st.auth).get(p).knobs.token_epoch != epoch {
            return outage_response(503);
        }
    }
    if let Some(status) = fail {
        return outage_response(status);
    }
    if let Some(echo) = st.take_token_echo(p, r) {
        return echo;
    }
    let form = p == Provider::Github && !r.accepts_json();
    let basic = r.basic_auth();
    let result = lock(&st.auth).get(p).grant(&params, &basic);
    match result {
        Ok(body) if p == Provider::Github => github_body(body, form),
        Ok(body) => {
            let mut resp = json_response(200, &body);
            set_header(&mut resp, "cache-control", "no-store");
            set_header(&mut resp, "pragma", "no-cache");
            resp
        }
        Err(fail) => render_failure(p, fail, form),
    }
}

/// RFC 8628 device authorization request.
pub(crate) fn device_code(st: &SharedState, p: Provider, r: &Req) -> Response {
    let form = p == Provider::Github && !r.accepts_json();
    if r.method != axum::http::Method::POST || p == Provider::Slack {
        return html_response(405, "405 Method Not Allowed", "Use POST.");
    }
    let params = r.params_with_json();
    if param(&params, "client_id") != Some(p.client_id()) {
        return render_failure(p, Fail::UnknownClient, form);
    }
    let scopes = split_scopes(param(&params, "scope").unwrap_or(""));
    let device_code = random_string(b"0123456789abcdef", 40);
    let letters = b"BCDFGHJKLMNPQRSTVWXZ";
    let user_code = format!(
        "{}-{}",
        random_string(letters, 4),
        random_string(letters, 4)
    );
    let mut auth = lock(&st.auth);
    let pa = auth.get(p);
    let interval = pa.knobs.device_interval;
    let ttl = pa.knobs.device_ttl;
    pa.devices.push(DeviceEntry {
        device_code: device_code.clone(),
        user_code: user_code.clone(),
        client_id: p.client_id().to_string(),
        scopes,
        expires: Instant::now() + ttl,
        interval,
        last_poll: None,
        state: DeviceState::Pending,
    });
    drop(auth);
    let base = st.base_url();
    let body = match p {
        Provider::Github => json!({
            "device_code": device_code,
            "user_code": user_code,
            "verification_uri": format!("{base}/github/login/device"),
            "expires_in": ttl.as_secs(),
            "interval": interval,
        }),
        // Google says `verification_url`, not RFC 8628's `verification_uri`.
        _ => json!({
            "device_code": device_code,
            "user_code": user_code,
            "expires_in": ttl.as_secs(),
            "interval": interval,
            "verification_url": format!("{base}/google/device"),
        }),
    };
    if p == Provider::Github {
        github_body(body, form)
    } else {
        json_response(200, &body)
    }
}

/// `DELETE /applications/{client_id}/grant` (whole grant) or `/token` (one token).
pub(crate) fn github_revoke(st: &SharedState, r: &Req, client_id: &str, whole: bool) -> Response {
    let not_found = || {
        json_response(
            404,
            &json!({
                "message": "Not Found",
                "documentation_url": "https://docs.github.com/rest/apps/oauth-applications#delete-an-app-authorization",
                "status": "404"
            }),
        )
    };
    if r.method != axum::http::Method::DELETE {
        return not_found();
    }
    let good_client = client_id == Provider::Github.client_id()
        && r.basic_auth()
            == Some((
                Provider::Github.client_id().to_string(),
                Provider::Github.client_secret().to_string(),
            ));
    if !good_client {
        return json_response(
            401,
            &json!({
                "message": "Bad credentials",
                "documentation_url": "https://docs.github.com/rest",
                "status": "401"
            }),
        );
    }
    let Some(token) = r.json().and_then(|v| {
        v.get("access_token")
            .and_then(Value::as_str)
            .map(str::to_string)
    }) else {
        return json_response(
            422,
            &json!({
                "message": "Invalid request.\n\n\"access_token\" wasn't supplied.",
                "documentation_url": "https://docs.github.com/rest/apps/oauth-applications#delete-an-app-authorization",
                "status": "422"
            }),
        );
    };
    let mut auth = lock(&st.auth);
    let pa = auth.get(Provider::Github);
    let Some(entry) = pa.access.get_mut(&token) else {
        return not_found();
    };
    if whole {
        let family = entry.family;
        pa.revoke_family(family);
    } else {
        entry.revoked = true;
    }
    pa.counters.revocations.push(token);
    super::empty_response(204)
}

/// Google (RFC 7009): `POST /revoke` with `token=…`; revokes the whole grant.
pub(crate) fn google_revoke(st: &SharedState, r: &Req) -> Response {
    let params = r.params_with_json();
    let Some(token) = param(&params, "token") else {
        return json_response(
            400,
            &json!({ "error": "invalid_request", "error_description": "Bad Request" }),
        );
    };
    if lock(&st.auth).get(Provider::Google).revoke_any(token) {
        json_response(200, &json!({}))
    } else {
        json_response(
            400,
            &json!({ "error": "invalid_token", "error_description": "Token expired or revoked" }),
        )
    }
}

/// Slack `auth.revoke` (called with the token itself); `false` when the token is not valid.
pub(crate) fn slack_revoke(st: &SharedState, token: &str, test: bool) -> bool {
    let mut auth = lock(&st.auth);
    let pa = auth.get(Provider::Slack);
    if !matches!(pa.check(token), TokenStatus::Valid { .. }) {
        return false;
    }
    if !test {
        pa.revoke_any(token);
    }
    true
}

// ----- knobs and counters on SharedState ------------------------------------------------------

impl SharedState {
    pub(crate) fn check_token(&self, p: Provider, token: &str) -> TokenStatus {
        lock(&self.auth).get_ref(p).check(token)
    }

    fn with_auth<T>(&self, provider: &str, f: impl FnOnce(&mut ProviderAuth) -> T) -> T {
        f(lock(&self.auth).get(Provider::from_name(provider)))
    }

    /// Make `access_token` valid for `provider` with these scopes; `expires_in: None` = never
    /// expires. The test then imports the same token into keyward.
    pub fn grant(
        &self,
        provider: &str,
        access_token: &str,
        scopes: &[&str],
        expires_in: Option<Duration>,
    ) {
        let scopes = scopes.iter().map(|s| s.to_string()).collect();
        self.with_auth(provider, |pa| {
            pa.register(access_token, None, scopes, expires_in);
        });
    }

    /// Like [`SharedState::grant`], with a refresh token in the same family (single-use and
    /// rotating for GitHub and Slack).
    pub fn grant_with_refresh(
        &self,
        provider: &str,
        access_token: &str,
        refresh_token: &str,
        scopes: &[&str],
        expires_in: Option<Duration>,
    ) {
        let scopes = scopes.iter().map(|s| s.to_string()).collect();
        self.with_auth(provider, |pa| {
            pa.register(access_token, Some(refresh_token), scopes, expires_in);
        });
    }

    /// Whether `token` is currently accepted by `provider`'s API.
    pub fn token_is_valid(&self, provider: &str, token: &str) -> bool {
        self.with_auth(provider, |pa| {
            matches!(pa.check(token), TokenStatus::Valid { .. })
        })
    }

    /// Whether `token` would currently be accepted as a refresh token.
    pub fn refresh_token_is_valid(&self, provider: &str, token: &str) -> bool {
        self.with_auth(provider, |pa| {
            pa.refresh
                .get(token)
                .is_some_and(|e| !e.used && !e.revoked && !pa.families[e.family])
        })
    }

    /// Make `token` (of any provider) expired now. Returns whether it was known.
    pub fn expire_access_token(&self, token: &str) -> bool {
        let mut auth = lock(&self.auth);
        for p in Provider::ALL {
            if let Some(e) = auth.get(p).access.get_mut(token) {
                e.expires_at = Some(Instant::now() - Duration::from_millis(1));
                return true;
            }
        }
        false
    }

    /// The next `n` token-endpoint requests answer `status` (5xx/429) with an HTML body.
    pub fn fail_token_endpoint(&self, provider: &str, n: u32, status: u16) {
        self.with_auth(provider, |pa| {
            pa.knobs.fail_token = n;
            pa.knobs.fail_status = status;
        });
    }

    /// Every token-endpoint request waits this long before it is answered.
    pub fn token_endpoint_delay(&self, provider: &str, delay: Duration) {
        self.with_auth(provider, |pa| pa.knobs.token_delay = delay);
    }

    /// Requests waiting out [`Self::token_endpoint_delay`] now are dropped unprocessed when
    /// their wait ends (their refresh token stays unused), as a provider never sees a request
    /// whose sender died before it was through; later requests are answered as usual.
    pub fn abandon_delayed_token_requests(&self, provider: &str) {
        self.with_auth(provider, |pa| pa.knobs.token_epoch += 1);
    }

    /// Token responses leave out `refresh_token` (and a refresh then keeps the old one valid).
    pub fn omit_refresh_token(&self, provider: &str, on: bool) {
        self.with_auth(provider, |pa| pa.knobs.omit_refresh = on);
    }

    /// Every refresh_token grant fails with the provider's invalid_grant equivalent.
    pub fn force_invalid_grant(&self, provider: &str, on: bool) {
        self.with_auth(provider, |pa| pa.knobs.force_invalid_grant = on);
    }

    /// Lifetime of access tokens issued from now on (GitHub 8 h, Slack 12 h, Google 3599 s).
    pub fn access_token_ttl(&self, provider: &str, ttl: Duration) {
        self.with_auth(provider, |pa| pa.knobs.access_ttl = ttl);
    }

    /// The authorize endpoint answers `error=access_denied` (the user clicked "Cancel").
    pub fn deny_authorization(&self, provider: &str, on: bool) {
        self.with_auth(provider, |pa| pa.knobs.deny_authorization = on);
    }

    /// Grant these scopes instead of the requested ones (the user unticked some); `None`
    /// restores "granted = requested".
    pub fn grant_scopes_override(&self, provider: &str, scopes: Option<&[&str]>) {
        let scopes = scopes.map(|s| s.iter().map(|x| x.to_string()).collect());
        self.with_auth(provider, |pa| pa.knobs.scope_override = scopes);
    }

    /// The polling interval announced for new device codes (default 1 s for fast tests).
    pub fn device_interval(&self, provider: &str, secs: u64) {
        self.with_auth(provider, |pa| pa.knobs.device_interval = secs);
    }

    /// Token responses claim this `expires_in` (any JSON value, e.g. an absurd number) while
    /// the tokens still live `access_token_ttl` at the fake; `None` tells the truth again.
    pub fn advertise_expires_in(&self, provider: &str, claimed: Option<Value>) {
        self.with_auth(provider, |pa| pa.knobs.advertised_expires_in = claimed);
    }

    /// The next `n` device-code polls answer `slow_down` (and the interval grows by 5 s).
    pub fn force_slow_down(&self, provider: &str, n: u32) {
        self.with_auth(provider, |pa| pa.knobs.force_slow_down = n);
    }

    fn with_device(&self, user_code: &str, f: impl FnOnce(&mut DeviceEntry)) -> bool {
        let mut auth = lock(&self.auth);
        for p in Provider::ALL {
            if let Some(d) = auth
                .get(p)
                .devices
                .iter_mut()
                .find(|d| d.user_code.eq_ignore_ascii_case(user_code))
            {
                f(d);
                return true;
            }
        }
        false
    }

    /// The user entered `user_code` and approved. Returns whether the code was known.
    pub fn approve_device(&self, user_code: &str) -> bool {
        self.with_device(user_code, |d| {
            if d.state == DeviceState::Pending {
                d.state = DeviceState::Approved;
            }
        })
    }

    /// The user entered `user_code` and denied.
    pub fn deny_device(&self, user_code: &str) -> bool {
        self.with_device(user_code, |d| {
            if d.state == DeviceState::Pending {
                d.state = DeviceState::Denied;
            }
        })
    }

    /// The device code behind `user_code` expires now.
    pub fn expire_device(&self, user_code: &str) -> bool {
        self.with_device(user_code, |d| d.expires = Instant::now())
    }

    /// User codes of device authorizations still waiting for the user, oldest first.
    pub fn pending_device_codes(&self, provider: &str) -> Vec<String> {
        self.with_auth(provider, |pa| {
            pa.devices
                .iter()
                .filter(|d| d.state == DeviceState::Pending && Instant::now() < d.expires)
                .map(|d| d.user_code.clone())
                .collect()
        })
    }

    /// Requests with grant_type=refresh_token that reached the token endpoint (any outcome).
    pub fn refresh_count(&self, provider: &str) -> u64 {
        self.with_auth(provider, |pa| pa.counters.refresh_count)
    }

    /// Refresh grants that produced a new access token.
    pub fn successful_refreshes(&self, provider: &str) -> u64 {
        self.with_auth(provider, |pa| pa.counters.successful_refreshes)
    }

    /// Every request that reached the token endpoint, any grant, any outcome.
    pub fn token_requests(&self, provider: &str) -> u64 {
        self.with_auth(provider, |pa| pa.counters.token_requests)
    }

    /// Requests that reached the authorize endpoint with a valid client and redirect URI.
    pub fn authorizations(&self, provider: &str) -> u64 {
        self.with_auth(provider, |pa| pa.counters.authorizations)
    }

    /// The tokens revoked through the provider's revocation endpoint, in order.
    pub fn revocations(&self, provider: &str) -> Vec<String> {
        self.with_auth(provider, |pa| pa.counters.revocations.clone())
    }

    /// Whether a token family was revoked because a used refresh token (or a used
    /// authorization code) was presented again.
    pub fn family_revoked(&self, provider: &str) -> bool {
        self.with_auth(provider, |pa| pa.counters.family_revoked)
    }

    /// Tokens issued by the token endpoint, in order.
    pub fn issued_tokens(&self, provider: &str) -> Vec<IssuedToken> {
        self.with_auth(provider, |pa| pa.counters.issued.clone())
    }
}
