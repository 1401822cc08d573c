//! The commands of the `keyward` binary, one file per group. Each file holds its commands'
//! arguments (clap) and what they print; the work itself — storing, auditing, refreshing,
//! serving — is a library call, so the integration tests and benches exercise the same code
//! the commands run, and no output format lives in the library.
//!
//! - [`keys`] — `init`, `rotate-key`, `rekey`: the home folder, the vault and its keys;
//! - [`connections`] — `connect`, `disconnect`, `import`: grants in and out of the vault;
//! - [`status`] — `status`: what is connected, never a token;
//! - [`audit`] — `audit`: the log, and following it;
//! - [`users`] — `users add|list|remove`: the HTTP server's users and their API keys;
//! - [`clients`] — `clients add|list|remove`: the programs that may exchange a user's
//!   credential for a provider token (`POST /oauth/token`);
//! - [`tools`] — `tools`, `call`: the catalog, and one tool call from the shell;
//! - [`serve`] — `serve`: the MCP server over stdio or HTTP;
//! - [`store`] — `store status|copy`: where the vault is, and moving it (sled ⇄ PostgreSQL).
//!
//! The helpers below are the ones several groups share: opening the vault the way a command
//! needs it, the catalog as the home's config shapes it, and durations for people.

pub mod audit;
pub mod clients;
pub mod connections;
pub mod keys;
pub mod serve;
pub mod status;
pub mod store;
pub mod tools;
pub mod users;

use clap::Args;
use keyward::catalog::Catalog;
use keyward::config::{Config, Home};
use keyward::error::{Error, Result};
use keyward::vault::{OpenMode, Vault, DEFAULT_ACCOUNT, DEFAULT_USER};

/// Whose connection a command is about.
#[derive(Args, Clone)]
pub struct Who {
    /// The keyward user that owns the connection
    #[arg(long, default_value = DEFAULT_USER)]
    pub user: String,
    /// The provider account, when a user has several
    #[arg(long, default_value = DEFAULT_ACCOUNT)]
    pub account: String,
}

/// Open for writing, creating what is missing with a one-line notice: the person must learn at
/// once that there is now a master key to back up.
async fn open_for_write(home: &Home) -> Result<Vault> {
    let vault = keyward::oauth::peers::open_vault(home, OpenMode::Create).await?;
    if !vault.created().is_empty() {
        eprintln!(
            "keyward: created {} — back up {} (or your KEYWARD_MASTER_KEY): without it the vault cannot be opened",
            vault.created().join(", "),
            home.key_file().display()
        );
    }
    Ok(vault)
}

/// Open for reading; `None` when there is no vault yet, which read-only commands report as
/// "nothing there" rather than creating one.
async fn open_existing(home: &Home) -> Result<Option<Vault>> {
    match keyward::oauth::peers::open_vault(home, OpenMode::Existing).await {
        Ok(vault) => Ok(Some(vault)),
        Err(Error::NotFound(_)) => Ok(None),
        Err(e) => Err(e),
    }
}

/// The catalog as this home's config shapes it (extra manifest folders, endpoint overrides).
fn load_catalog(home: &Home) -> Result<(Config, Catalog)> {
    let config = Config::load(home)?;
    let catalog = Catalog::load(&config.tools_dirs, &config.providers)?;
    Ok((config, catalog))
}

/// A usage error naming the providers there are, unless `provider` is one of them.
fn check_provider(catalog: &Catalog, provider: &str) -> Result<()> {
    if catalog.provider(provider).is_some() {
        return Ok(());
    }
    let known: Vec<String> = catalog.providers().map(|p| p.name.clone()).collect();
    Err(Error::usage(format!(
        "unknown provider {provider:?}: use one of {}",
        known.join(", ")
    )))
}

/// A duration for people: seconds, minutes, hours or days, whichever reads best.
fn human_duration(secs: i64) -> String {
    let (sign, s) = if secs < 0 { ("-", -secs) } else { ("", secs) };
    let text = if s < 120 {
        format!("{s}s")
    } else if s < 2 * 3600 {
        format!("{}m", s / 60)
    } else if s < 2 * 86400 {
        format!("{}h", s / 3600)
    } else {
        format!("{}d", s / 86400)
    };
    format!("{sign}{text}")
}
