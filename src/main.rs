//! The `keyward` command line: parse, pick the command, map its error to the exit code.
//!
//! Each command group lives in [`cli`] (one file each, with its arguments and its output); the
//! work they do is the library's. Every command runs on the one tokio runtime built here: the
//! vault is async (it may be another process's, reached over a socket, and while this process
//! owns it, it serves the others on this runtime).

mod cli;

use std::future::Future;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use keyward::config::Home;
use keyward::error::{Error, Result};

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

#[derive(Subcommand)]
enum Command {
    /// Create the home folder, the master key and the vault
    Init,
    /// Store a token response (JSON on stdin) as a connection
    Import(cli::connections::ImportArgs),
    /// List connections: scopes, expiry, status, last use (never a token)
    Status(cli::status::StatusArgs),
    /// Revoke a connection at the provider, then remove it from the vault
    Disconnect(cli::connections::DisconnectArgs),
    /// Connect a provider account: sign in with the browser (or --device) and store the grant
    Connect(cli::connections::ConnectArgs),
    /// Show the audit log, newest last
    Audit(cli::audit::AuditArgs),
    /// Add a new data key and re-seal every record under it
    RotateKey,
    /// Replace the master key (only the keyring is re-wrapped)
    Rekey(cli::keys::RekeyArgs),
    /// List every tool: provider, toolset, read-only or destructive, scopes
    Tools(cli::tools::ToolsArgs),
    /// Run one tool call and print the result JSON
    Call(cli::tools::CallArgs),
    /// Serve MCP: over stdio (for Claude Desktop, IDEs), or over HTTP with --http
    Serve(cli::serve::ServeArgs),
    /// Manage the users of the HTTP server and their API keys
    Users {
        #[command(subcommand)]
        command: cli::users::UsersCommand,
    },
    /// Manage the token-exchange clients: programs that may exchange a user's credential for
    /// a provider token at POST /oauth/token
    Clients {
        #[command(subcommand)]
        command: cli::clients::ClientsCommand,
    },
    /// Where the vault is, and copying it between sled and PostgreSQL
    Store {
        #[command(subcommand)]
        command: cli::store::StoreCommand,
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
    match block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(e.exit_code() as u8)
        }
    }
}

async fn run(cli: Cli) -> Result<()> {
    let home = Home::resolve(cli.home.as_deref())?;
    match cli.command {
        Command::Init => cli::keys::init(&home).await,
        Command::Import(args) => cli::connections::import(&home, args).await,
        Command::Status(args) => cli::status::run(&home, args).await,
        Command::Disconnect(args) => cli::connections::disconnect(&home, args).await,
        Command::Connect(args) => cli::connections::connect(&home, args).await,
        Command::Audit(args) => cli::audit::run(&home, args).await,
        Command::RotateKey => cli::keys::rotate_key(&home).await,
        Command::Rekey(args) => cli::keys::rekey(&home, args).await,
        Command::Tools(args) => cli::tools::list(&home, args),
        Command::Call(args) => cli::tools::call(&home, args).await,
        Command::Serve(args) => cli::serve::run(&home, args).await,
        Command::Users { command } => cli::users::run(&home, command).await,
        Command::Clients { command } => cli::clients::run(&home, command).await,
        Command::Store { command } => cli::store::run(&home, command).await,
    }
}

/// Run the command on the process's one runtime. Multi-threaded because the server answers
/// many calls at once; the one-shot commands run the same way rather than on a second kind of
/// runtime.
fn block_on(command: impl Future<Output = Result<()>>) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::io("starting the async runtime", e))?;
    let result = runtime.block_on(command);
    // Shutdown is bounded: whatever the command awaited has finished, and a task still stuck in
    // a blocking call (the server's stdin reader only returns on input) must not keep the
    // process alive after the command is done.
    runtime.shutdown_timeout(Duration::from_millis(200));
    result
}
