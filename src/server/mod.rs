//! The MCP server: how LLM clients reach keyward.
//!
//! - [`handler`] — the rmcp `ServerHandler`: `tools/list` from the catalog (narrowed by the
//!   server's [`ToolFilter`] and, unless `all_tools`, by the providers the user has connected),
//!   `tools/call` through the [`Executor`], and `notifications/tools/list_changed` when the
//!   user's connections change.
//! - [`stdio`] — `keyward serve`: one client, one user, the protocol on stdin/stdout.
//! - [`http`] — `keyward serve --http`: Streamable HTTP at `/mcp`, the legacy HTTP+SSE
//!   transport at `/sse` + `/messages` ([`sse`]), and `/healthz`, behind [`auth`]: a bearer API
//!   key per request (users and keys live in [`crate::vault::users`]), Host/Origin checks, and
//!   sessions bound to the user that opened them. [`streamable`] fixes, around rmcp, what its
//!   Streamable HTTP service answers wrongly (malformed bodies, `DELETE`, event ids), and
//!   [`jsonrpc`] says what every transport answers to input that is not one MCP message.
//! - [`sign_in`] — stdio: asking a 2026-07-28 client to sign its user in (MRTR).
//! - [`oidc`] — remote users signing in with the team's identity provider: discovery, JWKS,
//!   validating its JWT access tokens and ID tokens (`[server.auth]`).
//! - [`web`], [`connect_web`] — the browser pages of `serve --http`: sign-in, the account page,
//!   and `/connect/<provider>` links that connect an account; their tickets and cookies are
//!   sealed with the web key ([`seal`]).
//! - [`exchange`] — `POST /oauth/token` of `keyward serve --http` with `[exchange] enabled`:
//!   RFC 8693 token exchange, handing a registered backend the provider token of the user whose
//!   credential it presents.
//!
//! Revisions 2024-11-05 … 2025-11-25 open with `initialize` (and, over HTTP, a session);
//! 2026-07-28 is stateless: rmcp reads each request's `_meta` (version, client capabilities and
//! info), answers `server/discover`, checks the HTTP routing headers and serves such a request
//! over HTTP without a session, so any process sharing the vault can answer it (invariant 14).
//!
//! Who the user is never comes from the client's JSON: over stdio it is `--user`, over HTTP it
//! is the owner of the API key on the request. Everything a tool call may reach is derived from
//! that user, so one user's session cannot name another user's connection.

pub mod auth;
pub mod connect_web;
pub mod exchange;
pub mod handler;
pub mod http;
pub mod jsonrpc;
pub mod oidc;
pub mod seal;
pub mod sign_in;
pub mod sse;
pub mod stdio;
pub mod streamable;
pub mod tools;
pub mod web;

use std::collections::HashMap;
use std::sync::Arc;

use futures::future::{BoxFuture, FutureExt, Shared};

use crate::catalog::{Catalog, ToolFilter};
use crate::config::{Config, Home};
use crate::error::{Error, Result};
use crate::exec::Executor;
use crate::vault::OpenMode;

pub use handler::KeywardServer;

/// Which tools a server offers and how it calls them, from `[server]` in config.toml and the
/// flags of `keyward serve` (flags win).
#[derive(Debug, Clone, Default)]
pub struct Offer {
    pub filter: ToolFilter,
    /// List every tool the filter allows, connected or not.
    pub all_tools: bool,
    /// The provider account calls use unless the request names one (`_meta`
    /// `keyward/account`); `None`: `default`, or the only one there is.
    pub account: Option<String>,
}

impl Offer {
    /// The config's `[server]` section with the command line's choices on top: tool and
    /// toolset lists given on the command line replace the config's; the switches add up.
    pub fn from_config(
        config: &Config,
        toolsets: Option<Vec<String>>,
        tools: Option<Vec<String>>,
        read_only: bool,
        all_tools: bool,
        account: Option<String>,
    ) -> Offer {
        let server = &config.server;
        Offer {
            filter: ToolFilter {
                toolsets: toolsets.unwrap_or_else(|| server.toolsets.clone()),
                tools: tools.unwrap_or_else(|| server.tools.clone()),
                read_only: read_only || server.read_only,
            },
            all_tools: all_tools || server.all_tools,
            account,
        }
    }
}

/// Something the server builds after it starts, off the workers (see
/// [`ServerState::start`]). Shared, so that every request waiting for it gets the same outcome
/// and a waiter that goes away (a cancelled call) loses nothing.
type Pending<T> = Shared<BoxFuture<'static, std::result::Result<Arc<T>, Arc<Error>>>>;

