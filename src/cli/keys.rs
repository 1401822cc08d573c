//! `keyward init`, `rotate-key` and `rekey`: the home folder, the vault and the keys that open
//! it. `init` exists so that a person can create (and back up) the master key before anything
//! needs it; the other commands would create it on first write anyway. Rotation and rekeying
//! are the vault's work ([`Vault::rotate_key`], [`Vault::rekey`], both audited there); here they
//! report progress and say what to back up.

use std::path::PathBuf;

use clap::Args;
use keyward::config::Home;
use keyward::error::{Error, Result};
use keyward::vault::OpenMode;

#[derive(Args)]
pub struct RekeyArgs {
    /// Take the new key from this file (base64 of 32 bytes, mode 0600) instead of generating one
    #[arg(long, value_name = "F")]
    new_key_file: Option<PathBuf>,
}

pub async fn init(home: &Home) -> Result<()> {
    let vault = keyward::oauth::peers::open_vault(home, OpenMode::Create).await?;
    if vault.created().is_empty() {
        println!("keyward is already set up in {}", home.dir.display());
    } else {
        println!("created {}", vault.created().join(", "));
    }
    println!("home:   {}", home.dir.display());
    println!("vault:  {}", vault.location());
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

pub async fn rotate_key(home: &Home) -> Result<()> {
    let vault = super::open_for_write(home).await?;
    let report = vault
        .rotate_key(|done, total| eprintln!("re-sealed {done}/{total}"))
        .await?;
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

pub async fn rekey(home: &Home, args: RekeyArgs) -> Result<()> {
    let vault = keyward::oauth::peers::open_vault(home, OpenMode::Existing).await?;
    let old_id = vault.master_key_id();
    let location = vault.rekey(args.new_key_file.as_deref()).await?;
    println!("master key replaced (id {old_id} → {}); the new key is in {location}. Back it up now: the old key no longer opens the vault.", vault.master_key_id());
    Ok(())
}
