//! `keyward connect`: bring a grant into the vault.
//!
//! 1. **Scopes.** The scopes asked for are the union of the minimal scopes of the selected
//!    tools ([`Catalog::required_scopes`]): all of the provider's tools by default, only the
//!    read-only ones with `--read-only` (so a read-only user never grants a write scope), the
//!    named toolsets or tools, or exactly `--scopes`.
//! 2. **Authorization.** Either the authorization-code flow with PKCE (S256) and a single-use
//!    `state` on a loopback redirect ([`super::loopback`]) — `oauth2` builds the authorization
//!    URL, the PKCE pair and the state — or the device authorization grant ([`super::device`]).
//! 3. **Exchange.** The code goes to the token endpoint with the PKCE verifier; the answer is
//!    sorted by [`super::token_endpoint`] and parsed by [`super::token_response`] (GitHub's
//!    200-with-`error` answers and Slack's `authed_user` shape do not fit `oauth2`'s types).
//! 4. **Store.** The record is written with [`Vault::put`] (flushed) and the event audited
//!    with the granted scopes — never a token. Nothing is stored on any failure.
//!
//! The CLI opens the vault before anyone is sent to a browser, so a wrong master key fails
//! first; other keyward processes keep working meanwhile, through whichever process owns the
//! database ([`crate::vault::share`]).

use std::time::Duration;

use oauth2::basic::BasicClient;
use oauth2::{AuthUrl, ClientId, CsrfToken, PkceCodeChallenge, RedirectUrl, Scope};

use super::app::OAuthApp;
use super::http::OAuthHttp;
use super::loopback::{Callback, Loopback};
use super::token_endpoint::{self, Answer};
use super::{device, token_response};
use crate::catalog::{missing_scopes, Catalog, ProviderSpec, ToolFilter};
use crate::config::Config;
use crate::error::{Error, Result};
use crate::vault::{AuditEntry, ConnKey, TokenRecord, Vault};

/// Default time to wait for the browser or the device approval.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(300);

/// Which tools the connection is for.
#[derive(Debug, Clone, Default)]
pub struct Selection {
    /// Only read-only tools.
    pub read_only: bool,
    /// Toolsets of the provider (`issues` or `github:issues`).
    pub toolsets: Vec<String>,
    /// Tool names.
    pub tools: Vec<String>,
    /// Exact scopes, instead of deriving them from tools.
    pub scopes: Vec<String>,
}

/// What `keyward connect` was asked to do.
#[derive(Debug, Clone)]
pub struct ConnectRequest {
    pub key: ConnKey,
    pub selection: Selection,
    /// Use the device authorization grant instead of the browser redirect.
    pub device: bool,
    /// Try to open a browser (the URL is printed either way).
    pub open_browser: bool,
    pub timeout: Duration,
}

/// A grant obtained from the provider, not yet stored.
pub struct Authorized {
    pub record: TokenRecord,
    pub requested: Vec<String>,
    flow: &'static str,
    /// The browser's request, still open, to be answered once the record is stored.
    reply: Option<(super::loopback::Reply, super::loopback::Server)>,
}

/// A stored connection.
#[derive(Debug, Clone)]
pub struct Connected {
    pub key: ConnKey,
    pub version: u64,
    pub requested: Vec<String>,
    /// What the provider said it granted; empty when it did not say.
    pub granted: Vec<String>,
    /// Requested scopes the grant does not cover.
    pub missing: Vec<String>,
    pub expires_at: Option<i64>,
    pub has_refresh_token: bool,
}

/// Progress lines for the person at the terminal (stderr in the CLI).
pub type Notify<'a> = &'a (dyn Fn(&str) + Sync);

