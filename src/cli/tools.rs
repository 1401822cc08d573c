//! `keyward tools` and `keyward call`: the catalog, and one tool call from the shell. `call`
//! goes through the same [`Executor`] as an MCP client's call — scopes, refresh, host pinning,
//! projection, redaction, audit — so what works here works for the model, and a failing call
//! prints the same error result the model would see (and exits non-zero).

use std::sync::Arc;

use clap::Args;
use keyward::config::Home;
use keyward::error::{Error, Result};
use keyward::exec::{CallContext, Executor};
use keyward::vault::{OpenMode, DEFAULT_USER};

#[derive(Args)]
pub struct ToolsArgs {
    #[arg(long)]
    json: bool,
    /// Only this provider's tools
    #[arg(long, value_name = "P")]
    provider: Option<String>,
}

#[derive(Args)]
pub struct CallArgs {
    /// The tool's name, e.g. github_list_pull_requests
    tool: String,
    /// The arguments, a JSON object
    #[arg(long, default_value = "{}", value_name = "JSON")]
    args: String,
    #[arg(long, default_value = DEFAULT_USER)]
    user: String,
    /// The provider account (default: `default`, or the only one)
    #[arg(long)]
    account: Option<String>,
}

pub fn list(home: &Home, args: ToolsArgs) -> Result<()> {
    let (_, catalog) = super::load_catalog(home)?;
    if let Some(p) = &args.provider {
        super::check_provider(&catalog, p)?;
    }
    let rows: Vec<_> = catalog
        .tools()
        .filter(|(p, _)| args.provider.as_ref().is_none_or(|want| &p.name == want))
        .collect();
    if args.json {
        let items: Vec<serde_json::Value> = rows
            .iter()
            .map(|(p, t)| {
                serde_json::json!({
                    "name": t.name, "provider": p.name, "toolset": t.toolset, "title": t.title,
                    "read_only": t.read_only, "destructive": t.destructive, "scopes": t.scopes,
                })
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&items).expect("JSON"));
        return Ok(());
    }
    println!(
        "{:<28} {:<8} {:<14} {:<11} SCOPES",
        "TOOL", "PROVIDER", "TOOLSET", "KIND"
    );
    for (p, t) in rows {
        let kind = if t.read_only {
            "read-only"
        } else if t.destructive {
            "destructive"
        } else {
            "write"
        };
        let scopes = if t.scopes.is_empty() {
            "(none)".to_string()
        } else {
            t.scopes.join(" ")
        };
        println!(
            "{:<28} {:<8} {:<14} {:<11} {}",
            t.name, p.name, t.toolset, kind, scopes
        );
    }
    Ok(())
}

pub async fn call(home: &Home, args: CallArgs) -> Result<()> {
    let CallArgs {
        tool,
        args,
        user,
        account,
    } = args;
    let args: serde_json::Value = serde_json::from_str(&args)
        .map_err(|e| Error::usage(format!("--args is not valid JSON ({e}); pass an object, e.g. --args '{{\"owner\":\"octocat\"}}'")))?;
    let serde_json::Value::Object(args) = args else {
        return Err(Error::usage(
            "--args must be a JSON object, e.g. --args '{}'",
        ));
    };
    let (config, catalog) = super::load_catalog(home)?;
    let vault = keyward::oauth::peers::open_vault(home, OpenMode::Existing)
        .await
        .map_err(|e| match e {
            Error::NotFound(_) => Error::NotFound(format!(
                "user {user} has no connections yet: run `keyward connect PROVIDER` or `keyward import PROVIDER` first"
            )),
            other => other,
        })?;
    let executor = Executor::new(Arc::new(catalog), Arc::new(vault), &config)?;
    let ctx = CallContext {
        user,
        account,
        session: None,
    };
    let outcome = executor.call(&ctx, &tool, args).await;
    // The process ends next: the call's audit entry must be on disk first.
    executor.vault().flush().await?;
    match outcome {
        Ok(value) => {
            println!("{}", serde_json::to_string_pretty(&value).expect("JSON"));
            Ok(())
        }
        Err(e) => {
            println!(
                "{}",
                serde_json::to_string_pretty(&e.to_json()).expect("JSON")
            );
            Err(Error::other(e.to_string()))
        }
    }
}