/// A provider the user has connected, with the names of their accounts of it. The list a
/// session was told changes — and `tools/list_changed` fires — when a provider or an account
/// comes or goes.
pub type Connected = (String, Vec<String>);

/// The tools a server offers: the catalog, checked against the offer, with the MCP definitions
/// of the tools the filter allows built once.
#[derive(Debug)]
pub struct Tools {
    catalog: Arc<Catalog>,
    /// The tools the filter allows, in catalog order.
    offered: Vec<tools::Offered>,
    by_name: HashMap<String, usize>,
}

impl Tools {
    /// Check the filter against the catalog and build the tool definitions.
    fn new(catalog: Arc<Catalog>, offer: &Offer) -> Result<Tools> {
        offer.filter.validate(&catalog)?;
        let offered: Vec<tools::Offered> = catalog
            .tools()
            .filter(|(provider, tool)| offer.filter.allows(provider, tool))
            .map(|(provider, tool)| tools::Offered {
                provider: provider.name.clone(),
                tool: tools::definition(provider, tool),
            })
            .collect();
        let by_name = offered
            .iter()
            .enumerate()
            .map(|(i, o)| (o.tool.name.to_string(), i))
            .collect();
        Ok(Tools {
            catalog,
            offered,
            by_name,
        })
    }

    pub fn catalog(&self) -> &Arc<Catalog> {
        &self.catalog
    }

    /// A tool the server offers (allowed by the filter), by name.
    pub fn offered(&self, name: &str) -> Option<&tools::Offered> {
        self.by_name.get(name).map(|&i| &self.offered[i])
    }

    /// The offered tools of the `visible` providers (`None`: all). The tools of a provider the
    /// user has several accounts with take an optional `account` argument listing them; with
    /// one account (or `all_tools`) the definitions are the catalog's, so a single-account user
    /// pays nothing for the choice.
    pub fn visible(&self, visible: Option<&[Connected]>) -> Vec<rmcp::model::Tool> {
        self.offered
            .iter()
            .filter_map(|o| match visible {
                None => Some(o.tool.clone()),
                Some(visible) => {
                    let (_, accounts) = visible.iter().find(|(p, _)| *p == o.provider)?;
                    Some(tools::with_accounts(&o.tool, accounts))
                }
            })
            .collect()
    }
}

/// What every session of one server process shares.
///
/// Nothing of it is needed to answer `initialize`, so a stdio server answers that first: MCP
/// clients spawn their servers when they start and wait for `initialize` (issue 11: cold
/// start). [`ServerState::start`] prepares the rest, and [`ServerState::begin`] builds it off
/// the workers: the tools (parsing and compiling the manifests), and the executor — the
/// vault (master key, sled, the owner socket) and the HTTP client (the system's trust roots).
/// A stdio server begins once `initialize` is answered: started earlier, that work (several
/// milliseconds of CPU on three threads) delays the answer on a machine with few cores, and on
/// a busy one by more than it takes. Requests wait for what they need, and begin it if nobody
/// has. What fails the command before it serves anything is what the command line and
/// `config.toml` say (bad flags, a bad config, an untrusted config file); a bad manifest, a
/// misspelled `--tools` name or a vault that does not open ends the server with that error
/// and its exit code as soon as it is known (see [`stdio::serve`]).
pub struct ServerState {
    offer: Offer,
    tools: Pending<Tools>,
    executor: Pending<Executor>,
    /// Starts building `tools` and `executor`; taken by the first [`ServerState::begin`].
    begin: std::sync::Mutex<Option<Begin>>,
}

/// Starts the work of [`ServerState::start`], off the workers.
type Begin = Box<dyn FnOnce() + Send>;

impl std::fmt::Debug for ServerState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerState")
            .field("offer", &self.offer)
            .finish_non_exhaustive()
    }
}

fn ready<T: Send + Sync + 'static>(value: Arc<T>) -> Pending<T> {
    futures::future::ready(Ok(value)).boxed().shared()
}

/// What a blocking task handed over by [`ServerState::begin`] produced (`what` names the work in
/// the error of a task that panicked).
async fn outcome<T>(
    task: tokio::sync::oneshot::Receiver<tokio::task::JoinHandle<Result<T>>>,
    what: &str,
) -> std::result::Result<T, Arc<Error>> {
    // The sender goes with the state: a state dropped before it began has no waiter left.
    let Ok(task) = task.await else {
        return Err(Arc::new(Error::other(format!("{what} never started"))));
    };
    match task.await {
        Ok(done) => done.map_err(Arc::new),
        Err(join) => Err(Arc::new(Error::other(format!("{what} failed: {join}")))),
    }
}

