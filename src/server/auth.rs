//! Who may talk to the HTTP server (invariant 9 of DESIGN.md).
//!
//! Every request except `GET /healthz` passes three checks, in this order:
//! 1. `Host` must name this server: a loopback name, the bound address, or an entry of
//!    `[server] allowed_hosts` — else 403. This defeats DNS rebinding, where a web page makes
//!    the browser send requests to 127.0.0.1 under the attacker's host name.
//! 2. `Origin`, when present (browsers), must be a loopback origin or an entry of
//!    `[server] allowed_origins` — else 403.
//! 3. `Authorization: Bearer …` must be a current API key (`kw_…`) or, with `[server.auth]`, an
//!    access token of the team's identity provider that [`Oidc::validate_access_token`] accepts
//!    — else 401 with `WWW-Authenticate: Bearer`. Keys and the identity provider's users are
//!    checked on every request through a [`users::KeyCache`] that forgets everything the moment
//!    a user is added or removed, so a removed user is locked out at once; the credential is then
//!    taken off the request, and what the MCP layer sees is only the [`AuthUser`] it belongs to.
//!
//! With `[server.auth]`, keyward is an OAuth 2.1 protected resource (MCP authorization, RFC
//! 9728): every 401 carries `WWW-Authenticate: Bearer resource_metadata="<public_url>/.well-known/
//! oauth-protected-resource/mcp", scope="<required scopes>"` (plus `error="invalid_token"` and a
//! description when a token was sent and refused), which is how an MCP client finds the
//! identity provider to sign its user in; a valid token without the required scopes gets 403
//! with `error="insufficient_scope"` and the whole scope set in the same one challenge.
//!
//! Which user a credential belongs to is decided in one place,
//! [`Authenticator::user_of_credential`], for the bearer of an MCP request and for the
//! `subject_token` of a token exchange ([`Authenticator::resolve_subject`], `super::exchange`):
//! an API key, or with `[server.auth]` the identity provider's access token (JWT), is accepted
//! alike on both paths.
//!
//! MCP sessions are bound to the user that created them ([`SessionOwners`]): a request that
//! carries another user's session id is answered 404, exactly like an unknown session, so it
//! learns nothing about it. The same table caps each user's live sessions (both transports
//! together, `[server] max_sessions_per_user`): a user opening one more loses the session they
//! used least recently, so one key cannot grow the server's memory without bound.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Mutex;

use crate::sync::lock;

use axum::response::{IntoResponse, Response};
use http::{header, HeaderMap, HeaderValue, StatusCode};

use super::oidc::{Oidc, TokenError};
use crate::config::ServerConfig;
use crate::vault::users::{self, Admission, KeyCache};

/// The user an HTTP request authenticated as. Inserted into the request's extensions by the
/// auth middleware; the handler reads it from there.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct AuthUser {
    pub name: String,
    pub credential: Credential,
}

/// What a request authenticated with, so long-lived sessions can be re-checked.
#[derive(Clone, PartialEq, Eq, Hash)]
pub enum Credential {
    /// SHA-256 of the API key used.
    ApiKey([u8; 32]),
    /// An access token of the identity provider (checked on every request; the session lives
    /// while the user is not removed).
    Oidc,
}

impl std::fmt::Debug for AuthUser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthUser")
            .field("name", &self.name)
            .finish()
    }
}

impl AuthUser {
    /// True while the key this user came in with is still theirs (an identity provider's user:
    /// while they are not removed).
    pub async fn still_valid(&self, keys: &KeyCache) -> bool {
        match &self.credential {
            // A store that cannot answer now cannot say the key was removed: the request goes
            // on and meets the store's own retryable error where it needs the store.
            Credential::ApiKey(hash) => match keys.lookup(hash).await {
                Ok(name) => name.as_deref() == Some(self.name.as_str()),
                Err(_) => true,
            },
            Credential::Oidc => {
                matches!(keys.admit_oidc(&self.name).await, Ok(Admission::Admitted))
            }
        }
    }
}

