//! The `keyward` command line: parse, call into the library, print.

use std::io::{IsTerminal, Read};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Args, Parser, Subcommand};
use keyward::catalog::Catalog;
use keyward::config::{Config, Home};
use keyward::error::{Error, Result};
use keyward::exec::{CallContext, CallOutcome, Executor};
use keyward::oauth::token_response;
use keyward::vault::{AuditEntry, ConnKey, OpenMode, Vault, DEFAULT_ACCOUNT, DEFAULT_USER};

#[derive(Parser)]
#[command(
    name = "keyward",
    version,
    about = "An MCP tool server that keeps your OAuth tokens away from the model"
)]
struct Cli {
    /// Home folder (default: $KEYWARD_HOME, else $XDG_DATA_HOME/keyward, else ~/.local/share/keyward)
    #[arg(long, global = true, value_name = "DIR")]
    home: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Args, Clone)]
struct Who {
    /// The keyward user that owns the connection
    #[arg(long, default_value = DEFAULT_USER)]
    user: String,
    /// The provider account, when a user has several
    #[arg(long, default_value = DEFAULT_ACCOUNT)]
    account: String,
}

#[derive(Subcommand)]
enum Command {
    /// Create the home folder, the master key and the vault
    Init,
    /// Store a token response (JSON on stdin) as a connection
    Import {
        /// github, slack or google
        provider: String,
        #[command(flatten)]
        who: Who,
    },
    /// List connections: scopes, expiry, status, last use (never a token)
    Status {
        /// Only this user's connections
        #[arg(long)]
        user: Option<String>,
        /// Print JSON instead of a table
        #[arg(long)]
        json: bool,
    },
    /// Revoke a connection at the provider, then remove it from the vault
    Disconnect {
        provider: String,
        #[command(flatten)]
        who: Who,
        /// Remove keyward's copy even when revoking at the provider fails (the grant then
        /// stays valid at the provider until you revoke it there)
        #[arg(long)]
        force: bool,
    },
    /// Connect a provider account: sign in with the browser (or --device) and store the grant
    Connect(ConnectArgs),
    /// Show the audit log, newest last
    Audit {
        #[arg(long)]
        json: bool,
        /// Show only the last N entries
        #[arg(long, value_name = "N")]
        limit: Option<usize>,
        /// Keep printing new entries as they are written
        #[arg(long)]
        follow: bool,
    },
    /// Add a new data key and re-seal every record under it
    RotateKey,
    /// Replace the master key (only the keyring is re-wrapped)
    Rekey {
        /// Take the new key from this file (base64 of 32 bytes, mode 0600) instead of generating one
        #[arg(long, value_name = "F")]
        new_key_file: Option<PathBuf>,
    },
    /// List every tool: provider, toolset, read-only or destructive, scopes
    Tools {
        #[arg(long)]
        json: bool,
        /// Only this provider's tools
        #[arg(long, value_name = "P")]
        provider: Option<String>,
    },
    /// Run one tool call and print the result JSON
    Call {
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
    },
    /// Serve MCP: over stdio (for Claude Desktop, IDEs), or over HTTP with --http
    Serve(ServeArgs),
    /// Manage the users of the HTTP server and their API keys
    Users {
        #[command(subcommand)]
        command: UsersCommand,
    },
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { 2 } else { 0 });
        }
    };
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(e.exit_code() as u8)
        }
    }
}

fn run(cli: Cli) -> Result<()> {
    let home = Home::resolve(cli.home.as_deref())?;
    match cli.command {
        Command::Init => init(&home),
        Command::Import { provider, who } => import(&home, &provider, &who),
        Command::Status { user, json } => status(&home, user.as_deref(), json),
        Command::Disconnect {
            provider,
            who,
            force,
        } => disconnect(&home, &provider, &who, force),
        Command::Connect(args) => connect(&home, args),
        Command::Audit {
            json,
            limit,
            follow,
        } => audit(&home, json, limit, follow),
        Command::RotateKey => rotate_key(&home),
        Command::Rekey { new_key_file } => rekey(&home, new_key_file),
        Command::Tools { json, provider } => tools(&home, json, provider.as_deref()),
        Command::Call {
            tool,
            args,
            user,
            account,
        } => call(&home, &tool, &args, &user, account),
        Command::Serve(args) => serve(&home, args),
        Command::Users { command } => users(&home, command),
    }
}

