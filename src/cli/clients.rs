//! `keyward clients add|list|remove`: the programs that may exchange a user's credential for a
//! provider token at `POST /oauth/token` (`[exchange] enabled = true`). `add` prints the new
//! `client_id` and secret once, on stdout, as `KEY=value` lines a shell can read; the
//! explanation goes to stderr. Storing, checking and auditing are
//! [`keyward::vault::clients`]'s work; the providers are checked against the catalog here.

use clap::Subcommand;
use keyward::catalog::split_scopes;
use keyward::config::Home;
use keyward::error::{Error, Result};
use keyward::vault::clients::{self, Allowance};

#[derive(Subcommand)]
pub enum ClientsCommand {
    /// Register a client and print its client_id and secret (the secret is shown only once)
    Add {
        name: String,
        /// Providers it may get tokens for (comma-separated: github,google)
        #[arg(long, value_delimiter = ',', value_name = "LIST", required = true)]
        providers: Vec<String>,
        /// Scopes a token it gets may carry (space- or comma-separated: "repo read:user")
        #[arg(long, value_name = "SCOPES", required = true)]
        scopes: String,
        /// Provider accounts it may get tokens of (comma-separated; default: any)
        #[arg(long, value_delimiter = ',', value_name = "LIST")]
        accounts: Vec<String>,
    },
    /// List the clients and what they may receive (never a secret)
    List {
        /// Print JSON instead of a table
        #[arg(long)]
        json: bool,
    },
    /// Remove a client: its secret stops working at once
    Remove { name: String },
}

pub async fn run(home: &Home, command: ClientsCommand) -> Result<()> {
    match command {
        ClientsCommand::Add {
            name,
            providers,
            scopes,
            accounts,
        } => {
            let allowance = Allowance {
                providers: dedup(providers),
                scopes: split_scopes(&scopes),
                accounts: dedup(accounts),
            };
            add(home, &name, allowance).await
        }
        ClientsCommand::List { json } => list(home, json).await,
        ClientsCommand::Remove { name } => remove(home, &name).await,
    }
}

/// Trimmed, without empty entries or repeats, in the order given.
fn dedup(items: Vec<String>) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for item in items {
        let item = item.trim().to_string();
        if !item.is_empty() && !out.contains(&item) {
            out.push(item);
        }
    }
    out
}

async fn add(home: &Home, name: &str, allowance: Allowance) -> Result<()> {
    // Before the vault is opened (or created): a bad registration changes nothing on disk.
    clients::check(name, &allowance)?;
    let (_, catalog) = super::load_catalog(home)?;
    for provider in &allowance.providers {
        super::check_provider(&catalog, provider)?;
    }
    let vault = super::open_for_write(home).await?;
    let new = clients::add(&vault, name, allowance).await?;
    eprintln!(
        "registered client {name}: it may exchange a user's keyward credential for their {} \
         token carrying at most the scopes {}. The secret below is shown only this once; give \
         both lines to the backend, which sends them to POST /oauth/token (HTTP Basic or \
         client_id/client_secret form fields). Turn the endpoint on with `[exchange] enabled = \
         true` in config.toml.",
        new.client.allowance.providers.join("/"),
        new.client.allowance.scopes.join(" ")
    );
    println!("client_id={}", new.client.client_id);
    println!("client_secret={}", new.secret.expose());
    Ok(())
}

async fn list(home: &Home, json: bool) -> Result<()> {
    let list = match super::open_existing(home).await? {
        Some(vault) => clients::list(&vault).await?,
        None => Vec::new(),
    };
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&list).expect("clients serialize")
        );
        return Ok(());
    }
    if list.is_empty() {
        println!(
            "no clients: register one with `keyward clients add NAME --providers github --scopes \
             \"repo read:user\"`"
        );
        return Ok(());
    }
    println!(
        "{:<20} {:<28} {:<16} {:<16} {:<20} SCOPES",
        "CLIENT", "CLIENT ID", "PROVIDERS", "ACCOUNTS", "CREATED"
    );
    for client in list {
        let accounts = if client.allowance.accounts.is_empty() {
            "any".to_string()
        } else {
            client.allowance.accounts.join(",")
        };
        println!(
            "{:<20} {:<28} {:<16} {:<16} {:<20} {}",
            client.name,
            client.client_id,
            client.allowance.providers.join(","),
            accounts,
            client.created,
            client.allowance.scopes.join(" ")
        );
    }
    Ok(())
}

async fn remove(home: &Home, name: &str) -> Result<()> {
    let not_found = || {
        Error::NotFound(format!(
            "there is no client {name}: `keyward clients list` lists them"
        ))
    };
    let Some(vault) = super::open_existing(home).await? else {
        return Err(not_found());
    };
    if !clients::remove(&vault, name).await? {
        return Err(not_found());
    }
    println!("removed client {name}; its secret no longer works");
    Ok(())
}
