//! `POST /oauth/token`: an RFC 8693 token-exchange endpoint for the team's own tool servers.
//!
//! keyward's own tools never hand a token out. A backend that must call a provider itself (a
//! Python tool server, a CI bot) can instead be registered as a *client*
//! ([`crate::vault::clients`]) and exchange the credential of the user it acts for — the
//! `subject_token`, a credential keyward's HTTP server accepts as a bearer — for that user's
//! provider access token. The model still never sees a token; the registered backend does.
//!
//! One exchange, in order (each refusal is an RFC 6749 §5.2 / RFC 8693 §2.2.2 error, JSON,
//! never carrying a token):
//! 1. the form (`application/x-www-form-urlencoded`, at most [`MAX_FORM_BYTES`], no parameter
//!    twice except `audience`/`resource`) — `invalid_request`;
//! 2. the client, by HTTP Basic or `client_id`/`client_secret` in the form (one of them) —
//!    `invalid_client`, 401 with a `Basic` challenge; unauthenticated attempts are logged at
//!    debug, not audited (they name nobody);
//! 3. the client's rate limit (a token bucket per client in this process) — 429 with
//!    `Retry-After`;
//! 4. `grant_type` (`unsupported_grant_type`), `requested_token_type` and `actor_token`
//!    (`invalid_request`: only access tokens are issued, and there are no delegation chains);
//! 5. the subject: its type (`unsupported_token_type`), then the user it belongs to through
//!    [`Authenticator::resolve_subject`], the same decision as for an MCP request's bearer (an
//!    API key, or with `[server.auth]` the identity provider's access token or JWT) —
//!    `invalid_grant`, or 503 when the identity provider's keys cannot be had;
//! 6. the target: `audience` (a provider name) or `resource` (the provider's API base URL),
//!    and `account` (default `default`) — `invalid_target`; a provider or account the client
//!    was not registered for — `unauthorized_client`;
//! 7. the scopes — `invalid_scope`, see below;
//! 8. the user's connection (`invalid_target` when there is none, `invalid_grant` when it needs
//!    reconnecting), then its token through [`Executor::token_for`]: refreshed first when near
//!    expiry by the refresher every tool call uses, so 200 exchanges and tool calls on an
//!    expiring token make one refresh.
//!
//! Every exchange of an authenticated client is audited (`token-exchange`: client, user,
//! provider, account, scopes, outcome, latency) and noted on the connection, which `keyward
//! status` shows as its last exchange.
//!
//! # Scopes
//!
//! A provider token cannot be narrowed: a GitHub token granted `repo read:user` can do both,
//! whatever keyward says about it. So the client's registered scopes bound the *grant*, not a
//! label: an exchange succeeds only when everything the connection's grant covers is within the
//! client's allowance (scope implications counted: an allowance of `repo` covers a grant of
//! `public_repo`), and every scope the request names is within both. The answer's `scope` is
//! the grant — what the token can actually do, which is also the grant ∩ the allowance, and
//! covers the request. A grant of unknown scope (imported without `scope`) is refused: nothing
//! says the token stays within the allowance.
//!
//! # Lifetime
//!
//! `expires_in` is the provider token's remaining life (it was refreshed first if it was within
//! the refresh margin), capped by `[exchange] max_expires_in_secs`, so it never says more than
//! the token has; a token without a known expiry gets the cap.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::body::Body;
use axum::extract::Request;
use axum::response::{IntoResponse, Response};
use base64::Engine;
use http::{header, HeaderMap, HeaderValue, StatusCode};
use serde_json::json;

use super::auth::{AuthUser, Authenticator, SubjectRefusal, SubjectType};
use crate::catalog::{missing_scopes, split_scopes, Provider};
use crate::config::ExchangeConfig;
use crate::exec::Executor;
use crate::oauth::refresh::RefreshError;
use crate::secret::{Redactor, SecretString};
use crate::tool_error::connect_command;
use crate::vault::clients::{self, Client, LastExchange};
use crate::vault::{AuditEntry, ConnKey, Connection, ConnectionStatus, DEFAULT_ACCOUNT};

