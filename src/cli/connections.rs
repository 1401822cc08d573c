//! `keyward connect`, `disconnect` and `import`: grants into and out of the vault. All three
//! check the provider and the connection's name before anything else, so a typo never sends
//! anyone to a browser, never revokes the wrong grant and never creates a vault. The flows
//! themselves are the library's ([`keyward::oauth::connect::run`],
//! [`keyward::oauth::revoke::disconnect`], [`keyward::oauth::import::store`], each auditing what
//! it did); here they get their arguments and their words for the person at the terminal.

use std::io::{IsTerminal, Read};
use std::sync::Arc;

use clap::Args;
use keyward::config::Home;
use keyward::error::{Error, Result};
use keyward::oauth::connect::{self, ConnectRequest, Selection};
use keyward::oauth::revoke::{self, Revoked};
use keyward::oauth::{import, token_response};
use keyward::vault::ConnKey;

use super::Who;

#[derive(Args)]
pub struct ImportArgs {
    /// github, slack or google
    provider: String,
    #[command(flatten)]
    who: Who,
}

#[derive(Args)]
pub struct DisconnectArgs {
    provider: String,
    #[command(flatten)]
    who: Who,
    /// Remove keyward's copy even when revoking at the provider fails (the grant then
    /// stays valid at the provider until you revoke it there)
    #[arg(long)]
    force: bool,
}

#[derive(Args)]
pub struct ConnectArgs {
    /// github, slack or google
    provider: String,
    #[command(flatten)]
    who: Who,
    /// Ask only for the scopes the read-only tools need
    #[arg(long)]
    read_only: bool,
    /// Ask for the scopes of these toolsets only (e.g. issues,pull_requests)
    #[arg(long, value_delimiter = ',', value_name = "LIST")]
    toolsets: Vec<String>,
    /// Ask for the scopes of these tools only (comma-separated names)
    #[arg(long, value_delimiter = ',', value_name = "LIST")]
    tools: Vec<String>,
    /// Ask for exactly these scopes (comma-separated) instead of deriving them from tools
    #[arg(long, value_delimiter = ',', value_name = "LIST", conflicts_with_all = ["read_only", "toolsets", "tools"])]
    scopes: Vec<String>,
    /// Do not try to open a browser; the URL is printed to stderr either way
    #[arg(long)]
    no_browser: bool,
    /// Use the device flow (GitHub, Google): enter a short code on any device
    #[arg(long)]
    device: bool,
    /// Give up waiting for the browser or the device approval after SECS seconds
    #[arg(long, value_name = "SECS", default_value_t = 300)]
    timeout: u64,
}

pub async fn import(home: &Home, args: ImportArgs) -> Result<()> {
    let (_, catalog) = super::load_catalog(home)?;
    super::check_provider(&catalog, &args.provider)?;
    let key = ConnKey::new(&args.who.user, &args.provider, &args.who.account)?;
    if std::io::stdin().is_terminal() {
        eprintln!("keyward: paste the token response JSON, then press Ctrl-D");
    }
    let mut input = zeroize::Zeroizing::new(String::new());
    std::io::stdin()
        .read_to_string(&mut input)
        .map_err(|e| Error::io("reading the token response from stdin", e))?;
    if input.trim().is_empty() {
        return Err(Error::usage(format!(
            "no token response on stdin: pipe one in, e.g. `keyward import {} < token.json`",
            args.provider
        )));
    }
    // Parse before opening the vault: bad input must not create or change anything.
    let record = token_response::parse(&input, chrono::Utc::now().timestamp())?;
    let vault = super::open_for_write(home).await?;
    let version = import::store(&vault, &key, &record).await?;
    let scopes = if record.scopes.is_empty() {
        "(none stated)".into()
    } else {
        record.scopes.join(" ")
    };
    println!("imported {key} (version {version}); scopes: {scopes}");
    Ok(())
}

pub async fn disconnect(home: &Home, args: DisconnectArgs) -> Result<()> {
    let (config, catalog) = super::load_catalog(home)?;
    super::check_provider(&catalog, &args.provider)?;
    let key = ConnKey::new(&args.who.user, &args.provider, &args.who.account)?;
    let Some(vault) = super::open_existing(home).await? else {
        return Err(Error::NotFound(format!(
            "there is no connection {key}: `keyward status` lists them"
        )));
    };
    let title = catalog
        .provider(&args.provider)
        .map(|p| p.title.clone())
        .unwrap_or_else(|| args.provider.clone());
    let done = revoke::disconnect(
        Arc::new(vault),
        Arc::new(catalog),
        &config,
        &key,
        args.force,
    )
    .await?;
    match &done.revocation {
        Ok(Revoked::Now) => println!("revoked at {title} and disconnected {key}"),
        Ok(Revoked::Already(why)) => println!("disconnected {key} ({why})"),
        Err(reason) => {
            eprintln!(
                "warning: {key} was not revoked at {title} ({reason}); the grant still lives there: revoke it at {}",
                done.manual_revoke
            );
            println!("disconnected {key} locally (--force)");
        }
    }
    Ok(())
}

pub async fn connect(home: &Home, args: ConnectArgs) -> Result<()> {
    let (config, catalog) = super::load_catalog(home)?;
    super::check_provider(&catalog, &args.provider)?;
    let key = ConnKey::new(&args.who.user, &args.provider, &args.who.account)?;
    if args.timeout == 0 {
        return Err(Error::usage("--timeout must be at least 1 second"));
    }
    let request = ConnectRequest {
        key,
        selection: Selection {
            read_only: args.read_only,
            toolsets: args.toolsets,
            tools: args.tools,
            scopes: args.scopes,
        },
        device: args.device,
        open_browser: !args.no_browser,
        timeout: std::time::Duration::from_secs(args.timeout),
    };
    // Check the scopes and the vault (master key) before sending anyone to a browser.
    if let Some(spec) = catalog.provider(&args.provider) {
        connect::requested_scopes(&catalog, spec, &request.selection)?;
    }
    let vault = super::open_for_write(home).await?;
    let notify = |line: &str| eprintln!("{line}");
    let done = connect::run(&vault, &config, &catalog, &request, &notify).await?;
    let list = |s: &[String]| {
        if s.is_empty() {
            "(none)".to_string()
        } else {
            s.join(" ")
        }
    };
    println!("connected {} (version {})", done.key, done.version);
    println!("scopes asked:   {}", list(&done.requested));
    if done.granted.is_empty() {
        println!("scopes granted: (the provider did not say; it will enforce what was granted)");
    } else {
        println!("scopes granted: {}", list(&done.granted));
    }
    let now = chrono::Utc::now().timestamp();
    match (done.expires_at, done.has_refresh_token) {
        (Some(at), true) => println!(
            "the access token expires in {}; keyward refreshes it automatically",
            super::human_duration(at - now)
        ),
        (Some(at), false) => println!(
            "the access token expires in {} and there is no refresh token: connect again then",
            super::human_duration(at - now)
        ),
        (None, _) => println!("the access token does not expire"),
    }
    if !done.missing.is_empty() {
        eprintln!(
            "warning: {} did not grant {}; tools that need them will fail until you connect again and approve them",
            args.provider,
            done.missing.join(" ")
        );
    }
    Ok(())
}