/// Open for writing, creating what is missing with a one-line notice.
fn open_for_write(home: &Home) -> Result<Vault> {
    let vault = keyward::oauth::peers::open_vault(home, OpenMode::Create)?;
    if !vault.created().is_empty() {
        eprintln!(
            "keyward: created {} — back up {} (or your KEYWARD_MASTER_KEY): without it the vault cannot be opened",
            vault.created().join(", "),
            home.key_file().display()
        );
    }
    Ok(vault)
}

/// The catalog as this home's config shapes it (extra manifest folders, endpoint overrides).
fn load_catalog(home: &Home) -> Result<(Config, Catalog)> {
    let config = Config::load(home)?;
    let catalog = Catalog::load(&config.tools_dirs, &config.providers)?;
    Ok((config, catalog))
}

fn check_provider(home: &Home, provider: &str) -> Result<()> {
    let (_, catalog) = load_catalog(home)?;
    let known: Vec<String> = catalog.providers().map(|p| p.name.clone()).collect();
    if known.iter().any(|p| p == provider) {
        Ok(())
    } else {
        Err(Error::usage(format!(
            "unknown provider {provider:?}: use one of {}",
            known.join(", ")
        )))
    }
}

fn init(home: &Home) -> Result<()> {
    let vault = keyward::oauth::peers::open_vault(home, OpenMode::Create)?;
    if vault.created().is_empty() {
        println!("keyward is already set up in {}", home.dir.display());
    } else {
        println!("created {}", vault.created().join(", "));
    }
    println!("home:   {}", home.dir.display());
    println!("vault:  {}", home.vault_dir().display());
    if std::env::var_os("KEYWARD_MASTER_KEY").is_some() {
        println!(
            "master key: from KEYWARD_MASTER_KEY (id {})",
            vault.master_key_id()
        );
    } else {
        println!(
            "master key: {} (id {})",
            home.key_file().display(),
            vault.master_key_id()
        );
    }
    println!("Back up the master key somewhere safe: without it the vault cannot be opened.");
    Ok(())
}

fn import(home: &Home, provider: &str, who: &Who) -> Result<()> {
    check_provider(home, provider)?;
    let key = ConnKey::new(&who.user, provider, &who.account)?;
    if std::io::stdin().is_terminal() {
        eprintln!("keyward: paste the token response JSON, then press Ctrl-D");
    }
    let mut input = zeroize::Zeroizing::new(String::new());
    std::io::stdin()
        .read_to_string(&mut input)
        .map_err(|e| Error::io("reading the token response from stdin", e))?;
    if input.trim().is_empty() {
        return Err(Error::usage(format!(
            "no token response on stdin: pipe one in, e.g. `keyward import {provider} < token.json`"
        )));
    }
    // Parse before opening the vault: bad input must not create or change anything.
    let record = token_response::parse(&input, chrono::Utc::now().timestamp())?;
    let vault = open_for_write(home)?;
    let version = vault.put(&key, None, &record)?;
    vault.audit(&AuditEntry::new(&key.user, "import", "ok").connection(provider, &key.account));
    vault.flush()?;
    let scopes = if record.scopes.is_empty() {
        "(none stated)".into()
    } else {
        record.scopes.join(" ")
    };
    println!("imported {key} (version {version}); scopes: {scopes}");
    Ok(())
}

fn open_existing(home: &Home) -> Result<Option<Vault>> {
    match keyward::oauth::peers::open_vault(home, OpenMode::Existing) {
        Ok(vault) => Ok(Some(vault)),
        Err(Error::NotFound(_)) => Ok(None),
        Err(e) => Err(e),
    }
}

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

/// A record's own tokens. Reasons are redacted before they are stored; this also covers a reason
/// stored by an older keyward that did not.
fn own_secrets(record: &keyward::vault::TokenRecord) -> keyward::secret::Redactor {
    keyward::secret::Redactor::of(
        std::iter::once(&record.access_token).chain(&record.refresh_token),
    )
}