impl ServerState {
    /// Check the filter against the executor's catalog and build the tool definitions.
    pub fn new(executor: Arc<Executor>, offer: Offer) -> Result<Arc<ServerState>> {
        let tools = Tools::new(executor.catalog().clone(), &offer)?;
        Ok(Arc::new(ServerState {
            offer,
            tools: ready(Arc::new(tools)),
            executor: ready(executor),
            begin: std::sync::Mutex::new(None),
        }))
    }

    /// Load the catalog, open (or create) the vault in `home` and build the executor, all
    /// before returning.
    pub async fn open(home: &Home, config: &Config, offer: Offer) -> Result<Arc<ServerState>> {
        let catalog = Arc::new(Catalog::load(&config.tools_dirs, &config.providers)?);
        let (vault, upstream) = open_vault_and_client(home, config).await?;
        let executor = Executor::with_upstream(catalog, vault, config, upstream);
        ServerState::new(Arc::new(executor), offer)
    }

    /// Prepare building the tools and the executor off the workers (the vault and the HTTP
    /// client while the manifests compile), and return at once: the work starts with the first
    /// [`ServerState::begin`], or the first request that needs it.
    pub fn start(home: &Home, config: &Config, offer: Offer) -> Arc<ServerState> {
        let (tools_task, tools) = tokio::sync::oneshot::channel();
        let (opened_task, opened) = tokio::sync::oneshot::channel();
        let tools: Pending<Tools> =
            async move { outcome(tools, "starting the server").await.map(Arc::new) }
                .boxed()
                .shared();
        let executor = {
            let (tools, config) = (tools.clone(), config.clone());
            async move {
                let (vault, upstream) = outcome(opened, "opening the vault").await?;
                let tools = tools.await?;
                let catalog = tools.catalog().clone();
                Ok(Arc::new(Executor::with_upstream(
                    catalog, vault, &config, upstream,
                )))
            }
            .boxed()
            .shared()
        };
        let begin: Begin = {
            let (home, config, offer) = (home.clone(), config.clone(), offer.clone());
            Box::new(move || {
                let catalog_config = config.clone();
                let _ = tools_task.send(tokio::task::spawn_blocking(move || {
                    let catalog =
                        Catalog::load(&catalog_config.tools_dirs, &catalog_config.providers)?;
                    Tools::new(Arc::new(catalog), &offer)
                }));
                let _ = opened_task.send(tokio::spawn(async move {
                    open_vault_and_client(&home, &config).await
                }));
            })
        };
        Arc::new(ServerState {
            offer,
            tools,
            executor,
            begin: std::sync::Mutex::new(Some(begin)),
        })
    }

    /// Start building what [`ServerState::start`] prepared, unless it started already. Must
    /// run inside a tokio runtime, which then serves the vault to other processes while this
    /// one owns it.
    pub fn begin(&self) {
        let begin = crate::sync::lock(&self.begin).take();
        if let Some(begin) = begin {
            begin();
        }
    }

    /// The error that ends the server, as soon as something could not be built; never, while
    /// everything builds. Waits for the work without starting it.
    pub async fn failed(&self) -> Arc<Error> {
        let built = async {
            self.tools.clone().await?;
            self.executor.clone().await?;
            Ok::<(), Arc<Error>>(())
        };
        match built.await {
            Err(e) => e,
            Ok(()) => std::future::pending().await,
        }
    }

    /// The tools, once the manifests are compiled. The error (a bad manifest, a `--tools` name
    /// that does not exist) is the same for every caller.
    pub async fn tools(&self) -> std::result::Result<Arc<Tools>, Arc<Error>> {
        self.begin();
        self.tools.clone().await
    }

    /// The tools if they are built already ([`ServerState::open`] builds them first).
    pub fn tools_now(&self) -> Option<&Arc<Tools>> {
        self.tools.peek().and_then(|built| built.as_ref().ok())
    }

    /// The executor, once the vault is open. The error (a wrong master key, a home folder
    /// keyward does not trust, …) is the same for every caller, and says what to do.
    pub async fn executor(&self) -> std::result::Result<Arc<Executor>, Arc<Error>> {
        self.begin();
        self.executor.clone().await
    }