/// The scopes to request for `selection`, minimal and in catalog order.
pub fn requested_scopes(
    catalog: &Catalog,
    spec: &ProviderSpec,
    selection: &Selection,
) -> Result<Vec<String>> {
    let name = &spec.name;
    if !selection.scopes.is_empty() {
        if selection.read_only || !selection.toolsets.is_empty() || !selection.tools.is_empty() {
            return Err(Error::usage(
                "--scopes names the scopes exactly; do not combine it with --read-only, --toolsets or --tools",
            ));
        }
        let scopes = token_response::split_scopes(&selection.scopes.join(","));
        return Ok(crate::catalog::minimize_scopes(spec, &scopes));
    }
    let toolsets: Vec<String> = selection
        .toolsets
        .iter()
        .map(|t| {
            if t.contains(':') || t == name {
                t.clone()
            } else {
                format!("{name}:{t}")
            }
        })
        .collect();
    if let Some(other) = toolsets
        .iter()
        .find(|t| t.split(':').next() != Some(name.as_str()))
    {
        return Err(Error::usage(format!(
            "the toolset `{other}` is not one of {name}'s"
        )));
    }
    if let Some(other) = selection
        .tools
        .iter()
        .find(|t| catalog.tool(t).is_some_and(|(p, _)| p.name != *name))
    {
        return Err(Error::usage(format!(
            "the tool `{other}` is not one of {name}'s"
        )));
    }
    let filter = ToolFilter {
        toolsets,
        tools: selection.tools.clone(),
        read_only: selection.read_only,
    };
    filter.validate(catalog)?;
    let selected = catalog
        .provider_tools(name)
        .filter(|t| filter.allows(spec, t))
        .count();
    if selected == 0 {
        return Err(Error::usage(format!(
            "that selection leaves no {name} tool (with --read-only, only read-only tools count); `keyward tools --provider {name}` lists them"
        )));
    }
    Ok(catalog.required_scopes(name, &filter))
}

fn scopes_text(scopes: &[String]) -> String {
    if scopes.is_empty() {
        "(none)".into()
    } else {
        scopes.join(" ")
    }
}

/// Obtain a grant: the browser or device flow, up to (not including) storing it.
pub async fn authorize(
    config: &Config,
    catalog: &Catalog,
    request: &ConnectRequest,
    notify: Notify<'_>,
) -> Result<Authorized> {
    let provider = &request.key.provider;
    let spec = catalog.provider(provider).ok_or_else(|| {
        let known: Vec<String> = catalog.providers().map(|p| p.name.clone()).collect();
        Error::usage(format!(
            "unknown provider {provider:?}: use one of {}",
            known.join(", ")
        ))
    })?;
    let requested = requested_scopes(catalog, spec, &request.selection)?;
    let app = OAuthApp::new(spec, config);
    let http = OAuthHttp::new(Duration::from_millis(
        config.executor.read_timeout_ms.max(1000),
    ))?;
    notify(&format!(
        "keyward: asking {} for the scopes: {}",
        spec.title,
        scopes_text(&requested)
    ));
    if request.device {
        let record = device::run(&http, &app, &requested, request, notify).await?;
        return Ok(Authorized {
            record,
            requested,
            flow: "device",
            reply: None,
        });
    }
    browser_flow(&http, &app, requested, request, notify).await
}

/// Extra authorization parameters some providers need.
fn provider_params(provider: &str) -> &'static [(&'static str, &'static str)] {
    match provider {
        // Without `access_type=offline` Google issues no refresh token; `prompt=consent` makes
        // it issue a new one on a reconnect too.
        "google" => &[("access_type", "offline"), ("prompt", "consent")],
        _ => &[],
    }
}

async fn browser_flow(
    http: &OAuthHttp,
    app: &OAuthApp,
    requested: Vec<String>,
    request: &ConnectRequest,
    notify: Notify<'_>,
) -> Result<Authorized> {
    let prepared = prepare_browser(app, &requested).await?;
    notify(&format!(
        "keyward: open this URL in a browser to connect {} (waiting up to {}s):",
        app.title,
        request.timeout.as_secs()
    ));
    notify(&prepared.url);
    if request.open_browser {
        open_browser(&prepared.url);
    }
    finish_browser(http, app, prepared, requested, request, notify).await
}

/// The first half of the browser flow: the loopback listener is bound and the authorization
/// URL (PKCE challenge, single-use `state`) is built; nothing has been sent anywhere.
struct PreparedBrowser {
    url: String,
    state: CsrfToken,
    verifier: oauth2::PkceCodeVerifier,
    loopback: Loopback,
    redirect_uri: String,
}