/// One allowed `Host`: a name or address, and optionally the one port it is allowed with.
#[derive(Debug, Clone, PartialEq, Eq)]
struct HostRule {
    host: String,
    port: Option<u16>,
}

/// Split `host[:port]` (IPv6 literals in brackets) into a lower-case host and a port.
fn split_host_port(value: &str) -> Option<(String, Option<u16>)> {
    let value = value.trim();
    if value.is_empty() {
        return None;
    }
    if let Some(rest) = value.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        let port = match after.strip_prefix(':') {
            Some(p) => Some(p.parse().ok()?),
            None if after.is_empty() => None,
            None => return None,
        };
        return Some((host.to_ascii_lowercase(), port));
    }
    match value.rsplit_once(':') {
        // A bare IPv6 address (no brackets) has several colons: take it whole.
        Some((host, port)) if !host.contains(':') => {
            Some((host.to_ascii_lowercase(), Some(port.parse().ok()?)))
        }
        _ => Some((value.to_ascii_lowercase(), None)),
    }
}

fn is_loopback_name(host: &str) -> bool {
    host == "localhost"
        || host.ends_with(".localhost")
        || host
            .parse::<std::net::IpAddr>()
            .map(|ip| ip.is_loopback())
            .unwrap_or(false)
}

/// The Host and Origin policy of one server.
#[derive(Debug, Clone)]
pub struct Access {
    hosts: Vec<HostRule>,
    origins: Vec<String>,
}

impl Access {
    /// Loopback names, the bound address, `public_url`, and the config's extra hosts and
    /// origins.
    pub fn new(bound: SocketAddr, config: &ServerConfig) -> Access {
        let mut hosts: Vec<HostRule> = ["localhost", "127.0.0.1", "::1"]
            .iter()
            .map(|h| HostRule {
                host: h.to_string(),
                port: None,
            })
            .collect();
        if !bound.ip().is_unspecified() {
            hosts.push(HostRule {
                host: bound.ip().to_string(),
                port: None,
            });
        }
        for entry in &config.allowed_hosts {
            if let Some((host, port)) = split_host_port(entry) {
                hosts.push(HostRule { host, port });
            }
        }
        let mut origins: Vec<String> = config
            .allowed_origins
            .iter()
            .map(|o| o.trim().trim_end_matches('/').to_ascii_lowercase())
            .collect();
        if let Some(public) = config
            .public_url
            .as_deref()
            .and_then(|u| url::Url::parse(u).ok())
        {
            if let Some(host) = public.host_str() {
                hosts.push(HostRule {
                    host: host
                        .trim_start_matches('[')
                        .trim_end_matches(']')
                        .to_ascii_lowercase(),
                    port: public.port(),
                });
            }
            origins.push(public.origin().ascii_serialization().to_ascii_lowercase());
        }
        Access { hosts, origins }
    }

    /// `Ok` when the `Host` header names this server.
    pub fn check_host(&self, headers: &HeaderMap) -> Result<(), Rejection> {
        let value = headers.get(header::HOST).and_then(|v| v.to_str().ok());
        let Some((host, port)) = value.and_then(split_host_port) else {
            return Err(forbidden("the Host header is missing or malformed"));
        };
        let allowed = self
            .hosts
            .iter()
            .any(|rule| rule.host == host && rule.port.is_none_or(|p| Some(p) == port));
        if allowed {
            Ok(())
        } else {
            Err(forbidden(&format!(
                "Host {host} is not allowed: add it to `allowed_hosts` in the [server] section of \
                 keyward's config.toml"
            )))
        }
    }