/// The grant type of RFC 8693.
pub const GRANT_TYPE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
/// The token type of an access token (RFC 8693 §3): what keyward issues, and what a keyward API
/// key is as a subject.
pub const ACCESS_TOKEN_TYPE: &str = "urn:ietf:params:oauth:token-type:access_token";
/// The token type of a JWT (RFC 8693 §3): an identity provider's token as a subject.
pub const JWT_TOKEN_TYPE: &str = "urn:ietf:params:oauth:token-type:jwt";
/// The largest form accepted: a request carries a few short parameters and two credentials.
pub const MAX_FORM_BYTES: usize = 16 * 1024;
/// The path of the endpoint.
pub const TOKEN_PATH: &str = "/oauth/token";
/// Where RFC 8414 metadata lives.
pub const METADATA_PATH: &str = "/.well-known/oauth-authorization-server";

/// The error codes of RFC 6749 §5.2 and RFC 8693 §2.2.2 this endpoint answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    InvalidRequest,
    InvalidClient,
    InvalidGrant,
    UnauthorizedClient,
    UnsupportedGrantType,
    InvalidScope,
    InvalidTarget,
    UnsupportedTokenType,
    /// The client's rate limit (429), or a provider that failed for now (503).
    TemporarilyUnavailable,
    /// keyward itself failed (the vault, a record that does not open, its OAuth client).
    ServerError,
}

impl ErrorCode {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::InvalidRequest => "invalid_request",
            ErrorCode::InvalidClient => "invalid_client",
            ErrorCode::InvalidGrant => "invalid_grant",
            ErrorCode::UnauthorizedClient => "unauthorized_client",
            ErrorCode::UnsupportedGrantType => "unsupported_grant_type",
            ErrorCode::InvalidScope => "invalid_scope",
            ErrorCode::InvalidTarget => "invalid_target",
            ErrorCode::UnsupportedTokenType => "unsupported_token_type",
            ErrorCode::TemporarilyUnavailable => "temporarily_unavailable",
            ErrorCode::ServerError => "server_error",
        }
    }
}

/// A refused exchange: the error code, what happened and what to do, and how it is answered.
#[derive(Debug)]
pub struct Refusal {
    code: ErrorCode,
    description: String,
    status: StatusCode,
    /// Seconds, for 429 and 503.
    retry_after: Option<u64>,
}

impl Refusal {
    fn new(code: ErrorCode, description: impl Into<String>) -> Refusal {
        let status = match code {
            ErrorCode::InvalidClient => StatusCode::UNAUTHORIZED,
            ErrorCode::ServerError => StatusCode::INTERNAL_SERVER_ERROR,
            ErrorCode::TemporarilyUnavailable => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::BAD_REQUEST,
        };
        Refusal {
            code,
            description: description.into(),
            status,
            retry_after: None,
        }
    }

    fn rate_limited(retry_after: u64) -> Refusal {
        Refusal {
            status: StatusCode::TOO_MANY_REQUESTS,
            retry_after: Some(retry_after),
            ..Refusal::new(
                ErrorCode::TemporarilyUnavailable,
                format!(
                    "this client made more exchanges than its rate limit allows: retry in \
                     {retry_after} s, or raise rate_limit_per_minute / rate_limit_burst in the \
                     [exchange] section of keyward's config.toml"
                ),
            )
        }
    }

    pub fn code(&self) -> ErrorCode {
        self.code
    }

    fn redacted(mut self, redactor: &Redactor) -> Refusal {
        redactor.scrub(&mut self.description);
        self
    }
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        let body = json!({
            "error": self.code.as_str(),
            "error_description": description_text(&self.description),
        });
        let mut response = (self.status, axum::Json(body)).into_response();
        let headers = response.headers_mut();
        no_store(headers);
        if self.code == ErrorCode::InvalidClient {
            headers.insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static(r#"Basic realm="keyward""#),
            );
        }
        if let Some(secs) = self.retry_after {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        response
    }
}

