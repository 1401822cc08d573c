//! `keyward import`: store a token response obtained elsewhere (another tool, a provider's
//! console) as a connection, for providers or setups where keyward cannot run the OAuth flow
//! itself.
//!
//! The caller parses the response with [`super::token_response::parse`] *before* opening the
//! vault, so bad input creates and changes nothing; this module is the write that follows.

use crate::error::Result;
use crate::vault::{AuditEntry, ConnKey, TokenRecord, Vault};

/// Store `record` as `key` (replacing whatever was there), audit it and flush. Returns the new
/// version.
pub async fn store(vault: &Vault, key: &ConnKey, record: &TokenRecord) -> Result<u64> {
    let version = vault.put(key, None, record).await?;
    vault
        .audit(&AuditEntry::new(&key.user, "import", "ok").connection(&key.provider, &key.account))
        .await;
    vault.flush().await?;
    Ok(version)
}
