//! Refreshing for the other local keyward processes while this one owns the vault.
//!
//! Only the owner refreshes (single-flight across processes, invariant 5); a relaying process
//! sends it a refresh request over the vault's socket ([`crate::vault::share`]). The vault relays
//! but cannot refresh — that needs the provider's token endpoint and client credentials — so
//! the composition root (`keyward serve`, every CLI command) opens the vault with
//! [`open_vault`], which hands in a [`PeerRefresher`].
//!
//! What it needs (the home's config and catalog, an HTTP client and a small runtime, since owner
//! threads are plain threads) is built on the first request only: most CLI commands own the
//! vault for a few milliseconds and are never asked. It holds no vault: the refresher for a
//! request is made around the vault being served, so dropping the last handle still closes the
//! database and releases the owner lock. Refreshes share the vault's per-connection locks with
//! this process's own calls, so one refresh per connection still holds.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::refresh::Refresher;
use crate::catalog::Catalog;
use crate::config::{Config, Home};
use crate::error::{Error, Result};
use crate::tool_error::ToolError;
use crate::vault::{ConnKey, OpenMode, PeerRefresh, RefreshAnswer, RefreshFailure, Vault};

/// Open the vault in `home`, refreshing for other processes whenever this one owns it.
pub fn open_vault(home: &Home, mode: OpenMode) -> Result<Vault> {
    Vault::open_with(home, mode, Some(Arc::new(PeerRefresher::new(home.clone()))))
}

/// Refreshes connections when another process asks (see the module docs).
pub struct PeerRefresher {
    home: Home,
    built: Mutex<Option<Arc<Built>>>,
}

struct Built {
    config: Config,
    catalog: Arc<Catalog>,
    http: reqwest::Client,
    runtime: Runtime,
}

/// A runtime that may be dropped anywhere: the last vault handle (and with it this) may go
/// away on a tokio worker, where dropping a runtime the ordinary way panics.
struct Runtime(Option<tokio::runtime::Runtime>);

impl Drop for Runtime {
    fn drop(&mut self) {
        if let Some(runtime) = self.0.take() {
            runtime.shutdown_background();
        }
    }
}

impl PeerRefresher {
    pub fn new(home: Home) -> PeerRefresher {
        PeerRefresher {
            home,
            built: Mutex::new(None),
        }
    }

    fn built(&self) -> Result<Arc<Built>> {
        let mut built = crate::sync::lock(&self.built);
        if let Some(b) = built.as_ref() {
            return Ok(b.clone());
        }
        let config = Config::load(&self.home)?;
        let catalog = Catalog::load(&config.tools_dirs, &config.providers)?;
        let timeout = Duration::from_millis(config.executor.read_timeout_ms.max(1000));
        let http = super::http::OAuthHttp::new(timeout)?.client().clone();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("keyward-peer-refresh")
            .enable_all()
            .build()
            .map_err(|e| Error::io("starting the refresh runtime", e))?;
        let b = Arc::new(Built {
            config,
            catalog: Arc::new(catalog),
            http,
            runtime: Runtime(Some(runtime)),
        });
        *built = Some(b.clone());
        Ok(b)
    }
}

impl PeerRefresh for PeerRefresher {
    fn refresh(
        &self,
        vault: &Vault,
        key: &ConnKey,
        seen_version: u64,
        force: bool,
        budget: Duration,
    ) -> RefreshAnswer {
        let built = self.built().map_err(|e| RefreshFailure {
            message: format!("the vault owner cannot refresh tokens: {e}"),
            hint: None,
            retryable: false,
            status: None,
        })?;
        let runtime = built.runtime.0.as_ref().expect("taken only on drop");
        let refresher = Refresher::new(
            built.catalog.clone(),
            Arc::new(vault.clone()),
            &built.config,
            built.http.clone(),
        );
        let deadline = crate::budget::deadline_after(budget);
        runtime
            .block_on(refresher.refresh_here(key, seen_version, force, deadline))
            .map_err(failure_of)
    }
}

/// The wire form of a tool error from a refresh.
fn failure_of(e: ToolError) -> RefreshFailure {
    RefreshFailure {
        message: e.message,
        hint: e.hint,
        retryable: e.retryable,
        status: e.status,
    }
}
