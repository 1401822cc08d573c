//! `keyward status`: what is connected — scopes, expiry, status, last use, last token exchange
//! (which client took the connection's token through `POST /oauth/token`, when, how it ended)
//! — and never a token.
//! It is the first thing a person runs when a tool call fails, so a record that does not open
//! is listed as an error next to the others (and the command exits non-zero) instead of hiding
//! them all. Which rows there are, with reasons scrubbed and broken records audited, is
//! [`Vault::status`]'s business; this file only lays them out as a table or as JSON.

use clap::Args;
use keyward::config::Home;
use keyward::error::{Error, Result};
use std::collections::HashMap;

use keyward::vault::clients::LastExchange;
use keyward::vault::transfer::Location;
use keyward::vault::{ConnKey, ConnectionStatus, Listed};

#[derive(Args)]
pub struct StatusArgs {
    /// Only this user's connections
    #[arg(long)]
    user: Option<String>,
    /// Print JSON instead of a table
    #[arg(long)]
    json: bool,
}

pub async fn run(home: &Home, args: StatusArgs) -> Result<()> {
    let Some(vault) = super::open_existing(home).await? else {
        if args.json {
            println!("[]");
        } else {
            // Where the vault would be: the home folder, or the PostgreSQL store it names.
            let place = match Location::of(home) {
                Ok(Location::Postgres(url)) => url.to_string(),
                _ => home.dir.display().to_string(),
            };
            println!("no connections (no vault in {place} yet): add one with `keyward import PROVIDER` or `keyward connect PROVIDER`");
        }
        return Ok(());
    };
    let now = chrono::Utc::now().timestamp();
    let rows = vault.status(args.user.as_deref()).await?;
    let exchanges: HashMap<ConnKey, LastExchange> = vault
        .exchanges(args.user.as_deref())
        .await?
        .into_iter()
        .collect();
    if args.json {
        print_json(&rows, &exchanges, now);
    } else {
        print_table(&rows, &exchanges, now);
    }
    let failed = rows.iter().filter(|r| r.is_err()).count();
    if failed > 0 {
        return Err(Error::other(format!(
            "{failed} record(s) did not open; the others are listed above"
        )));
    }
    Ok(())
}

fn print_json(rows: &[Listed], exchanges: &HashMap<ConnKey, LastExchange>, now: i64) {
    let items: Vec<serde_json::Value> = rows
        .iter()
        .map(|row| match row {
            Ok((c, last_used)) => serde_json::json!({
                "user": c.key.user, "provider": c.key.provider, "account": c.key.account,
                "scopes": c.record.scopes,
                "expires_at": c.record.expires_at,
                "expires_in_secs": c.record.expires_in(now),
                "status": match &c.record.status {
                    ConnectionStatus::Active => "active",
                    ConnectionStatus::NeedsReconnect { .. } => "needs_reconnect",
                },
                "reason": match &c.record.status {
                    ConnectionStatus::NeedsReconnect { reason } => Some(reason),
                    _ => None,
                },
                "has_refresh_token": c.record.refresh_token.is_some(),
                "last_used": last_used,
                "last_exchange": exchanges.get(&c.key),
                "version": c.version,
            }),
            Err(e) => serde_json::json!({ "error": e.to_string() }),
        })
        .collect();
    println!("{}", serde_json::to_string_pretty(&items).expect("JSON"));
}

fn print_table(rows: &[Listed], exchanges: &HashMap<ConnKey, LastExchange>, now: i64) {
    if rows.is_empty() {
        println!(
            "no connections: add one with `keyward import PROVIDER` or `keyward connect PROVIDER`"
        );
        return;
    }
    println!(
        "{:<12} {:<8} {:<14} {:<10} {:<28} {:<10} {:<24} SCOPES",
        "USER", "PROVIDER", "ACCOUNT", "EXPIRES IN", "STATUS", "LAST USED", "LAST EXCHANGE"
    );
    for row in rows {
        match row {
            Ok((c, last_used)) => {
                let expires = c
                    .record
                    .expires_in(now)
                    .map(super::human_duration)
                    .unwrap_or_else(|| "never".into());
                let last = last_used
                    .map(|t| format!("{} ago", super::human_duration(now - t)))
                    .unwrap_or_else(|| "never".into());
                let exchange = exchanges
                    .get(&c.key)
                    .map(|x| {
                        let ago = super::human_duration(now - x.time);
                        match x.outcome.as_str() {
                            "ok" => format!("{} {ago} ago", x.client),
                            refused => format!("{} {ago} ago ({refused})", x.client),
                        }
                    })
                    .unwrap_or_else(|| "never".into());
                println!(
                    "{:<12} {:<8} {:<14} {:<10} {:<28} {:<10} {:<24} {}",
                    c.key.user,
                    c.key.provider,
                    c.key.account,
                    expires,
                    c.record.status.label(),
                    last,
                    exchange,
                    c.record.scopes.join(" ")
                );
            }
            Err(e) => eprintln!("error: {e}"),
        }
    }
}