/// RFC 6749 §5.2 allows `error_description` only printable ASCII without `"` and `\`.
fn description_text(text: &str) -> String {
    text.chars()
        .map(|c| match c {
            '"' => '\'',
            '\\' => '/',
            '\u{2014}' | '\u{2013}' => '-',
            c if (' '..='~').contains(&c) => c,
            _ => '?',
        })
        .collect()
}

/// Token responses and their errors are never cached (RFC 6749 §5.1).
fn no_store(headers: &mut HeaderMap) {
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
}

/// The endpoint's state in one `keyward serve --http`.
pub struct Exchange {
    executor: Arc<Executor>,
    auth: Arc<Authenticator>,
    config: ExchangeConfig,
    limiter: RateLimiter,
    /// `[server] public_url`, the metadata's issuer; without it, the URL a request reached.
    issuer: Option<String>,
}

/// What a handled request tells the HTTP server beside its answer.
pub struct Handled {
    pub response: Response,
    /// A registered client authenticated: the connection no longer counts as unauthenticated.
    pub client_authenticated: bool,
}

/// The form, its parameters by name (several values only where RFC 8693 allows them).
struct Form {
    params: HashMap<String, Vec<String>>,
}

impl Form {
    /// Parse and check the body. Secrets in it (`client_secret`, `subject_token`) are read out
    /// through [`Form::secret`].
    fn parse(headers: &HeaderMap, body: &[u8]) -> Result<Form, Refusal> {
        let form_type = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .is_some_and(|v| {
                v.trim()
                    .eq_ignore_ascii_case("application/x-www-form-urlencoded")
            });
        if !form_type {
            return Err(Refusal::new(
                ErrorCode::InvalidRequest,
                "send the request as a form: Content-Type: application/x-www-form-urlencoded",
            ));
        }
        let mut params: HashMap<String, Vec<String>> = HashMap::new();
        for (name, value) in url::form_urlencoded::parse(body) {
            // RFC 6749 §3.1: a parameter without a value is as if it were not sent.
            if value.is_empty() {
                continue;
            }
            params
                .entry(name.into_owned())
                .or_default()
                .push(value.into_owned());
        }
        for (name, values) in &params {
            if values.len() > 1 && name != "audience" && name != "resource" {
                return Err(Refusal::new(
                    ErrorCode::InvalidRequest,
                    format!("the parameter {name} is sent more than once; send it once"),
                ));
            }
        }
        Ok(Form { params })
    }

    fn one(&self, name: &str) -> Option<&str> {
        self.params
            .get(name)
            .and_then(|v| v.first())
            .map(String::as_str)
    }

    fn all(&self, name: &str) -> &[String] {
        self.params.get(name).map(Vec::as_slice).unwrap_or(&[])
    }

    /// A secret parameter, taken out of the form.
    fn secret(&mut self, name: &str) -> Option<SecretString> {
        self.params
            .remove(name)
            .and_then(|mut v| v.pop())
            .map(SecretString::new)
    }
}

/// The client credentials of a request: HTTP Basic (RFC 6749 §2.3.1, both parts
/// form-urlencoded) or the form's `client_id` and `client_secret`, never both.
fn client_credentials(
    headers: &HeaderMap,
    form: &mut Form,
) -> Result<(String, SecretString), Refusal> {
    let unauthenticated = |why: &str| Refusal::new(ErrorCode::InvalidClient, why.to_string());
    let form_id = form.one("client_id").map(String::from);
    let form_secret = form.secret("client_secret");
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return match (form_id, form_secret) {
            (Some(id), Some(secret)) => Ok((id, secret)),
            _ => Err(unauthenticated(
                "authenticate the client: HTTP Basic with its client_id and secret, or the form \
                 fields client_id and client_secret (`keyward clients add NAME` makes them)",
            )),
        };
    };
    if form_secret.is_some() {
        return Err(Refusal::new(
            ErrorCode::InvalidRequest,
            "the client authenticated twice (HTTP Basic and client_secret in the form): use one",
        ));
    }
    let malformed = || {
        unauthenticated(
            "the Authorization header is not HTTP Basic with client_id:client_secret; send \
             `Authorization: Basic base64(client_id:client_secret)`",
        )
    };
    let value = value.to_str().map_err(|_| malformed())?;
    let (scheme, encoded) = value.trim().split_once(' ').ok_or_else(malformed)?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return Err(malformed());
    }
    let decoded = zeroize::Zeroizing::new(
        base64::engine::general_purpose::STANDARD
            .decode(encoded.trim())
            .map_err(|_| malformed())?,
    );
    let text = std::str::from_utf8(&decoded).map_err(|_| malformed())?;
    let (id, secret) = text.split_once(':').ok_or_else(malformed)?;
    let id = form_decode(id);
    let secret = SecretString::new(form_decode(secret));
    if form_id.is_some_and(|form_id| form_id != id) {
        return Err(Refusal::new(
            ErrorCode::InvalidRequest,
            "the form's client_id is not the one of the HTTP Basic credentials",
        ));
    }
    Ok((id, secret))
}