async fn prepare_browser(app: &OAuthApp, requested: &[String]) -> Result<PreparedBrowser> {
    app.client(true, false)?;
    let loopback = Loopback::bind(app.redirect_port, &app.provider).await?;
    let redirect_uri = loopback.redirect_uri();
    let (url, state, verifier) = authorization_url(app, requested, &redirect_uri)?;
    Ok(PreparedBrowser {
        url,
        state,
        verifier,
        loopback,
        redirect_uri,
    })
}

/// The provider's authorization URL for `requested` with the redirect `redirect_uri`, a fresh
/// single-use `state` and a PKCE (S256) pair whose verifier stays with the caller.
fn authorization_url(
    app: &OAuthApp,
    requested: &[String],
    redirect_uri: &str,
) -> Result<(String, CsrfToken, oauth2::PkceCodeVerifier)> {
    let client = app.client(true, false)?;
    let oauth = BasicClient::new(ClientId::new(client.id.to_string()))
        .set_auth_uri(
            AuthUrl::new(app.authorize_url.clone())
                .map_err(|e| Error::config(format!("authorize_url: {e}")))?,
        )
        .set_redirect_uri(
            RedirectUrl::new(redirect_uri.to_string()).map_err(|e| Error::other(e.to_string()))?,
        );
    let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
    let mut auth = oauth
        .authorize_url(CsrfToken::new_random)
        .set_pkce_challenge(challenge);
    if !requested.is_empty() {
        auth = if app.provider == "slack" {
            // Slack: `scope` is for the bot token; a user token's scopes go in `user_scope`.
            auth.add_extra_param("user_scope", requested.join(","))
        } else if app.scope_separator == " " {
            auth.add_scopes(requested.iter().cloned().map(Scope::new))
        } else {
            auth.add_extra_param("scope", requested.join(&app.scope_separator))
        };
    }
    for (name, value) in provider_params(&app.provider) {
        auth = auth.add_extra_param(*name, *value);
    }
    let (url, state) = auth.url();
    Ok((url.to_string(), state, verifier))
}

/// The authorization-code flow with a redirect to keyward's public address (`keyward serve
/// --http` with `public_url`): the provider redirects the browser to `redirect_uri`, and the
/// server that receives the code calls [`WebFlow::exchange`]. The caller keeps `state` and
/// `verifier` (sealed in the browser's cookie) — they never appear in the URL.
pub struct WebFlow {
    pub url: String,
    pub state: String,
    pub verifier: String,
    pub requested: Vec<String>,
}

impl WebFlow {
    /// Start a flow for `key` asking for what `selection` needs.
    pub fn start(
        config: &Config,
        catalog: &Catalog,
        provider: &str,
        selection: &Selection,
        redirect_uri: &str,
    ) -> Result<WebFlow> {
        let spec = catalog
            .provider(provider)
            .ok_or_else(|| Error::usage(format!("unknown provider {provider:?}")))?;
        let requested = requested_scopes(catalog, spec, selection)?;
        let app = OAuthApp::new(spec, config);
        let (url, state, verifier) = authorization_url(&app, &requested, redirect_uri)?;
        Ok(WebFlow {
            url,
            state: state.secret().clone(),
            verifier: verifier.secret().clone(),
            requested,
        })
    }

    /// Exchange the `code` the provider sent back and store the grant under `key` (flushed,
    /// audited like `keyward connect`); the error says why nothing was stored.
    pub async fn exchange(
        vault: &Vault,
        config: &Config,
        catalog: &Catalog,
        key: &ConnKey,
        code: &str,
        pending: WebPending,
    ) -> Result<Connected> {
        let WebPending {
            verifier,
            redirect_uri,
            requested,
        } = pending;
        let result = async {
            let spec = catalog
                .provider(&key.provider)
                .ok_or_else(|| Error::usage(format!("unknown provider {:?}", key.provider)))?;
            let app = OAuthApp::new(spec, config);
            let http = OAuthHttp::new(Duration::from_millis(
                config.executor.read_timeout_ms.max(1000),
            ))?;
            let record = exchange_code(&http, &app, code, &redirect_uri, &verifier).await?;
            let authorized = Authorized {
                record,
                requested,
                flow: "web",
                reply: None,
            };
            store(vault, catalog, key, authorized).await
        }
        .await;
        if let Err(e) = &result {
            audit_failure(vault, key, e).await;
        }
        result
    }
}

