//! `keyward users add|list|remove`: the users of the HTTP server and their API keys. A new key
//! is printed once, alone on stdout (the explanation goes to stderr), so
//! `KEY=$(keyward users add alice)` captures exactly the key. Adding and removing, and auditing
//! both, are [`keyward::vault::users`]'s work.

use clap::Subcommand;
use keyward::config::Home;
use keyward::error::{Error, Result};
use keyward::vault::users;

#[derive(Subcommand)]
pub enum UsersCommand {
    /// Add a user and print its new API key (shown only once)
    Add {
        name: String,
        /// No API key: a user of the identity provider ([server.auth]), admitted ahead of their
        /// first sign-in or again after `users remove`
        #[arg(long)]
        oidc: bool,
    },
    /// List the users (never their keys)
    List,
    /// Remove a user: its API key stops working at once
    Remove { name: String },
}

pub async fn run(home: &Home, command: UsersCommand) -> Result<()> {
    match command {
        UsersCommand::Add { name, oidc: false } => add(home, &name).await,
        UsersCommand::Add { name, oidc: true } => add_oidc(home, &name).await,
        UsersCommand::List => list(home).await,
        UsersCommand::Remove { name } => remove(home, &name).await,
    }
}

async fn add(home: &Home, name: &str) -> Result<()> {
    // Before the vault is opened (or created): a bad name changes nothing on disk.
    users::check_user_name(name)?;
    let vault = super::open_for_write(home).await?;
    let key = users::add(&vault, name).await?;
    eprintln!(
        "created user {name}; its API key is below and is shown only this once. HTTP \
         clients send it as `Authorization: Bearer <key>`; the connections they use are \
         {name}'s (`keyward import PROVIDER --user {name}`)."
    );
    println!("{}", key.expose());
    Ok(())
}

async fn add_oidc(home: &Home, name: &str) -> Result<()> {
    users::check_user_name(name)?;
    let vault = super::open_for_write(home).await?;
    users::add_oidc(&vault, name).await?;
    println!(
        "admitted {name}: they sign in through the identity provider ([server.auth] in \
         config.toml); no API key was made"
    );
    Ok(())
}

async fn list(home: &Home) -> Result<()> {
    let Some(vault) = super::open_existing(home).await? else {
        println!("no users: add one with `keyward users add NAME`");
        return Ok(());
    };
    let list = users::list(&vault).await?;
    if list.is_empty() {
        println!("no users: add one with `keyward users add NAME`");
    } else {
        println!("{:<24} {:<16} CREATED", "USER", "SIGNS IN WITH");
        for user in list {
            let with = match (user.api_key, user.oidc) {
                (true, true) => "api key, oidc",
                (false, true) => "oidc",
                _ => "api key",
            };
            println!("{:<24} {:<16} {}", user.name, with, user.created);
        }
    }
    Ok(())
}

async fn remove(home: &Home, name: &str) -> Result<()> {
    let not_found = || {
        Error::NotFound(format!(
            "there is no user {name}: `keyward users list` lists them"
        ))
    };
    let Some(vault) = super::open_existing(home).await? else {
        return Err(not_found());
    };
    if !users::remove(&vault, name).await? {
        return Err(not_found());
    }
    println!(
        "removed user {name}; its API key no longer works, and the identity provider cannot \
         bring them back (`keyward users add {name} --oidc` does)"
    );
    Ok(())
}