fn status(home: &Home, user: Option<&str>, json: bool) -> Result<()> {
    let Some(vault) = open_existing(home)? else {
        if json {
            println!("[]");
        } else {
            println!("no connections (no vault in {} yet): add one with `keyward import PROVIDER` or `keyward connect PROVIDER`", home.dir.display());
        }
        return Ok(());
    };
    let now = chrono::Utc::now().timestamp();
    let rows = vault.list(user)?;
    let mut failed = 0;
    if json {
        let items: Vec<serde_json::Value> = rows
            .iter()
            .map(|row| match row {
                Ok((c, last_used)) => serde_json::json!({
                    "user": c.key.user, "provider": c.key.provider, "account": c.key.account,
                    "scopes": c.record.scopes,
                    "expires_at": c.record.expires_at,
                    "expires_in_secs": c.record.expires_in(now),
                    "status": match &c.record.status {
                        keyward::vault::ConnectionStatus::Active => "active",
                        keyward::vault::ConnectionStatus::NeedsReconnect { .. } => "needs_reconnect",
                    },
                    "reason": match &c.record.status {
                        keyward::vault::ConnectionStatus::NeedsReconnect { reason } => Some(own_secrets(&c.record).text(reason)),
                        _ => None,
                    },
                    "has_refresh_token": c.record.refresh_token.is_some(),
                    "last_used": last_used,
                    "version": c.version,
                }),
                Err(e) => serde_json::json!({ "error": e.to_string() }),
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&items).expect("JSON"));
        failed = rows.iter().filter(|r| r.is_err()).count();
    } else if rows.is_empty() {
        println!(
            "no connections: add one with `keyward import PROVIDER` or `keyward connect PROVIDER`"
        );
    } else {
        println!(
            "{:<12} {:<8} {:<14} {:<10} {:<28} {:<10} SCOPES",
            "USER", "PROVIDER", "ACCOUNT", "EXPIRES IN", "STATUS", "LAST USED"
        );
        for row in &rows {
            match row {
                Ok((c, last_used)) => {
                    let expires = c
                        .record
                        .expires_in(now)
                        .map(human_duration)
                        .unwrap_or_else(|| "never".into());
                    let last = last_used
                        .map(|t| format!("{} ago", human_duration(now - t)))
                        .unwrap_or_else(|| "never".into());
                    println!(
                        "{:<12} {:<8} {:<14} {:<10} {:<28} {:<10} {}",
                        c.key.user,
                        c.key.provider,
                        c.key.account,
                        expires,
                        own_secrets(&c.record).text(&c.record.status.label()),
                        last,
                        c.record.scopes.join(" ")
                    );
                }
                Err(e) => {
                    failed += 1;
                    eprintln!("error: {e}");
                }
            }
        }
    }
    for row in &rows {
        if let Err(Error::RecordCorrupt {
            provider,
            user,
            account,
            ..
        }) = row
        {
            vault.audit(
                &AuditEntry::new(user, "open-failed", "error: record does not open")
                    .connection(provider, account),
            );
        }
    }
    if failed > 0 {
        return Err(Error::other(format!(
            "{failed} record(s) did not open; the others are listed above"
        )));
    }
    Ok(())
}

