//! `keyward store status|copy`: where the vault is, and moving it between the embedded sled
//! database and PostgreSQL. The work is [`keyward::vault::transfer`]'s (and the PostgreSQL
//! store's); this file holds the arguments and what is printed. Nothing printed is secret: a
//! URL is shown without its password, the master key by its public id.

use clap::{Args, Subcommand};
use keyward::config::Home;
use keyward::error::{Error, Result};
use keyward::vault::transfer::{self, Location, StoreStatus};
use keyward::vault::OpenMode;

#[derive(Subcommand)]
pub enum StoreCommand {
    /// Where the vault is: backend, schema version, counts (PostgreSQL: server version and round trip)
    Status {
        /// Print JSON instead of lines
        #[arg(long)]
        json: bool,
    },
    /// Copy the whole vault, still sealed, to or from another store (a postgres:// URL or a home folder)
    Copy(CopyArgs),
}

#[derive(Args)]
pub struct CopyArgs {
    /// Copy this home's vault into URL (postgres://…) or into the home folder DIR
    #[arg(
        long,
        value_name = "URL|DIR",
        required_unless_present = "from",
        conflicts_with = "from"
    )]
    to: Option<String>,
    /// Copy the vault at URL (postgres://…) or in the home folder DIR into this home's store
    #[arg(long, value_name = "URL|DIR")]
    from: Option<String>,
    /// Replace a vault the target already holds (everything in it is lost)
    #[arg(long)]
    force: bool,
}

pub async fn run(home: &Home, command: StoreCommand) -> Result<()> {
    match command {
        StoreCommand::Status { json } => status(home, json).await,
        StoreCommand::Copy(args) => copy(home, args).await,
    }
}

async fn status(home: &Home, json: bool) -> Result<()> {
    // No vault is an error naming the store and `keyward init`, whichever the backend.
    let vault = keyward::oauth::peers::open_vault(home, OpenMode::Existing).await?;
    let status = vault.store_status().await?;
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&status).expect("a status serializes")
        );
    } else {
        print_status(&status);
    }
    Ok(())
}

fn print_status(s: &StoreStatus) {
    println!("backend:        {}", s.backend);
    println!("location:       {}", s.location);
    println!("schema:         {}", s.schema);
    println!("connections:    {}", s.connections);
    println!("users:          {}", s.users);
    println!("audit entries:  {}", s.audit_entries);
    if let Some(id) = &s.master_key_id {
        println!("master key id:  {id}");
    }
    if let Some(version) = &s.server_version {
        println!("server version: {version}");
    }
    if let Some(ms) = s.round_trip_ms {
        println!("round trip:     {ms:.3} ms");
    }
}

async fn copy(home: &Home, args: CopyArgs) -> Result<()> {
    let here = Location::of(home)?;
    let (from, to) = match (&args.to, &args.from) {
        (Some(to), None) => (here, Location::parse(to, "the --to URL")?),
        (None, Some(from)) => (Location::parse(from, "the --from URL")?, here),
        _ => return Err(Error::usage("give exactly one of --to and --from")),
    };
    let report = transfer::copy(&from, &to, args.force).await?;
    println!(
        "copied {} connection(s), {} user(s) and {} audit entries from {from} to {to}",
        report.connections, report.users, report.audit_entries
    );
    if let Some(id) = report.master_key_id {
        eprintln!(
            "keyward: the records are still sealed under the master key of id {id}: every \
             keyward using {to} needs that key (its master.key or KEYWARD_MASTER_KEY)"
        );
    }
    Ok(())
}