    /// `Ok` when there is no `Origin` or it is a loopback or configured origin.
    pub fn check_origin(&self, headers: &HeaderMap) -> Result<(), Rejection> {
        let Some(value) = headers.get(header::ORIGIN) else {
            return Ok(());
        };
        let Ok(origin) = value.to_str() else {
            return Err(forbidden("the Origin header is malformed"));
        };
        let normalized = origin.trim().trim_end_matches('/').to_ascii_lowercase();
        if self.origins.contains(&normalized) {
            return Ok(());
        }
        let loopback = url::Url::parse(&normalized).ok().is_some_and(|url| {
            matches!(url.scheme(), "http" | "https")
                && url
                    .host_str()
                    .map(|h| h.trim_start_matches('[').trim_end_matches(']'))
                    .is_some_and(is_loopback_name)
        });
        if loopback {
            Ok(())
        } else {
            Err(forbidden(&format!(
                "Origin {origin} is not allowed: add it to `allowed_origins` in the [server] section \
                 of keyward's config.toml"
            )))
        }
    }
}

/// Why a request was turned away by the Host/Origin checks; becomes its 403 response.
#[derive(Debug, PartialEq, Eq)]
pub enum Rejection {
    Forbidden(String),
}

impl IntoResponse for Rejection {
    fn into_response(self) -> Response {
        match self {
            Rejection::Forbidden(reason) => {
                tracing::warn!("403: {reason}");
                (StatusCode::FORBIDDEN, format!("403 Forbidden: {reason}\n")).into_response()
            }
        }
    }
}

/// Why a request's credential was refused.
#[derive(Debug, PartialEq, Eq)]
pub enum Refused {
    /// No credential at all.
    Missing,
    /// An API key that is not a current one.
    BadKey,
    /// An access token the identity provider's rules refuse (the reason, for
    /// `error_description`).
    BadToken(String),
    /// A valid token without the required scopes.
    InsufficientScope,
    /// The identity provider's keys could not be had: nobody can be checked now.
    Unavailable(String),
}

fn forbidden(reason: &str) -> Rejection {
    Rejection::Forbidden(reason.to_string())
}

/// What a token exchange says its `subject_token` is (RFC 8693 §3 token type identifiers).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubjectType {
    /// `urn:ietf:params:oauth:token-type:access_token`: a credential keyward's HTTP server
    /// accepts as a bearer (an API key, or the identity provider's access token).
    AccessToken,
    /// `urn:ietf:params:oauth:token-type:jwt`: the identity provider's JWT.
    Jwt,
}

/// Why a `subject_token` names no user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SubjectRefusal {
    /// Not a kind of credential this server takes (`unsupported_token_type`); says what is.
    Unsupported(&'static str),
    /// Not a current credential of any user (`invalid_grant`).
    Invalid,
    /// The identity provider's keys could not be had: nobody can be checked now (503).
    Unavailable(String),
}

/// Who may call `/mcp`: API keys, and the identity provider's access tokens when configured.
pub struct Authenticator {
    keys: std::sync::Arc<KeyCache>,
    oidc: Option<std::sync::Arc<Oidc>>,
    /// `<public_url>/.well-known/oauth-protected-resource/mcp` (with `[server.auth]`).
    resource_metadata: Option<String>,
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authenticator")
            .field("oidc", &self.oidc)
            .finish_non_exhaustive()
    }
}

impl Authenticator {
    pub fn new(
        keys: std::sync::Arc<KeyCache>,
        oidc: Option<std::sync::Arc<Oidc>>,
        public_base: Option<&str>,
    ) -> Authenticator {
        let resource_metadata = oidc
            .as_ref()
            .and(public_base)
            .map(|base| format!("{base}{METADATA_PATH}/mcp"));
        Authenticator {
            keys,
            oidc,
            resource_metadata,
        }
    }

    pub fn keys(&self) -> &std::sync::Arc<KeyCache> {
        &self.keys
    }

    /// Check the bearer credential of a request: an API key (`kw_…`) against the current keys
    /// (off the runtime's workers when the key is not in the cache), anything else — with
    /// `[server.auth]` — as the identity provider's access token.
    pub async fn authenticate(&self, headers: &HeaderMap) -> Result<AuthUser, Refused> {
        let Some(value) = headers.get(header::AUTHORIZATION) else {
            return Err(Refused::Missing);
        };
        let value = value.to_str().map_err(|_| Refused::BadKey)?;
        let Some((scheme, credential)) = value.trim().split_once(' ') else {
            return Err(Refused::BadKey);
        };
        if !scheme.eq_ignore_ascii_case("bearer") {
            return Err(Refused::Missing);
        }
        self.user_of_credential(credential.trim()).await
    }