/// What the server keeps of a [`WebFlow`] until the provider redirects back (sealed in the
/// browser's cookie): the PKCE verifier holds the exchange to this browser.
#[derive(serde::Serialize, serde::Deserialize)]
pub struct WebPending {
    pub verifier: String,
    pub redirect_uri: String,
    pub requested: Vec<String>,
}

/// Trade an authorization code (and its PKCE verifier) for a token record.
async fn exchange_code(
    http: &OAuthHttp,
    app: &OAuthApp,
    code: &str,
    redirect_uri: &str,
    verifier: &str,
) -> Result<TokenRecord> {
    let client = app.client(true, false)?;
    let mut form = vec![
        ("grant_type", "authorization_code"),
        ("code", code),
        ("redirect_uri", redirect_uri),
        ("code_verifier", verifier),
        ("client_id", client.id),
    ];
    if let Some(secret) = client.secret {
        form.push(("client_secret", secret.expose()));
    }
    let answer = token_endpoint::request(http, &app.token_url, &form, http.timeout()).await;
    exchange_result(app, answer)
}

/// The second half: wait for the redirect, exchange the code.
async fn finish_browser(
    http: &OAuthHttp,
    app: &OAuthApp,
    prepared: PreparedBrowser,
    requested: Vec<String>,
    request: &ConnectRequest,
    notify: Notify<'_>,
) -> Result<Authorized> {
    let PreparedBrowser {
        state,
        verifier,
        loopback,
        redirect_uri,
        ..
    } = prepared;
    let Some((callback, reply, server)) = loopback
        .wait(state.secret(), &app.title, request.timeout, notify)
        .await?
    else {
        return Err(Error::other(format!(
            "no answer from the browser within {}s, so nothing was stored: run `keyward connect {}{}` again (--timeout SECS gives more time; --device avoids the browser redirect)",
            request.timeout.as_secs(),
            app.provider,
            request.key.cli_flags()
        )));
    };
    let code = match callback {
        Callback::Code(code) => code,
        Callback::Denied { error, description } => {
            let detail = description.map(|d| format!(": {d}")).unwrap_or_default();
            let text = if error == "access_denied" {
                format!("the authorization was declined ({error}{detail}); nothing was stored")
            } else {
                format!("{} answered the authorization with an error ({error}{detail}); nothing was stored", app.title)
            };
            reply.send(false, text.clone());
            server.stop().await;
            return Err(Error::other(text));
        }
        Callback::Rejected(why) => {
            let text = format!(
                "refused the redirect: {why}; nothing was stored. Run `keyward connect {}` again",
                app.provider
            );
            reply.send(false, text.clone());
            server.stop().await;
            return Err(Error::other(text));
        }
    };

    let exchanged = exchange_code(http, app, code.secret(), &redirect_uri, verifier.secret()).await;
    match exchanged {
        Ok(record) => Ok(Authorized {
            record,
            requested,
            flow: "browser",
            reply: Some((reply, server)),
        }),
        Err(e) => {
            reply.send(false, e.to_string());
            server.stop().await;
            Err(e)
        }
    }
}

/// A browser sign-in started on demand: `keyward serve` asks an MCP client to show the user
/// [`BrowserSignIn::url`] (an MCP URL elicitation) and finishes the flow in the background.
/// The URL carries what any authorization URL carries — client id, redirect URI, scopes, the
/// PKCE challenge and the single-use `state` — and no secret: the client secret and the PKCE
/// verifier stay here.
pub struct BrowserSignIn {
    pub url: String,
    prepared: PreparedBrowser,
    app: OAuthApp,
    http: OAuthHttp,
    requested: Vec<String>,
    request: ConnectRequest,
}