/// One part of HTTP Basic client credentials, which RFC 6749 §2.3.1 form-urlencodes.
fn form_decode(text: &str) -> String {
    url::form_urlencoded::parse(format!("v={text}").as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default()
}

/// Per-client token buckets: `burst` exchanges at once, refilled at `per_minute`.
struct RateLimiter {
    per_second: f64,
    burst: f64,
    buckets: Mutex<HashMap<String, Bucket>>,
}

struct Bucket {
    tokens: f64,
    at: Instant,
}

impl RateLimiter {
    fn new(config: &ExchangeConfig) -> RateLimiter {
        RateLimiter {
            per_second: f64::from(config.rate_limit_per_minute.max(1)) / 60.0,
            burst: f64::from(config.rate_limit_burst.max(1)),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Take one exchange from `client`'s bucket; `Err(secs)`: none left, retry after `secs`.
    fn take(&self, client: &str) -> Result<(), u64> {
        let now = Instant::now();
        let mut buckets = crate::sync::lock(&self.buckets);
        let bucket = buckets.entry(client.to_string()).or_insert(Bucket {
            tokens: self.burst,
            at: now,
        });
        let refill = now.duration_since(bucket.at).as_secs_f64() * self.per_second;
        bucket.tokens = (bucket.tokens + refill).min(self.burst);
        bucket.at = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            let wait = (1.0 - bucket.tokens) / self.per_second;
            Err((wait.ceil() as u64).max(1))
        }
    }
}

/// What an exchange was about, as far as it got: the audit entry's fields.
#[derive(Default)]
struct Subject {
    user: Option<String>,
    provider: Option<String>,
    account: Option<String>,
    scopes: Option<Vec<String>>,
    /// Set once the user's connection was found: its last exchange is noted for `status`.
    connection: Option<ConnKey>,
}

impl Exchange {
    pub fn new(
        executor: Arc<Executor>,
        auth: Arc<Authenticator>,
        config: ExchangeConfig,
        issuer: Option<String>,
    ) -> Exchange {
        Exchange {
            limiter: RateLimiter::new(&config),
            executor,
            auth,
            config,
            issuer,
        }
    }

    /// Answer one `POST /oauth/token` (Host and Origin were checked by the caller).
    pub async fn handle(&self, request: Request) -> Handled {
        let started = Instant::now();
        let (parts, body) = request.into_parts();
        let body = match axum::body::to_bytes(Body::new(body), MAX_FORM_BYTES).await {
            Ok(body) => zeroize::Zeroizing::new(body.to_vec()),
            Err(_) => {
                return unauthenticated(Refusal::new(
                    ErrorCode::InvalidRequest,
                    format!("the form is larger than {MAX_FORM_BYTES} bytes, or did not arrive"),
                ))
            }
        };
        let mut form = match Form::parse(&parts.headers, &body) {
            Ok(form) => form,
            Err(refusal) => return unauthenticated(refusal),
        };
        // The request's own secrets, scrubbed from whatever is answered, logged or audited: a
        // client that puts one in another parameter must not find it quoted back.
        let subject_token = form.secret("subject_token");
        let mut own = Redactor::of(subject_token.as_ref());
        let client = match self.authenticate(&parts.headers, &mut form, &mut own).await {
            Ok(client) => client,
            Err(refusal) => {
                let refusal = refusal.redacted(&own);
                tracing::debug!(
                    error = refusal.code.as_str(),
                    "token exchange refused before a client authenticated: {}",
                    refusal.description
                );
                return unauthenticated(refusal);
            }
        };
        let mut subject = Subject::default();
        let outcome = match self.limiter.take(&client.name) {
            Err(secs) => Err(Refusal::rate_limited(secs)),
            Ok(()) => {
                self.exchange(&client, &form, subject_token.as_ref(), &mut subject)
                    .await
            }
        }
        .map_err(|refusal| refusal.redacted(&own));
        let mut audit = AuditEntry::new(
            subject.user.as_deref().unwrap_or("-"),
            "token-exchange",
            "ok",
        );
        audit.client = Some(client.name.clone());
        audit.provider = subject.provider.as_deref().map(|p| own.text(p));
        audit.account = subject.account.as_deref().map(|a| own.text(a));
        audit.scopes = subject.scopes.clone();
        let vault = self.executor.vault();
        if let Some(key) = &subject.connection {
            let note = LastExchange {
                time: chrono::Utc::now().timestamp(),
                client: client.name.clone(),
                outcome: match &outcome {
                    Ok(_) => "ok".to_string(),
                    Err(refusal) => refusal.code.as_str().to_string(),
                },
            };
            vault.note_exchange(key, note).await;
        }
        let response = match outcome {
            Ok((conn, answer)) => {
                audit.latency_ms = Some(started.elapsed().as_secs_f64() * 1000.0);
                vault.audit(&audit).await;
                tracing::info!(
                    client = client.name,
                    connection = %conn.key,
                    "token exchange: issued the connection's access token"
                );
                answer
            }
            Err(refusal) => {
                audit.outcome =
                    format!("error: {}: {}", refusal.code.as_str(), refusal.description);
                audit.latency_ms = Some(started.elapsed().as_secs_f64() * 1000.0);
                vault.audit(&audit).await;
                tracing::info!(
                    client = client.name,
                    error = refusal.code.as_str(),
                    "token exchange refused: {}",
                    refusal.description
                );
                refusal.into_response()
            }
        };
        Handled {
            response,
            client_authenticated: true,
        }
    }

    /// The client of the request; its secret joins `own`.
    async fn authenticate(
        &self,
        headers: &HeaderMap,
        form: &mut Form,
        own: &mut Redactor,
    ) -> Result<Client, Refusal> {
        let (id, secret) = client_credentials(headers, form)?;
        own.add(&secret);
        clients::authenticate(self.executor.vault(), &id, secret.expose())
            .await
            .ok_or_else(|| {
                Refusal::new(
                    ErrorCode::InvalidClient,
                    "unknown client, or a wrong secret: `keyward clients list` lists the \
                     clients; `keyward clients remove NAME` and `keyward clients add NAME ...` \
                     make a new secret",
                )
            })
    }

    /// Steps 4 to 8 of the module docs, filling in `subject` as they learn it.
    async fn exchange(
        &self,
        client: &Client,
        form: &Form,
        subject_token: Option<&SecretString>,
        subject: &mut Subject,
    ) -> Result<(Connection, Response), Refusal> {
        match form.one("grant_type") {
            Some(GRANT_TYPE) => {}
            Some(_) => {
                return Err(Refusal::new(
                    ErrorCode::UnsupportedGrantType,
                    format!("this endpoint serves only grant_type={GRANT_TYPE}"),
                ))
            }
            None => {
                return Err(Refusal::new(
                    ErrorCode::InvalidRequest,
                    format!("grant_type is missing: send grant_type={GRANT_TYPE}"),
                ))
            }
        }
        if form
            .one("requested_token_type")
            .is_some_and(|t| t != ACCESS_TOKEN_TYPE)
        {
            return Err(Refusal::new(
                ErrorCode::InvalidRequest,
                format!(
                    "only provider access tokens are issued: leave requested_token_type out or \
                     send {ACCESS_TOKEN_TYPE}"
                ),
            ));
        }
        if form.one("actor_token").is_some() || form.one("actor_token_type").is_some() {
            return Err(Refusal::new(
                ErrorCode::InvalidRequest,
                "actor_token is not supported: the registered client is the only actor",
            ));
        }
        let user = self.subject_user(form, subject_token).await?;
        subject.user = Some(user.name.clone());

        let provider = self.target(form)?;
        subject.provider = Some(provider.name.clone());
        if !client.allowance.providers.contains(&provider.name) {
            return Err(Refusal::new(
                ErrorCode::UnauthorizedClient,
                format!(
                    "client {} is not registered for {}: register it again with the provider \
                     (`keyward clients remove {0}`, then `keyward clients add {0} --providers LIST --scopes SCOPES`)",
                    client.name, provider.name
                ),
            ));
        }
        let account = form.one("account").unwrap_or(DEFAULT_ACCOUNT).to_string();
        subject.account = Some(account.clone());
        let key = ConnKey::new(&user.name, &provider.name, &account).map_err(|_| {
            Refusal::new(
                ErrorCode::InvalidTarget,
                "account is not a valid account name (1-128 characters from A-Z a-z 0-9 . _ @ + -)",
            )
        })?;
        if !client.allowance.accounts.is_empty() && !client.allowance.accounts.contains(&account) {
            return Err(Refusal::new(
                ErrorCode::UnauthorizedClient,
                format!(
                    "client {} may get tokens of the accounts {} only, not {account}",
                    client.name,
                    client.allowance.accounts.join(", ")
                ),
            ));
        }
        let requested = form.one("scope").map(split_scopes).unwrap_or_default();
        subject.scopes = (!requested.is_empty()).then(|| requested.clone());
        let beyond = missing_scopes(provider, &client.allowance.scopes, &requested);
        if !beyond.is_empty() {
            return Err(Refusal::new(
                ErrorCode::InvalidScope,
                format!(
                    "client {} may not ask for {}: it is registered for the scopes {}",
                    client.name,
                    beyond.join(" "),
                    client.allowance.scopes.join(" ")
                ),
            ));
        }

        let conn = self.connection(&key).await?;
        subject.connection = Some(key.clone());
        check_grant(client, provider, &conn, &requested)?;
        let own = Redactor::of(
            std::iter::once(&conn.record.access_token).chain(&conn.record.refresh_token),
        );
        let conn = self
            .executor
            .token_for(conn)
            .await
            .map_err(|e| refresh_refusal(e, &own))?;
        // A refresh may restate the grant: what is handed out must still be within bounds.
        check_grant(client, provider, &conn, &requested)?;
        subject.scopes = Some(conn.record.scopes.clone());
        let answer = self.answer(&conn);
        Ok((conn, answer))
    }

    /// Step 5: the user whose credential the request presents.
    async fn subject_user(
        &self,
        form: &Form,
        token: Option<&SecretString>,
    ) -> Result<AuthUser, Refusal> {
        let kind = match form.one("subject_token_type") {
            Some(ACCESS_TOKEN_TYPE) => SubjectType::AccessToken,
            Some(JWT_TOKEN_TYPE) => SubjectType::Jwt,
            Some(_) => {
                return Err(Refusal::new(
                    ErrorCode::UnsupportedTokenType,
                    format!(
                        "subject_token_type must be {ACCESS_TOKEN_TYPE} (a keyward API key) or \
                         {JWT_TOKEN_TYPE}"
                    ),
                ))
            }
            None => {
                return Err(Refusal::new(
                    ErrorCode::InvalidRequest,
                    format!(
                        "subject_token_type is missing: send {ACCESS_TOKEN_TYPE} with the user's \
                         keyward API key as subject_token"
                    ),
                ))
            }
        };
        let Some(token) = token else {
            return Err(Refusal::new(
                ErrorCode::InvalidRequest,
                "subject_token is missing: send the credential of the user the exchange is for \
                 (their keyward API key)",
            ));
        };
        self.auth
            .resolve_subject(token.expose(), kind)
            .await
            .map_err(|refusal| match refusal {
                SubjectRefusal::Unsupported(why) => {
                    Refusal::new(ErrorCode::UnsupportedTokenType, why)
                }
                SubjectRefusal::Unavailable(reason) => Refusal {
                    retry_after: Some(5),
                    ..Refusal::new(
                        ErrorCode::TemporarilyUnavailable,
                        format!("the subject cannot be checked now: {reason}"),
                    )
                },
                SubjectRefusal::Invalid => Refusal::new(
                    ErrorCode::InvalidGrant,
                    "subject_token is not a current credential of any user (a removed user's key, \
                     a typo?): `keyward users add NAME` makes a key",
                ),
            })
    }

    /// Step 6: the provider named by `audience` or `resource` (one, however often named).
    fn target(&self, form: &Form) -> Result<&Provider, Refusal> {
        let catalog = self.executor.catalog();
        let mut named: Vec<&Provider> = Vec::new();
        for audience in form.all("audience") {
            let provider = catalog.provider(audience).ok_or_else(|| {
                Refusal::new(
                    ErrorCode::InvalidTarget,
                    format!(
                        "unknown audience: name a provider ({})",
                        provider_names(catalog)
                    ),
                )
            })?;
            named.push(provider);
        }
        for resource in form.all("resource") {
            let wanted = resource.trim_end_matches('/');
            let provider = catalog
                .providers()
                .find(|p| p.base.as_str().trim_end_matches('/') == wanted)
                .ok_or_else(|| {
                    Refusal::new(
                        ErrorCode::InvalidTarget,
                        format!(
                            "unknown resource: give a provider's API base URL ({}), \
                             or its name as audience",
                            catalog
                                .providers()
                                .map(|p| p.base.as_str().trim_end_matches('/').to_string())
                                .collect::<Vec<_>>()
                                .join(", ")
                        ),
                    )
                })?;
            named.push(provider);
        }
        let Some(first) = named.first() else {
            return Err(Refusal::new(
                ErrorCode::InvalidRequest,
                format!(
                    "name the provider: audience={} (or resource=its API base URL)",
                    provider_names(catalog)
                ),
            ));
        };
        if named.iter().any(|p| p.name != first.name) {
            return Err(Refusal::new(
                ErrorCode::InvalidTarget,
                "one exchange is for one provider: the audience and resource parameters name \
                 several",
            ));
        }
        Ok(first)
    }

    /// Step 8's read: the user's connection, usable.
    async fn connection(&self, key: &ConnKey) -> Result<Connection, Refusal> {
        let found = self.executor.vault().get(key).await;
        let conn = match found {
            Ok(Some(conn)) => conn,
            Ok(None) => {
                return Err(Refusal::new(
                    ErrorCode::InvalidTarget,
                    format!(
                        "user {} has no {} connection for account {}: they connect it with `{}`",
                        key.user,
                        key.provider,
                        key.account,
                        connect_command(key)
                    ),
                ))
            }
            // A record that does not open names itself and the fix.
            Err(e) => return Err(Refusal::new(ErrorCode::ServerError, e.to_string())),
        };
        if let ConnectionStatus::NeedsReconnect { reason } = &conn.record.status {
            return Err(Refusal::new(
                ErrorCode::InvalidGrant,
                format!(
                    "the {} connection {key} needs reconnecting ({reason}): the user runs `{}`",
                    key.provider,
                    connect_command(key)
                ),
            ));
        }
        Ok(conn)
    }

    /// The RFC 8693 §2.2.1 answer carrying `conn`'s access token.
    fn answer(&self, conn: &Connection) -> Response {
        let now = chrono::Utc::now().timestamp();
        let cap = self.config.max_expires_in_secs;
        let expires_in = match conn.record.expires_in(now) {
            Some(left) => u64::try_from(left.max(0)).unwrap_or(0).min(cap),
            None => cap,
        };
        let body = json!({
            "access_token": conn.record.access_token.expose(),
            "issued_token_type": ACCESS_TOKEN_TYPE,
            "token_type": "Bearer",
            "expires_in": expires_in,
            "scope": conn.record.scopes.join(" "),
        });
        let mut response = (StatusCode::OK, axum::Json(body)).into_response();
        no_store(response.headers_mut());
        response
    }

    /// RFC 8414 metadata; `issuer` is `[server] public_url`, else this server as the request
    /// reached it (its Host, which the caller checked).
    pub fn metadata(&self, headers: &HeaderMap) -> Response {
        let issuer = self.issuer.clone().unwrap_or_else(|| {
            let host = headers
                .get(header::HOST)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("localhost");
            format!("http://{host}")
        });
        let body = json!({
            "issuer": issuer,
            "token_endpoint": format!("{issuer}{TOKEN_PATH}"),
            "grant_types_supported": [GRANT_TYPE],
            "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
            "response_types_supported": [],
        });
        (StatusCode::OK, axum::Json(body)).into_response()
    }
}

/// A refusal before any client authenticated.
fn unauthenticated(refusal: Refusal) -> Handled {
    Handled {
        response: refusal.into_response(),
        client_authenticated: false,
    }
}

fn provider_names(catalog: &crate::catalog::Catalog) -> String {
    catalog
        .providers()
        .map(|p| p.name.clone())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Step 7 against the connection's grant (see "Scopes" in the module docs).
fn check_grant(
    client: &Client,
    provider: &Provider,
    conn: &Connection,
    requested: &[String],
) -> Result<(), Refusal> {
    let key = &conn.key;
    let granted = &conn.record.scopes;
    if granted.is_empty() {
        return Err(Refusal::new(
            ErrorCode::InvalidScope,
            format!(
                "the scopes of the {key} connection are unknown (it was imported without a scope \
                 field), so keyward cannot tell whether its token stays within client {}'s \
                 allowance: reconnect with `{}`",
                client.name,
                connect_command(key)
            ),
        ));
    }
    let lacking = missing_scopes(provider, granted, requested);
    if !lacking.is_empty() {
        return Err(Refusal::new(
            ErrorCode::InvalidScope,
            format!(
                "the {key} connection was not granted {}: the user reconnects with `{} --scopes \
                 {}`",
                lacking.join(" "),
                connect_command(key),
                granted
                    .iter()
                    .chain(&lacking)
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(",")
            ),
        ));
    }
    let beyond = missing_scopes(provider, &client.allowance.scopes, granted);
    if !beyond.is_empty() {
        return Err(Refusal::new(
            ErrorCode::InvalidScope,
            format!(
                "the {key} connection's token can also do {}, which client {} is not registered \
                 for, and a provider token cannot be narrowed: register the client with those \
                 scopes, or the user reconnects with fewer (`{} --scopes {}`)",
                beyond.join(" "),
                client.name,
                connect_command(key),
                granted
                    .iter()
                    .filter(|s| !beyond.contains(s))
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(",")
            ),
        ));
    }
    Ok(())
}

/// A failure getting the token: the grant is gone (`invalid_grant`), or it lives and the failure
/// is for now (503: the token endpoint, a refresh that took too long) or keyward's own (500: its
/// OAuth client configuration, the vault). Refresh errors are redacted where they are made;
/// `own` (the connection's tokens) scrubs them once more, as the executor does with a tool
/// call's error.
fn refresh_refusal(error: RefreshError, own: &Redactor) -> Refusal {
    let gone = !error.grant_alive();
    let error = error.into_tool_error().redacted(own);
    let mut text = error.message;
    if let Some(hint) = error.hint {
        text.push_str(": ");
        text.push_str(&hint);
    }
    if gone {
        Refusal::new(ErrorCode::InvalidGrant, text)
    } else if error.retryable {
        Refusal {
            retry_after: Some(1),
            ..Refusal::new(ErrorCode::TemporarilyUnavailable, text)
        }
    } else {
        Refusal::new(ErrorCode::ServerError, text)
    }
}
