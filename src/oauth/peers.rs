//! Refreshing for the other local keyward processes while this one owns the vault.
//!
//! Only the owner refreshes (single-flight across processes, invariant 5); a relaying process
//! sends it a refresh request over the vault's socket ([`crate::vault::share`]). The vault relays
//! but cannot refresh — that needs the provider's token endpoint and client credentials — so
//! the composition root (`keyward serve`, every CLI command) opens the vault with
//! [`open_vault`], which hands in a [`PeerRefresher`].
//!
//! What it needs (the home's config and catalog, and an HTTP client) is built on the first
//! request only, on the blocking pool: most CLI commands own the vault for a few milliseconds and
//! are never asked. The refreshes run on the runtime that opened the vault, as tasks of the
//! peers that asked. It holds no vault: the refresher for a request is made around the vault
//! being served, so dropping the last handle still closes the database and releases the owner
//! lock. Refreshes share the vault's per-connection locks with this process's own calls, so one
//! refresh per connection still holds.

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;

use super::refresh::Refresher;
use crate::catalog::Catalog;
use crate::config::{Config, Home};
use crate::error::{Error, Result};
use crate::vault::{
    ConnKey, FailureReport, OpenMode, PeerRefresh, RefreshAnswer, RefreshFailure, Vault,
};

/// Open the vault in `home`, refreshing for other processes whenever this one owns it.
pub async fn open_vault(home: &Home, mode: OpenMode) -> Result<Vault> {
    Vault::open_with(home, mode, Some(Arc::new(PeerRefresher::new(home.clone())))).await
}

/// Refreshes connections when another process asks (see the module docs).
pub struct PeerRefresher {
    home: Home,
    built: tokio::sync::OnceCell<Built>,
}

struct Built {
    config: Config,
    catalog: Arc<Catalog>,
    http: reqwest::Client,
}

impl PeerRefresher {
    pub fn new(home: Home) -> PeerRefresher {
        PeerRefresher {
            home,
            built: tokio::sync::OnceCell::new(),
        }
    }

    async fn built(&self) -> Result<&Built> {
        self.built
            .get_or_try_init(|| {
                let home = self.home.clone();
                async move {
                    tokio::task::spawn_blocking(move || {
                        let config = Config::load(&home)?;
                        let catalog = Catalog::load(&config.tools_dirs, &config.providers)?;
                        let timeout =
                            Duration::from_millis(config.executor.read_timeout_ms.max(1000));
                        let http = super::http::OAuthHttp::new(timeout)?.client().clone();
                        Ok(Built {
                            config,
                            catalog: Arc::new(catalog),
                            http,
                        })
                    })
                    .await
                    .map_err(|e| Error::other(format!("starting the refresher failed: {e}")))?
                }
            })
            .await
    }
}

impl PeerRefresh for PeerRefresher {
    fn refresh<'a>(
        &'a self,
        vault: &'a Vault,
        key: &'a ConnKey,
        seen_version: u64,
        force: bool,
        budget: Duration,
    ) -> BoxFuture<'a, RefreshAnswer> {
        Box::pin(async move {
            let built = self.built().await.map_err(|e| {
                RefreshFailure::Alive(FailureReport {
                    message: format!("the vault owner cannot refresh tokens: {e}"),
                    hint: None,
                    retryable: false,
                    status: None,
                    sign_in: None,
                })
            })?;
            let refresher = Refresher::new(
                built.catalog.clone(),
                Arc::new(vault.clone()),
                &built.config,
                built.http.clone(),
            );
            let deadline = crate::budget::deadline_after(budget);
            refresher
                .refresh(key, seen_version, force, deadline)
                .await
                .map_err(RefreshFailure::from)
        })
    }
}