impl BrowserSignIn {
    /// Bind the loopback redirect and build the authorization URL for `request` (the browser
    /// flow; `request.device` is ignored).
    pub async fn start(
        config: &Config,
        catalog: &Catalog,
        request: ConnectRequest,
    ) -> Result<BrowserSignIn> {
        let spec = catalog
            .provider(&request.key.provider)
            .ok_or_else(|| Error::usage(format!("unknown provider {:?}", request.key.provider)))?;
        let requested = requested_scopes(catalog, spec, &request.selection)?;
        let app = OAuthApp::new(spec, config);
        let http = OAuthHttp::new(Duration::from_millis(
            config.executor.read_timeout_ms.max(1000),
        ))?;
        let prepared = prepare_browser(&app, &requested).await?;
        Ok(BrowserSignIn {
            url: prepared.url.clone(),
            prepared,
            app,
            http,
            requested,
            request,
        })
    }

    /// Wait for the browser, exchange the code and store the grant (audited as `keyward
    /// connect` audits it); the error says why nothing was stored.
    pub async fn finish(
        self,
        vault: &Vault,
        catalog: &Catalog,
        notify: Notify<'_>,
    ) -> Result<Connected> {
        let BrowserSignIn {
            prepared,
            app,
            http,
            requested,
            request,
            ..
        } = self;
        let result = async {
            let authorized =
                finish_browser(&http, &app, prepared, requested, &request, notify).await?;
            store(vault, catalog, &request.key, authorized).await
        }
        .await;
        if let Err(e) = &result {
            audit_failure(vault, &request.key, e).await;
        }
        result
    }
}

/// The record from a code (or device code) exchange, or the error that explains the refusal.
pub(crate) fn exchange_result(app: &OAuthApp, answer: Answer) -> Result<TokenRecord> {
    let now = chrono::Utc::now().timestamp();
    match answer {
        Answer::Token(value) => token_response::from_value(&value, now)
            .map_err(|e| Error::other(format!("{} answered the code exchange with something keyward cannot use ({e}); nothing was stored", app.title))),
        Answer::Error(e) => {
            let hint = match e.code.as_str() {
                "invalid_client" | "incorrect_client_credentials" | "invalid_client_id" | "bad_client_secret" | "unauthorized_client" => {
                    format!(" — check client_id and client_secret under [providers.{}]", app.provider)
                }
                "redirect_uri_mismatch" | "bad_redirect_uri" => {
                    format!(" — register the redirect URI {} with the OAuth app", app.redirect_uri_to_register())
                }
                "invalid_grant" | "bad_verification_code" | "invalid_code" | "code_already_used" => {
                    " — the code was rejected (expired, already used or the PKCE verifier did not match); run connect again".into()
                }
                _ => String::new(),
            };
            Err(Error::other(format!("{} refused the code exchange ({}){hint}; nothing was stored", app.title, e.reason())))
        }
        Answer::Unavailable(reason) | Answer::Malformed(reason) => Err(Error::other(format!(
            "the code exchange with {} failed: {reason}; nothing was stored, run connect again",
            app.title
        ))),
    }
}

/// Store the grant (flushed), audit it and tell the browser tab.
pub async fn store(
    vault: &Vault,
    catalog: &Catalog,
    key: &ConnKey,
    authorized: Authorized,
) -> Result<Connected> {
    let Authorized {
        record,
        requested,
        flow,
        reply,
    } = authorized;
    let spec = catalog.provider(&key.provider);
    let granted = record.scopes.clone();
    let missing = match spec {
        Some(spec) if !granted.is_empty() => missing_scopes(spec, &granted, &requested),
        _ => Vec::new(),
    };
    let result = vault.put(key, None, &record).await;
    // A failure is audited by `run` (`audit_failure`), like every other failed connect.
    if result.is_ok() {
        let mut entry = AuditEntry::new(&key.user, "connect", format!("ok ({flow} flow)"))
            .connection(&key.provider, &key.account);
        entry.scopes = Some(granted.clone());
        vault.audit(&entry).await;
        let _ = vault.flush().await;
    }
    if let Some((reply, server)) = reply {
        match &result {
            Ok(_) => reply.send(
                true,
                format!("The connection {key} is stored in keyward's vault."),
            ),
            Err(e) => reply.send(false, format!("The grant could not be stored: {e}")),
        }
        server.stop().await;
    }
    let version = result?;
    Ok(Connected {
        key: key.clone(),
        version,
        requested,
        granted,
        missing,
        expires_at: record.expires_at,
        has_refresh_token: record.refresh_token.is_some(),
    })
}