    /// The executor if it is open already ([`ServerState::open`] opens it before returning).
    pub fn executor_now(&self) -> Option<&Arc<Executor>> {
        self.executor.peek().and_then(|opened| opened.as_ref().ok())
    }

    pub fn offer(&self) -> &Offer {
        &self.offer
    }

    /// The providers whose tools `user` sees: `None` means all (`all_tools`, which needs no
    /// vault).
    pub async fn visible_providers(
        &self,
        user: &str,
    ) -> std::result::Result<Option<Vec<Connected>>, Arc<Error>> {
        if self.offer.all_tools {
            return Ok(None);
        }
        let executor = self.executor().await?;
        Ok(self.visible_with(&executor, user).await)
    }

    /// [`ServerState::visible_providers`] with the executor at hand (the vault read holds no
    /// worker).
    pub async fn visible_with(&self, executor: &Executor, user: &str) -> Option<Vec<Connected>> {
        if self.offer.all_tools {
            None
        } else {
            Some(executor.connected_accounts(user).await)
        }
    }

    /// The tools `user` sees in `tools/list`.
    pub async fn tools_for(
        &self,
        user: &str,
    ) -> std::result::Result<Vec<rmcp::model::Tool>, Arc<Error>> {
        let tools = self.tools().await?;
        let visible = self.visible_providers(user).await?;
        Ok(tools.visible(visible.as_deref()))
    }

    /// Wait until everything is built; the first error if something could not be.
    pub async fn ready(&self) -> Result<()> {
        self.tools().await.map_err(unshared)?;
        self.executor().await.map_err(unshared)?;
        Ok(())
    }

    /// Flush the vault (audit lines are appended without a flush of their own). A vault still
    /// opening is waited for, so that it is closed in order; one that did not open, or was
    /// never asked to, has nothing to flush.
    pub async fn flush(&self) {
        if crate::sync::lock(&self.begin).is_some() {
            return;
        }
        let Ok(executor) = self.executor.clone().await else {
            return;
        };
        if let Err(e) = executor.vault().flush().await {
            tracing::error!("could not flush the vault: {e}");
        }
    }
}

/// The error of something the server could not build, for a caller that returns it: the same
/// variant, message and exit code (the shared original stays with the state, for every other
/// waiter).
pub(crate) fn unshared(e: Arc<Error>) -> Error {
    Arc::try_unwrap(e).unwrap_or_else(|shared| match &*shared {
        Error::Usage(m) => Error::Usage(m.clone()),
        Error::Config(m) => Error::Config(m.clone()),
        Error::Io { context, source } => Error::Io {
            context: context.clone(),
            source: std::io::Error::new(source.kind(), source.to_string()),
        },
        Error::MasterKey(m) => Error::MasterKey(m.clone()),
        Error::Vault(m) => Error::Vault(m.clone()),
        Error::RecordCorrupt {
            record,
            provider,
            user,
            account,
            reason,
        } => Error::RecordCorrupt {
            record: record.clone(),
            provider: provider.clone(),
            user: user.clone(),
            account: account.clone(),
            reason: reason.clone(),
        },
        Error::Conflict(m) => Error::Conflict(m.clone()),
        Error::NotFound(m) => Error::NotFound(m.clone()),
        Error::Busy(m) => Error::Busy(m.clone()),
        Error::Untrusted(m) => Error::Untrusted(m.clone()),
        Error::Unavailable(m) => Error::Unavailable(m.clone()),
        Error::OwnerGone(m) => Error::OwnerGone(m.clone()),
        Error::Other(m) => Error::Other(m.clone()),
    })
}

/// Open (or create) the vault in `home` and build the HTTP client. The client reads and parses
/// the system's trust roots, a few milliseconds: it is built on the blocking pool while the
/// vault opens.
async fn open_vault_and_client(
    home: &Home,
    config: &Config,
) -> Result<(Arc<crate::vault::Vault>, crate::exec::client::Upstream)> {
    let limits = config.executor.clone();
    let upstream = tokio::task::spawn_blocking(move || crate::exec::client::Upstream::new(&limits));
    let vault = crate::oauth::peers::open_vault(home, OpenMode::Create).await?;
    if !vault.created().is_empty() {
        tracing::warn!(
            "created {} — back up {} (or your KEYWARD_MASTER_KEY): without it the vault cannot be opened",
            vault.created().join(", "),
            home.key_file().display()
        );
    }
    let upstream = upstream
        .await
        .map_err(|e| Error::other(format!("building the HTTP client failed: {e}")))??;
    Ok((Arc::new(vault), upstream))
}