    /// The user a credential belongs to — an API key (`kw_…`), or with `[server.auth]` any other
    /// credential as the identity provider's access token: the one decision behind an MCP
    /// request's bearer and a token exchange's subject.
    pub async fn user_of_credential(&self, credential: &str) -> Result<AuthUser, Refused> {
        match &self.oidc {
            Some(oidc) if !credential.starts_with(users::KEY_PREFIX) => {
                self.authenticate_token(oidc, credential).await
            }
            _ => {
                let key_hash = users::key_hash(credential);
                match self.keys.lookup(&key_hash).await {
                    Ok(Some(name)) => Ok(AuthUser {
                        name,
                        credential: Credential::ApiKey(key_hash),
                    }),
                    Ok(None) => Err(Refused::BadKey),
                    Err(e) => Err(Refused::Unavailable(format!(
                        "checking the API key failed: {e}"
                    ))),
                }
            }
        }
    }

    async fn authenticate_token(&self, oidc: &Oidc, token: &str) -> Result<AuthUser, Refused> {
        let claims = match oidc.validate_access_token(token).await {
            Ok(claims) => claims,
            Err(TokenError::Invalid(reason)) => {
                tracing::info!("refused an access token: {reason}");
                return Err(Refused::BadToken(reason));
            }
            Err(TokenError::InsufficientScope(missing)) => {
                tracing::info!(
                    "refused an access token: it lacks the scopes {}",
                    missing.join(" ")
                );
                return Err(Refused::InsufficientScope);
            }
            Err(TokenError::Unavailable(reason)) => return Err(Refused::Unavailable(reason)),
        };
        match self.keys.admit_oidc(&claims.user).await {
            Ok(Admission::Admitted) => Ok(AuthUser {
                name: claims.user,
                credential: Credential::Oidc,
            }),
            Ok(Admission::Removed) => Err(Refused::BadToken(format!(
                "the user {} was removed from keyward; its administrator can admit them again \
                 (`keyward users add {} --oidc`)",
                claims.user, claims.user
            ))),
            Err(e) => Err(Refused::Unavailable(format!(
                "checking the user failed: {e}"
            ))),
        }
    }

    /// The user whose credential a token exchange presents as its `subject_token`: exactly the
    /// user an MCP request with that credential as its bearer would act as. A JWT subject is
    /// taken only with an identity provider (`[server.auth]`), and validated as its access token.
    pub async fn resolve_subject(
        &self,
        token: &str,
        kind: SubjectType,
    ) -> Result<AuthUser, SubjectRefusal> {
        let resolved =
            match (kind, &self.oidc) {
                (SubjectType::AccessToken, _) => self.user_of_credential(token).await,
                (SubjectType::Jwt, Some(oidc)) => self.authenticate_token(oidc, token).await,
                (SubjectType::Jwt, None) => return Err(SubjectRefusal::Unsupported(
                    "this server takes no JWT subject tokens (no identity provider is configured \
                     in [server.auth]): send the user's keyward API key with subject_token_type \
                     urn:ietf:params:oauth:token-type:access_token",
                )),
            };
        resolved.map_err(|refused| match refused {
            Refused::Unavailable(reason) => SubjectRefusal::Unavailable(reason),
            Refused::Missing
            | Refused::BadKey
            | Refused::BadToken(_)
            | Refused::InsufficientScope => SubjectRefusal::Invalid,
        })
    }

