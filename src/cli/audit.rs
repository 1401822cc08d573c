//! `keyward audit`: the audit log, newest last, as lines for people or JSON lines for tools;
//! `--follow` keeps printing new entries. Following polls and reopens the vault each time
//! instead of holding it: the database has one owner at a time, and a terminal left tailing the
//! log must not be it when an MCP client starts. Entries are written by the library, where the
//! audited work happens.

use std::io::Write;
use std::time::Duration;

use clap::Args;
use keyward::config::Home;
use keyward::error::{Error, Result};
use keyward::vault::{AuditEntry, OpenMode};

/// How often `--follow` looks for new entries.
const FOLLOW_POLL: Duration = Duration::from_millis(500);

#[derive(Args)]
pub struct AuditArgs {
    #[arg(long)]
    json: bool,
    /// Show only the last N entries
    #[arg(long, value_name = "N")]
    limit: Option<usize>,
    /// Keep printing new entries as they are written
    #[arg(long)]
    follow: bool,
}

pub async fn run(home: &Home, args: AuditArgs) -> Result<()> {
    let mut last = 0;
    if let Some(vault) = super::open_existing(home).await? {
        let entries = vault.audit_entries(0, args.limit).await?;
        last = entries.last().map(|(seq, _)| *seq).unwrap_or(0);
        print(&entries, args.json);
    }
    if !args.follow {
        return Ok(());
    }
    loop {
        tokio::time::sleep(FOLLOW_POLL).await;
        let vault = match keyward::oauth::peers::open_vault(home, OpenMode::Existing).await {
            Ok(vault) => vault,
            // Not there yet, or between two owners: the next poll will see it.
            Err(Error::NotFound(_)) | Err(Error::Vault(_)) => continue,
            Err(e) => return Err(e),
        };
        let entries = vault.audit_entries(last, None).await?;
        if let Some((seq, _)) = entries.last() {
            last = *seq;
        }
        print(&entries, args.json);
        let _ = std::io::stdout().flush();
    }
}

fn print(entries: &[(u64, AuditEntry)], json: bool) {
    for (_, e) in entries {
        if json {
            println!("{}", serde_json::to_string(e).expect("JSON"));
        } else {
            println!("{}", e.line());
        }
    }
}
