//! Names where an API wants ids: a parameter that declares `resolve` accepts a name
//! (`#general`) and the call sends the id (`C0123456789`).
//!
//! Models know channels by name — users say "post in #ops" — while Slack's methods take ids
//! only; without this a model first lists every channel (hundreds of items in its context) to
//! find one id. The lookup is another list tool of the same provider, declared in the manifest
//! (`resolve.tool`), run through the same render → send → check → project path as any call with
//! the call's own connection and token, following its pages (`next_cursor` / `next_page`). What
//! it found is cached per connection and lookup tool for [`FRESH`]: one listing serves every
//! call for a few minutes. A name the cache lacks refetches once the listing is older than
//! [`REFETCH_AFTER`] (a channel created a moment ago), so a mistyped name cannot make every call
//! list the workspace again.
//!
//! A value matching `resolve.unless` is an id already and is sent unchanged, with no lookup.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::{json, Map, Value};

use super::render::{self, ValidArgs};
use super::{client, errors, project, ToolError};
use crate::catalog::{missing_scopes, Catalog, Provider, ResolveSpec, Tool};
use crate::secret::SecretString;
use crate::vault::ConnKey;

/// How long a listing answers names.
pub const FRESH: Duration = Duration::from_secs(300);
/// A name missing from a listing at least this old triggers a new listing.
pub const REFETCH_AFTER: Duration = Duration::from_secs(30);
/// The most pages one listing follows (Slack: 1,000 channels a page).
const MAX_PAGES: usize = 50;

/// Listings per (connection, lookup tool): name → id.
#[derive(Debug, Default)]
pub struct NameCache {
    entries: Mutex<HashMap<(ConnKey, String), Listing>>,
}

#[derive(Debug, Clone)]
struct Listing {
    at: Instant,
    ids: HashMap<String, String>,
}

/// What one resolution needs of the call.
pub(super) struct Lookup<'a> {
    pub catalog: &'a Catalog,
    pub client: &'a client::Upstream,
    pub provider: &'a Provider,
    pub key: &'a ConnKey,
    /// The connection's granted scopes (empty: unknown, the provider decides).
    pub granted: &'a [String],
    pub token: &'a SecretString,
    pub deadline: Instant,
}

impl NameCache {
    /// Replace every name in `args` that `tool`'s parameters declare `resolve` for by its id;
    /// whether any was.
    pub(super) async fn resolve(
        &self,
        lookup: &Lookup<'_>,
        tool: &Tool,
        args: &mut ValidArgs,
    ) -> Result<bool, ToolError> {
        let mut changed = false;
        for (param, resolver) in tool.params.iter().zip(&tool.compiled.resolvers) {
            let (Some(spec), Some(unless)) = (&param.resolve, resolver) else {
                continue;
            };
            let Some(value) = args.get(&param.name).and_then(Value::as_str) else {
                continue;
            };
            if unless.is_match(value) {
                continue;
            }
            let name = value
                .strip_prefix(spec.trim_prefix.as_str())
                .unwrap_or(value);
            let id = self.id_of(lookup, spec, &param.name, name).await?;
            args.set(&param.name, json!(id));
            changed = true;
        }
        Ok(changed)
    }

    async fn id_of(
        &self,
        lookup: &Lookup<'_>,
        spec: &ResolveSpec,
        param: &str,
        name: &str,
    ) -> Result<String, ToolError> {
        let slot = (lookup.key.clone(), spec.tool.clone());
        let cached = self.lock().get(&slot).cloned();
        if let Some(listing) = &cached {
            let age = listing.at.elapsed();
            if age < FRESH {
                if let Some(id) = listing.ids.get(name) {
                    return Ok(id.clone());
                }
                if age < REFETCH_AFTER {
                    return Err(not_found(spec, param, name, listing.ids.len()));
                }
            }
        }
        let listing = list(lookup, spec, param, name).await?;
        let found = listing.ids.get(name).cloned();
        let count = listing.ids.len();
        self.lock().insert(slot, listing);
        found.ok_or_else(|| not_found(spec, param, name, count))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(ConnKey, String), Listing>> {
        // A panic elsewhere while holding it leaves only a cache behind: keep using it.
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Every page of the lookup tool, as name → id.
async fn list(
    lookup: &Lookup<'_>,
    spec: &ResolveSpec,
    param: &str,
    name: &str,
) -> Result<Listing, ToolError> {
    let Some((_, tool)) = lookup.catalog.tool(&spec.tool) else {
        // Checked when the catalog loads; a replaced manifest cannot get here without it.
        return Err(ToolError::new(format!(
            "`{param}` names the lookup tool {} that the catalog lacks",
            spec.tool
        )));
    };
    if !lookup.granted.is_empty() {
        let missing = missing_scopes(lookup.provider, lookup.granted, &tool.scopes);
        if !missing.is_empty() {
            let mut error = errors::missing_scopes(lookup.key, tool, &missing, lookup.granted);
            error.message = format!(
                "looking up the `{param}` named {name:?} (pass its id to skip the lookup): {}",
                error.message
            );
            return Err(error);
        }
    }
    let reads = project::Reads::of(tool, &lookup.provider.answer_fields());
    let mut arguments: Map<String, Value> = spec.arguments.clone();
    let mut ids = HashMap::new();
    for _ in 0..MAX_PAGES {
        let valid = render::validate_args(tool, &arguments)
            .map_err(|e| ToolError::new(format!("lookup {}: {e}", tool.name)))?;
        let request = render::render(lookup.provider, tool, &valid)
            .map_err(|e| ToolError::new(format!("lookup {}: {e}", tool.name)))?;
        let response = lookup
            .client
            .send(&request, lookup.token, lookup.deadline)
            .await?;
        let body = errors::check_with(lookup.provider, tool, lookup.key, &response, Some(&reads))?;
        let page = project::project(tool, &response.headers, body);
        for item in page["items"].as_array().into_iter().flatten() {
            if let (Some(by), Some(take)) = (
                item.get(&spec.by).and_then(Value::as_str),
                item.get(&spec.take).and_then(Value::as_str),
            ) {
                ids.entry(by.to_string())
                    .or_insert_with(|| take.to_string());
            }
        }
        // Consistent paging: a list tool's `next_cursor` goes back as its `cursor`, its
        // `next_page` as its `page`.
        if let Some(cursor) = page.get("next_cursor") {
            arguments.insert("cursor".into(), cursor.clone());
        } else if let Some(next) = page.get("next_page") {
            arguments.insert("page".into(), next.clone());
        } else {
            break;
        }
    }
    Ok(Listing {
        at: Instant::now(),
        ids,
    })
}

fn not_found(spec: &ResolveSpec, param: &str, name: &str, listed: usize) -> ToolError {
    ToolError::new(format!(
        "no {param} named {name:?} among the {listed} that {} lists",
        spec.tool
    ))
    .hint(format!(
        "check the name with {}, or pass the {param} id",
        spec.tool
    ))
}