    /// The answer to a refused credential: 401 (403 for missing scopes, 503 when the identity
    /// provider or the vault's store cannot answer) with the challenge that tells a client
    /// what to do.
    pub fn refuse(&self, refused: Refused) -> Response {
        let (Some(oidc), Some(metadata)) = (&self.oidc, &self.resource_metadata) else {
            return match refused {
                Refused::Unavailable(reason) => unavailable(&reason),
                other => unauthorized(other != Refused::Missing),
            };
        };
        let mut challenge = format!("Bearer resource_metadata=\"{metadata}\"");
        if !oidc.required_scopes().is_empty() {
            challenge.push_str(&format!(", scope=\"{}\"", oidc.required_scopes().join(" ")));
        }
        let (status, text) = match &refused {
            Refused::Missing => (
                StatusCode::UNAUTHORIZED,
                "401 Unauthorized: sign in with the identity provider named in the \
                 resource_metadata of the WWW-Authenticate header, or send an API key"
                    .to_string(),
            ),
            Refused::BadKey => {
                challenge.push_str(
                    ", error=\"invalid_token\", error_description=\"the API key is not valid\"",
                );
                (
                    StatusCode::UNAUTHORIZED,
                    "401 Unauthorized: the API key is not valid (it may have been removed); ask \
                     for a new one (`keyward users add NAME`)"
                        .to_string(),
                )
            }
            Refused::BadToken(reason) => {
                challenge.push_str(&format!(
                    ", error=\"invalid_token\", error_description=\"{}\"",
                    quoted(reason)
                ));
                (
                    StatusCode::UNAUTHORIZED,
                    format!("401 Unauthorized: {reason}; sign in again"),
                )
            }
            Refused::InsufficientScope => {
                challenge.push_str(", error=\"insufficient_scope\"");
                (
                    StatusCode::FORBIDDEN,
                    format!(
                        "403 Forbidden: the token lacks scopes keyward requires; sign in again \
                         asking for: {}",
                        oidc.required_scopes().join(" ")
                    ),
                )
            }
            Refused::Unavailable(reason) => return unavailable(reason),
        };
        let mut response = (status, format!("{text}\n")).into_response();
        if let Ok(value) = HeaderValue::from_str(&challenge) {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, value);
        }
        response
    }

    /// The RFC 9728 metadata document, with `[server.auth]`.
    pub fn metadata(&self, public_base: &str) -> Option<serde_json::Value> {
        let oidc = self.oidc.as_ref()?;
        Some(serde_json::json!({
            "resource": format!("{public_base}/mcp"),
            "authorization_servers": [oidc.issuer()],
            "scopes_supported": oidc.required_scopes(),
            "bearer_methods_supported": ["header"],
            "resource_name": "keyward",
        }))
    }
}

/// Where the protected resource metadata lives (RFC 9728 §3.1); `/mcp` is appended for the
/// resource's own path.
pub const METADATA_PATH: &str = "/.well-known/oauth-protected-resource";

/// `text` as a quoted-string's content (RFC 9110; RFC 6750 allows printable ASCII only): no
/// quotes, backslashes, control or non-ASCII characters.
fn quoted(text: &str) -> String {
    text.chars()
        .map(|c| match c {
            '"' | '\\' => '\'',
            ' '..='~' => c,
            _ => '?',
        })
        .collect()
}

/// 503: nobody's credential can be checked now (the identity provider's keys or the vault's
/// store are out of reach); retrying later may succeed.
fn unavailable(reason: &str) -> Response {
    tracing::warn!("cannot check credentials now: {reason}");
    (
        StatusCode::SERVICE_UNAVAILABLE,
        format!("503 Service Unavailable: keyward cannot check credentials now ({reason}); try again shortly\n"),
    )
        .into_response()
}

/// The 401 answer without an identity provider. `invalid`: a key was sent but is not a current
/// one.
pub fn unauthorized(invalid: bool) -> Response {
    let (challenge, text) = if invalid {
        (
            r#"Bearer realm="keyward", error="invalid_token""#,
            "401 Unauthorized: the API key is not valid (it may have been removed); ask for a new \
             one (`keyward users add NAME`)\n",
        )
    } else {
        (
            r#"Bearer realm="keyward""#,
            "401 Unauthorized: send `Authorization: Bearer <API key>`; create a key with \
             `keyward users add NAME`\n",
        )
    };
    let mut response = (StatusCode::UNAUTHORIZED, text).into_response();
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static(challenge),
    );
    response
}