/// A short random id (hex), for sessions keyward names itself.
pub(crate) fn random_id(bytes: usize) -> String {
    use rand::RngCore;
    let mut buf = vec![0u8; bytes];
    rand::rngs::OsRng.fill_bytes(&mut buf);
    buf.iter().map(|b| format!("{b:02x}")).collect()
}

/// Set up logging to stderr: `RUST_LOG` wins, else `--log-level` (default `info`). stdout is
/// left to the protocol.
pub fn init_logging(level: Option<&str>) {
    use tracing_subscriber::EnvFilter;
    let filter = match std::env::var("RUST_LOG") {
        Ok(v) if !v.trim().is_empty() => EnvFilter::new(v),
        _ => EnvFilter::new(level.unwrap_or("info")),
    };
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .with_target(true)
        .try_init();
}

/// Kept at this path for the tests and benches, whose own HTTP clients need it too; the one
/// definition is next to the client that needs it.
pub use crate::exec::client::install_crypto_provider;

/// Everything `keyward serve` was asked to do.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// The stdio user (`--user`); over HTTP the user comes from each request's API key.
    pub user: Option<String>,
    /// Serve HTTP on this address instead of stdio.
    pub http: Option<String>,
    pub toolsets: Option<Vec<String>>,
    pub tools: Option<Vec<String>>,
    pub read_only: bool,
    pub all_tools: bool,
    pub account: Option<String>,
    pub log_level: Option<String>,
    pub json_response: bool,
}

/// Run `keyward serve` to completion: set up logging and TLS, load the config, open the vault
/// and serve stdio or HTTP until the client leaves or a signal arrives. It runs on the caller's
/// runtime (the binary's one), which the caller shuts down with a timeout afterwards: a task
/// stuck in a blocking call would otherwise hold the process (see the end of this function).
pub async fn run(home: &Home, options: ServeOptions) -> Result<()> {
    install_crypto_provider();
    init_logging(options.log_level.as_deref());
    let config = Config::load(home)?;
    let http_addr = match &options.http {
        Some(addr) => {
            if options.user.is_some() {
                return Err(Error::usage(
                    "--user applies to stdio only: over HTTP each request's API key names its user \
                     (`keyward users add NAME`), or its identity-provider token ([server.auth])",
                ));
            }
            // Before the vault is opened (or created): a bad limit changes nothing on disk.
            config.server.check_http_limits()?;
            config.exchange.check()?;
            Some(resolve_addr(addr)?)
        }
        None => None,
    };
    let user = options
        .user
        .clone()
        .unwrap_or_else(|| crate::vault::DEFAULT_USER.to_string());
    crate::vault::users::check_user_name(&user)?;
    let offer = Offer::from_config(
        &config,
        options.toolsets.clone(),
        options.tools.clone(),
        options.read_only,
        options.all_tools,
        options.account.clone(),
    );
    let result = async {
        let state = ServerState::start(home, &config, offer);
        match http_addr {
            Some(addr) => {
                let http_options = http::HttpOptions {
                    addr,
                    json_response: options.json_response,
                };
                http::serve(state, &config, http_options).await
            }
            None => stdio::serve(state, &user, &config).await,
        }
    }
    .await;
    // Shutdown is bounded: the audit log was flushed when serving ended, and a task stuck in a
    // blocking call (the stdin reader only returns on input; a storage call on a home folder
    // deleted under us never returns) must not keep the process alive after its client left.
    // The caller shuts its runtime down with a timeout; this watchdog covers whatever still
    // blocks after that.
    let code = if result.is_ok() { 0 } else { 1 };
    let _ = std::thread::Builder::new()
        .name("keyward-exit-watchdog".into())
        .spawn(move || {
            std::thread::sleep(std::time::Duration::from_secs(3));
            eprintln!("keyward: shutdown did not finish within 3 s; exiting anyway");
            std::process::exit(code);
        });
    result
}

fn resolve_addr(addr: &str) -> Result<std::net::SocketAddr> {
    use std::net::ToSocketAddrs;
    let with_port = if addr.parse::<std::net::SocketAddr>().is_ok() || addr.contains(':') {
        addr.to_string()
    } else {
        format!("{addr}:8787")
    };
    with_port
        .to_socket_addrs()
        .ok()
        .and_then(|mut addrs| addrs.next())
        .ok_or_else(|| {
            crate::error::Error::usage(format!(
                "cannot listen on {addr:?}: give an address such as 127.0.0.1:8787"
            ))
        })
}