fn disconnect(home: &Home, provider: &str, who: &Who, force: bool) -> Result<()> {
    let (config, catalog) = load_catalog(home)?;
    check_provider(home, provider)?;
    let key = ConnKey::new(&who.user, provider, &who.account)?;
    let Some(vault) = open_existing(home)? else {
        return Err(Error::NotFound(format!(
            "there is no connection {key}: `keyward status` lists them"
        )));
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::io("starting the async runtime", e))?;
    let title = catalog
        .provider(provider)
        .map(|p| p.title.clone())
        .unwrap_or_else(|| provider.to_string());
    let done = runtime.block_on(keyward::oauth::revoke::disconnect(
        Arc::new(vault),
        Arc::new(catalog),
        &config,
        &key,
        force,
    ))?;
    match &done.revocation {
        Ok(keyward::oauth::revoke::Revoked::Now) => {
            println!("revoked at {title} and disconnected {key}")
        }
        Ok(keyward::oauth::revoke::Revoked::Already(why)) => {
            println!("disconnected {key} ({why})")
        }
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

fn print_audit(entries: &[(u64, AuditEntry)], json: bool) {
    for (_, e) in entries {
        if json {
            println!("{}", serde_json::to_string(e).expect("JSON"));
        } else {
            println!("{}", e.line());
        }
    }
}

fn audit(home: &Home, json: bool, limit: Option<usize>, follow: bool) -> Result<()> {
    let mut last = 0;
    if let Some(vault) = open_existing(home)? {
        let entries = vault.audit_entries(0, limit)?;
        last = entries.last().map(|(seq, _)| *seq).unwrap_or(0);
        print_audit(&entries, json);
    }
    if !follow {
        return Ok(());
    }
    // Reopen on each poll rather than holding the database: another keyward process may need it.
    loop {
        std::thread::sleep(std::time::Duration::from_millis(500));
        let vault = match keyward::oauth::peers::open_vault(home, OpenMode::Existing) {
            Ok(vault) => vault,
            Err(Error::NotFound(_)) | Err(Error::Vault(_)) => continue,
            Err(e) => return Err(e),
        };
        let entries = vault.audit_entries(last, None)?;
        if let Some((seq, _)) = entries.last() {
            last = *seq;
        }
        print_audit(&entries, json);
        use std::io::Write;
        let _ = std::io::stdout().flush();
    }
}

fn rotate_key(home: &Home) -> Result<()> {
    let vault = open_for_write(home)?;
    let report = vault.rotate_key(|done, total| eprintln!("re-sealed {done}/{total}"))?;
    vault.audit(&AuditEntry::new(
        "-",
        "rotate-key",
        if report.failed.is_empty() {
            "ok".to_string()
        } else {
            format!("error: {} record(s) did not open", report.failed.len())
        },
    ));
    vault.flush()?;
    if !report.failed.is_empty() {
        for f in &report.failed {
            eprintln!("error: {f}");
        }
        return Err(Error::other(format!(
            "data key {} is current, but {} record(s) could not be re-sealed; the old key is kept so nothing is lost. Fix or remove them and run `keyward rotate-key` again",
            report.key_id,
            report.failed.len()
        )));
    }
    println!(
        "data key {} is now current; re-sealed {} of {} record(s)",
        report.key_id, report.resealed, report.total
    );
    Ok(())
}

fn rekey(home: &Home, new_key_file: Option<PathBuf>) -> Result<()> {
    let vault = keyward::oauth::peers::open_vault(home, OpenMode::Existing)?;
    let old_id = vault.master_key_id();
    let location = vault.rekey(new_key_file.as_deref())?;
    vault.audit(&AuditEntry::new("-", "rekey", "ok"));
    vault.flush()?;
    println!("master key replaced (id {old_id} → {}); the new key is in {location}. Back it up now: the old key no longer opens the vault.", vault.master_key_id());
    Ok(())
}

fn tools(home: &Home, json: bool, provider: Option<&str>) -> Result<()> {
    let (_, catalog) = load_catalog(home)?;
    if let Some(p) = provider {
        if catalog.provider(p).is_none() {
            let known: Vec<String> = catalog.providers().map(|p| p.name.clone()).collect();
            return Err(Error::usage(format!(
                "unknown provider {p:?}: use one of {}",
                known.join(", ")
            )));
        }
    }
    let rows: Vec<_> = catalog
        .tools()
        .filter(|(p, _)| provider.is_none_or(|want| p.name == want))
        .collect();
    if json {
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

fn call(home: &Home, tool: &str, args: &str, user: &str, account: Option<String>) -> Result<()> {
    let args: serde_json::Value = serde_json::from_str(args)
        .map_err(|e| Error::usage(format!("--args is not valid JSON ({e}); pass an object, e.g. --args '{{\"owner\":\"octocat\"}}'")))?;
    let serde_json::Value::Object(args) = args else {
        return Err(Error::usage(
            "--args must be a JSON object, e.g. --args '{}'",
        ));
    };
    let (config, catalog) = load_catalog(home)?;
    let vault = keyward::oauth::peers::open_vault(home, OpenMode::Existing).map_err(|e| match e {
        Error::NotFound(_) => Error::NotFound(format!(
            "user {user} has no connections yet: run `keyward connect PROVIDER` or `keyward import PROVIDER` first"
        )),
        other => other,
    })?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::io("starting the async runtime", e))?;
    let executor = Executor::new(Arc::new(catalog), Arc::new(vault), &config)?;
    let ctx = CallContext {
        user: user.to_string(),
        account,
        session: None,
    };
    let outcome = runtime.block_on(executor.call(&ctx, tool, args));
    executor.vault().flush()?;
    match outcome {
        CallOutcome::Ok(value) => {
            println!("{}", serde_json::to_string_pretty(&value).expect("JSON"));
            Ok(())
        }
        CallOutcome::Err(e) => {
            println!(
                "{}",
                serde_json::to_string_pretty(&e.to_json()).expect("JSON")
            );
            Err(Error::other(e.to_string()))
        }
    }
}

// ---- serve and users ----------------------------------------------------------------------

#[derive(Args)]
struct ServeArgs {
    /// The keyward user whose connections a stdio session uses [default: default]
    #[arg(long)]
    user: Option<String>,
    /// Serve Streamable HTTP (/mcp) and legacy SSE (/sse) instead of stdio
    #[arg(long, value_name = "ADDR", num_args = 0..=1, default_missing_value = keyward::server::http::DEFAULT_ADDR)]
    http: Option<String>,
    /// Offer only these providers or provider:toolset groups (e.g. github,slack:chat)
    #[arg(long, value_delimiter = ',', value_name = "LIST")]
    toolsets: Option<Vec<String>>,
    /// Offer only these tools (comma-separated names)
    #[arg(long, value_delimiter = ',', value_name = "LIST")]
    tools: Option<Vec<String>>,
    /// Offer read-only tools only
    #[arg(long)]
    read_only: bool,
    /// List every tool, not only those of connected providers
    #[arg(long)]
    all_tools: bool,
    /// The provider account calls use when a user has several
    #[arg(long)]
    account: Option<String>,
    /// Log level on stderr (error, warn, info, debug, trace); RUST_LOG wins
    #[arg(long, value_name = "L")]
    log_level: Option<String>,
    /// HTTP: answer single replies with application/json instead of an SSE stream
    #[arg(long)]
    json_response: bool,
}

#[derive(Subcommand)]
enum UsersCommand {
    /// Add a user and print its new API key (shown only once)
    Add { name: String },
    /// List the users (never their keys)
    List,
    /// Remove a user: its API key stops working at once
    Remove { name: String },
}

fn serve(home: &Home, args: ServeArgs) -> Result<()> {
    keyward::server::run(
        home,
        keyward::server::ServeOptions {
            user: args.user,
            http: args.http,
            toolsets: args.toolsets,
            tools: args.tools,
            read_only: args.read_only,
            all_tools: args.all_tools,
            account: args.account,
            log_level: args.log_level,
            json_response: args.json_response,
        },
    )
}

fn users(home: &Home, command: UsersCommand) -> Result<()> {
    use keyward::vault::users;
    match command {
        UsersCommand::Add { name } => {
            users::check_user_name(&name)?;
            let vault = open_for_write(home)?;
            let key = users::add(&vault, &name)?;
            vault.audit(&AuditEntry::new(&name, "user-add", "ok"));
            vault.flush()?;
            eprintln!(
                "created user {name}; its API key is below and is shown only this once. HTTP \
                 clients send it as `Authorization: Bearer <key>`; the connections they use are \
                 {name}'s (`keyward import PROVIDER --user {name}`)."
            );
            println!("{}", key.expose());
            Ok(())
        }
        UsersCommand::List => {
            let Some(vault) = open_existing(home)? else {
                println!("no users: add one with `keyward users add NAME`");
                return Ok(());
            };
            let list = users::list(&vault)?;
            if list.is_empty() {
                println!("no users: add one with `keyward users add NAME`");
            } else {
                println!("{:<24} CREATED", "USER");
                for user in list {
                    println!("{:<24} {}", user.name, user.created);
                }
            }
            Ok(())
        }
        UsersCommand::Remove { name } => {
            let not_found = || {
                Error::NotFound(format!(
                    "there is no user {name}: `keyward users list` lists them"
                ))
            };
            let Some(vault) = open_existing(home)? else {
                return Err(not_found());
            };
            if !users::remove(&vault, &name)? {
                return Err(not_found());
            }
            vault.audit(&AuditEntry::new(&name, "user-remove", "ok"));
            vault.flush()?;
            println!("removed user {name}; its API key no longer works");
            Ok(())
        }
    }
}

// ---- connect ------------------------------------------------------------------------------

#[derive(Args)]
struct ConnectArgs {
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

fn connect(home: &Home, args: ConnectArgs) -> Result<()> {
    use keyward::oauth::connect::{self, ConnectRequest, Selection};
    let (config, catalog) = load_catalog(home)?;
    check_provider(home, &args.provider)?;
    let key = ConnKey::new(&args.who.user, &args.provider, &args.who.account)?;
    if args.timeout == 0 {
        return Err(Error::usage("--timeout must be at least 1 second"));
    }
    let request = ConnectRequest {
        key: key.clone(),
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
    let vault = open_for_write(home)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::io("starting the async runtime", e))?;
    let notify = |line: &str| eprintln!("{line}");
    let result = runtime.block_on(async {
        let authorized = connect::authorize(&config, &catalog, &request, &notify).await?;
        connect::store(&vault, &catalog, &key, authorized).await
    });
    let done = match result {
        Ok(done) => done,
        Err(e) => {
            connect::audit_failure(&vault, &key, &e);
            return Err(e);
        }
    };
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
            human_duration(at - now)
        ),
        (Some(at), false) => println!(
            "the access token expires in {} and there is no refresh token: connect again then",
            human_duration(at - now)
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