/// Which user opened which session (Streamable HTTP and legacy SSE alike), when each was last
/// used, and the cap on sessions per user.
#[derive(Debug)]
pub struct SessionOwners {
    max_per_user: usize,
    table: Mutex<Table>,
}

/// The transport a session lives on, which decides how it is closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionKind {
    /// `/mcp`, rmcp's session manager.
    Streamable,
    /// `/sse` + `/messages`.
    LegacySse,
}

#[derive(Debug, Default)]
struct Table {
    sessions: HashMap<String, Session>,
    /// Ticks on every use: orders sessions by last use without trusting clocks to differ.
    clock: u64,
}

#[derive(Debug)]
struct Session {
    owner: AuthUser,
    transport: SessionKind,
    last_used: u64,
}

/// What a session id on a request turned out to be.
#[derive(Debug, PartialEq, Eq)]
pub enum Ownership {
    /// Opened by this user.
    Own,
    /// Opened by somebody else.
    Foreign,
    /// Not known here (never existed, or closed).
    Unknown,
}

impl SessionOwners {
    /// `max_per_user`: at least 1 (see [`ServerConfig::check_http_limits`]).
    pub fn new(max_per_user: usize) -> SessionOwners {
        SessionOwners {
            max_per_user: max_per_user.max(1),
            table: Mutex::new(Table::default()),
        }
    }

    /// Record a new session of `owner`. Returns the sessions of the same user that must now be
    /// closed to stay within the cap, least recently used first; they are already forgotten
    /// here, so requests naming them get 404 from now on.
    pub fn insert(
        &self,
        session: String,
        owner: AuthUser,
        transport: SessionKind,
    ) -> Vec<(String, SessionKind)> {
        let mut table = lock(&self.table);
        table.clock += 1;
        let last_used = table.clock;
        let name = owner.name.clone();
        table.sessions.insert(
            session,
            Session {
                owner,
                transport,
                last_used,
            },
        );
        let mut theirs: Vec<(u64, String)> = table
            .sessions
            .iter()
            .filter(|(_, s)| s.owner.name == name)
            .map(|(id, s)| (s.last_used, id.clone()))
            .collect();
        let Some(excess) = theirs.len().checked_sub(self.max_per_user) else {
            return Vec::new();
        };
        theirs.sort_unstable();
        theirs
            .into_iter()
            .take(excess)
            .filter_map(|(_, id)| table.sessions.remove(&id).map(|s| (id, s.transport)))
            .collect()
    }

    pub fn remove(&self, session: &str) {
        lock(&self.table).sessions.remove(session);
    }

    /// Whose session this is; a use by its owner counts as its latest use.
    pub fn check(&self, session: &str, user: &AuthUser) -> Ownership {
        let mut table = lock(&self.table);
        table.clock += 1;
        let now = table.clock;
        #[cfg(debug_assertions)]
        panic_once_at("session-owners");
        match table.sessions.get_mut(session) {
            Some(s) if s.owner.name == user.name => {
                s.last_used = now;
                Ownership::Own
            }
            Some(_) => Ownership::Foreign,
            None => Ownership::Unknown,
        }
    }

    /// Every session with its owner and transport.
    pub fn snapshot(&self) -> Vec<(String, AuthUser, SessionKind)> {
        lock(&self.table)
            .sessions
            .iter()
            .map(|(id, s)| (id.clone(), s.owner.clone(), s.transport))
            .collect()
    }
}

/// Fault injection for the test that a panic while a request holds the session table does not
/// break every later request (debug builds only, like [`crate::oauth::test_hooks`]):
/// `KEYWARD_TEST_PANIC_AT=session-owners` makes the first request that names a session panic
/// while holding the table's lock.
#[cfg(debug_assertions)]
fn panic_once_at(point: &str) {
    static FIRED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    if std::env::var("KEYWARD_TEST_PANIC_AT").ok().as_deref() == Some(point)
        && !FIRED.swap(true, std::sync::atomic::Ordering::SeqCst)
    {
        panic!("keyward-test-hook: panic at {point}");
    }
}