/// The whole of `keyward connect` once the vault is open: obtain the grant, store it, and audit
/// a failure of either step (a success is audited by [`store`]).
pub async fn run(
    vault: &Vault,
    config: &Config,
    catalog: &Catalog,
    request: &ConnectRequest,
    notify: Notify<'_>,
) -> Result<Connected> {
    let result = async {
        let authorized = authorize(config, catalog, request, notify).await?;
        store(vault, catalog, &request.key, authorized).await
    }
    .await;
    if let Err(e) = &result {
        audit_failure(vault, &request.key, e).await;
    }
    result
}

/// Record a failed connect in the audit log (best effort: the vault may be the problem).
async fn audit_failure(vault: &Vault, key: &ConnKey, error: &Error) {
    vault
        .audit(
            &AuditEntry::new(&key.user, "connect", format!("error: {error}"))
                .connection(&key.provider, &key.account),
        )
        .await;
    let _ = vault.flush().await;
}

/// Ask the desktop to open `url`; failures are ignored (the URL is printed anyway).
pub fn open_browser(url: &str) {
    let opener = if cfg!(target_os = "macos") {
        "open"
    } else {
        "xdg-open"
    };
    let spawned = std::process::Command::new(opener)
        .arg(url)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn();
    if let Ok(mut child) = spawned {
        // Reap it in the background so it does not linger as a zombie.
        std::thread::spawn(move || {
            let _ = child.wait();
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scopes(provider: &str, selection: Selection) -> Result<Vec<String>> {
        let catalog = Catalog::embedded();
        let spec = catalog.provider(provider).unwrap().clone();
        requested_scopes(&catalog, &spec, &selection)
    }

    #[test]
    fn read_only_never_asks_for_a_write_scope() {
        let catalog = Catalog::embedded();
        for spec in catalog.providers() {
            let all = scopes(&spec.name, Selection::default()).unwrap();
            let read = scopes(
                &spec.name,
                Selection {
                    read_only: true,
                    ..Default::default()
                },
            )
            .unwrap();
            let write_only: Vec<String> = catalog
                .provider_tools(&spec.name)
                .filter(|t| !t.read_only)
                .flat_map(|t| t.scopes.clone())
                .filter(|s| {
                    !catalog
                        .provider_tools(&spec.name)
                        .any(|t| t.read_only && t.scopes.contains(s))
                })
                .collect();
            for s in &write_only {
                assert!(
                    !read.contains(s),
                    "{}: read-only asks for the write scope {s}",
                    spec.name
                );
            }
            assert!(
                missing_scopes(spec, &all, &read).is_empty(),
                "{}: all covers read-only",
                spec.name
            );
        }
    }

    #[test]
    fn selections_are_checked_against_the_provider() {
        assert!(scopes(
            "github",
            Selection {
                toolsets: vec!["chat".into()],
                ..Default::default()
            }
        )
        .is_err());
        assert!(scopes(
            "github",
            Selection {
                tools: vec!["slack_post_message".into()],
                ..Default::default()
            }
        )
        .is_err());
        assert!(scopes(
            "github",
            Selection {
                scopes: vec!["repo".into()],
                read_only: true,
                ..Default::default()
            }
        )
        .is_err());
        assert_eq!(
            scopes(
                "github",
                Selection {
                    scopes: vec!["repo,public_repo".into()],
                    ..Default::default()
                }
            )
            .unwrap(),
            vec!["repo"]
        );
    }
}