/// The 404 for an unknown or foreign session.
pub fn session_not_found() -> Response {
    (
        StatusCode::NOT_FOUND,
        "404 Not Found: no such session; start a new one (initialize)\n",
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (k, v) in pairs {
            map.insert(*k, HeaderValue::from_str(v).unwrap());
        }
        map
    }

    fn user(name: &str) -> AuthUser {
        AuthUser {
            name: name.into(),
            credential: Credential::ApiKey([name.len() as u8; 32]),
        }
    }

    #[test]
    fn sessions_beyond_the_cap_evict_the_users_least_recently_used() {
        let owners = SessionOwners::new(2);
        let (alice, bob) = (user("alice"), user("bob"));
        assert!(owners
            .insert("a1".into(), alice.clone(), SessionKind::LegacySse)
            .is_empty());
        assert!(owners
            .insert("a2".into(), alice.clone(), SessionKind::Streamable)
            .is_empty());
        // Bob's sessions are his own count.
        assert!(owners
            .insert("b1".into(), bob.clone(), SessionKind::Streamable)
            .is_empty());
        assert_eq!(owners.check("a1", &alice), Ownership::Own);
        assert_eq!(owners.check("a1", &bob), Ownership::Foreign);
        let evicted = owners.insert("a3".into(), alice.clone(), SessionKind::Streamable);
        assert_eq!(evicted, vec![("a2".to_string(), SessionKind::Streamable)]);
        assert_eq!(owners.check("a2", &alice), Ownership::Unknown);
        let evicted = owners.insert("a4".into(), alice.clone(), SessionKind::Streamable);
        assert_eq!(evicted, vec![("a1".to_string(), SessionKind::LegacySse)]);
        assert_eq!(owners.check("b1", &bob), Ownership::Own);
    }

    #[test]
    fn host_port_parsing() {
        assert_eq!(
            split_host_port("127.0.0.1:8787"),
            Some(("127.0.0.1".into(), Some(8787)))
        );
        assert_eq!(split_host_port("[::1]:80"), Some(("::1".into(), Some(80))));
        assert_eq!(
            split_host_port("LocalHost"),
            Some(("localhost".into(), None))
        );
        assert_eq!(split_host_port("evil.com:x"), None);
        assert_eq!(split_host_port(""), None);
    }

    #[test]
    fn hosts_and_origins() {
        let config = ServerConfig {
            allowed_hosts: vec!["mcp.example.com:8443".into()],
            allowed_origins: vec!["https://app.example.com".into()],
            ..Default::default()
        };
        let access = Access::new("127.0.0.1:8787".parse().unwrap(), &config);
        assert!(access
            .check_host(&headers(&[("host", "127.0.0.1:8787")]))
            .is_ok());
        assert!(access
            .check_host(&headers(&[("host", "localhost:8787")]))
            .is_ok());
        assert!(access
            .check_host(&headers(&[("host", "[::1]:8787")]))
            .is_ok());
        assert!(access
            .check_host(&headers(&[("host", "mcp.example.com:8443")]))
            .is_ok());
        assert!(access
            .check_host(&headers(&[("host", "mcp.example.com:9999")]))
            .is_err());
        assert!(access
            .check_host(&headers(&[("host", "evil.com")]))
            .is_err());
        assert!(access.check_host(&headers(&[])).is_err());

        assert!(access.check_origin(&headers(&[])).is_ok());
        assert!(access
            .check_origin(&headers(&[("origin", "http://localhost:6274")]))
            .is_ok());
        assert!(access
            .check_origin(&headers(&[("origin", "http://[::1]:3000")]))
            .is_ok());
        assert!(access
            .check_origin(&headers(&[("origin", "https://app.example.com")]))
            .is_ok());
        assert!(access
            .check_origin(&headers(&[("origin", "https://evil.com")]))
            .is_err());
        assert!(access
            .check_origin(&headers(&[("origin", "null")]))
            .is_err());
        assert!(access
            .check_origin(&headers(&[("origin", "http://localhost.evil.com")]))
            .is_err());
    }
}
