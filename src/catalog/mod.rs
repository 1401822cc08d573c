//! The tool catalog: every provider keyward can talk to and every tool it offers.
//!
//! Tools are data, not code. Each provider is described by a TOML manifest (`tools/*.toml`,
//! embedded in the binary; more can be loaded from folders named in the config), and the rest of
//! keyward — argument checks, request rendering, scope checks, projection, `tools/list` — is
//! driven by it. Loading is where mistakes are caught: a manifest that names an undeclared
//! parameter, has a pattern that does not compile, or points its API base at a host it does not
//! declare is refused with its file, line and reason, never discovered during a call.
//!
//! The manifest types ([`manifest`]) are plain serde data. Loading turns each into what the call
//! path runs on — a [`Provider`] (parsed API base, compiled `[provider.errors]` rules) and its
//! [`Tool`]s (anchored patterns, templates, field paths) — so there is no unchecked tool to
//! call and no compile step left for a request.

mod compiled;
mod errors;
pub mod filter;
pub mod hosts;
pub mod manifest;
pub mod schema;
pub mod scopes;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use crate::config::{check_trusted, Fix, ProviderConfig};
use crate::error::{Error, Result};

pub(crate) use compiled::{FieldRule, PathPart, Step, Template};
pub use compiled::{Provider, Tool};
pub(crate) use errors::HintValues;
pub use filter::ToolFilter;
pub use manifest::{
    BodyFormat, ErrorConvention, ErrorHint, ErrorsSpec, HttpMethod, Manifest, OrderedTable,
    Pagination, ParamSpec, ParamType, ProviderSpec, RequestSpec, ResolveSpec, ResponseKind,
    ResponseSpec, RevokeStyle, TokenPlacement, ToolSpec,
};
pub use schema::{manifest_schema_json, tool_input_schema};
pub use scopes::{
    expand_scopes, join_scopes, minimize_scopes, missing_scopes, parse_scopes, split_scopes,
};

/// The manifests compiled into the binary, in the order their providers are listed.
const EMBEDDED: [(&str, &str); 3] = [
    ("tools/github.toml", include_str!("../../tools/github.toml")),
    ("tools/slack.toml", include_str!("../../tools/slack.toml")),
    (
        "tools/google-calendar.toml",
        include_str!("../../tools/google-calendar.toml"),
    ),
];

/// All providers and tools, checked and compiled.
#[derive(Debug, Clone)]
pub struct Catalog {
    manifests: Vec<Compiled>,
    /// Tool name → (manifest index, tool index).
    index: HashMap<String, (usize, usize)>,
}

/// One manifest, compiled.
#[derive(Debug, Clone)]
struct Compiled {
    provider: Provider,
    tools: Vec<Tool>,
}

/// One manifest text and where it came from, kept for error messages.
struct Source {
    file: String,
    text: String,
}

impl Catalog {
    /// The embedded manifests alone, without config overrides.
    pub fn embedded() -> Catalog {
        static EMBEDDED_CATALOG: OnceLock<Catalog> = OnceLock::new();
        EMBEDDED_CATALOG
            .get_or_init(|| {
                Catalog::build(embedded_sources(), Vec::new(), &BTreeMap::new())
                    .unwrap_or_else(|e| panic!("the embedded manifests are invalid: {e}"))
            })
            .clone()
    }

    /// The embedded manifests, then every `*.toml` in each of `extra_dirs` (a manifest for an
    /// embedded provider replaces it), then the config's endpoint overrides: `api_base`
    /// replaces the manifest's and its host joins the allowed hosts; the OAuth URLs replace
    /// the manifest's.
    pub fn load(
        extra_dirs: &[PathBuf],
        overrides: &BTreeMap<String, ProviderConfig>,
    ) -> Result<Catalog> {
        let mut extra = Vec::new();
        for dir in extra_dirs {
            extra.extend(read_manifest_dir(dir)?);
        }
        Catalog::build(embedded_sources(), extra, overrides)
    }

    fn build(
        embedded: Vec<Source>,
        extra: Vec<Source>,
        overrides: &BTreeMap<String, ProviderConfig>,
    ) -> Result<Catalog> {
        let mut entries: Vec<(Source, Manifest)> = Vec::new();
        let mut embedded_count = 0;
        for source in embedded {
            let manifest = parse_manifest(&source)?;
            entries.push((source, manifest));
            embedded_count += 1;
        }
        for source in extra {
            let manifest = parse_manifest(&source)?;
            let name = manifest.provider.name.clone();
            match entries.iter().position(|(_, m)| m.provider.name == name) {
                Some(at) if at < embedded_count => entries[at] = (source, manifest),
                Some(at) => {
                    return Err(Error::config(format!(
                        "{}:{}: provider `{name}` is already defined in {}; keep one manifest per \
                         provider",
                        source.file,
                        line_of_key(&source.text, "name"),
                        entries[at].0.file
                    )))
                }
                None => entries.push((source, manifest)),
            }
        }

        // Checked and compiled while the source is at hand for the line numbers; the API base is
        // parsed after the config's overrides.
        let mut staged = Vec::with_capacity(entries.len());
        for (source, manifest) in entries {
            staged.push(compile_manifest(&source, manifest)?);
        }
        for (name, config) in overrides {
            let Some((provider, _, _)) = staged.iter_mut().find(|(p, _, _)| p.name == *name) else {
                let known: Vec<&str> = staged.iter().map(|(p, _, _)| p.name.as_str()).collect();
                return Err(Error::config(format!(
                    "config section [providers.{name}] names no known provider; known: {}",
                    known.join(", ")
                )));
            };
            apply_override(provider, config)
                .map_err(|reason| Error::config(format!("[providers.{name}] {reason}")))?;
        }
        let manifests = staged
            .into_iter()
            .map(|(spec, errors, tools)| {
                let provider = Provider::new(spec, errors).map_err(Error::config)?;
                Ok(Compiled { provider, tools })
            })
            .collect::<Result<Vec<_>>>()?;

        let mut index = HashMap::new();
        for (m, manifest) in manifests.iter().enumerate() {
            for (t, tool) in manifest.tools.iter().enumerate() {
                if let Some((other, _)) = index.insert(tool.name.clone(), (m, t)) {
                    return Err(Error::config(format!(
                        "tool `{}` is defined by both the `{}` and the `{}` provider; tool names \
                         must be unique",
                        tool.name, manifests[other].provider.name, manifest.provider.name
                    )));
                }
            }
        }
        Ok(Catalog { manifests, index })
    }

    pub fn providers(&self) -> impl Iterator<Item = &Provider> {
        self.manifests.iter().map(|m| &m.provider)
    }

    pub fn provider(&self, name: &str) -> Option<&Provider> {
        self.providers().find(|p| p.name == name)
    }

    pub fn tool(&self, name: &str) -> Option<(&Provider, &Tool)> {
        let (m, t) = *self.index.get(name)?;
        let manifest = &self.manifests[m];
        Some((&manifest.provider, &manifest.tools[t]))
    }

    /// Every tool with its provider, providers in catalog order, tools in manifest order.
    pub fn tools(&self) -> impl Iterator<Item = (&Provider, &Tool)> {
        self.manifests
            .iter()
            .flat_map(|m| m.tools.iter().map(move |t| (&m.provider, t)))
    }

    /// The tools of one provider.
    pub fn provider_tools<'a>(&'a self, provider: &'a str) -> impl Iterator<Item = &'a Tool> {
        self.manifests
            .iter()
            .filter(move |m| m.provider.name == provider)
            .flat_map(|m| &m.tools)
    }

    /// Valid tool filter entries: each provider name followed by its `provider:toolset` names.
    pub fn toolset_names(&self) -> Vec<String> {
        let mut names = Vec::new();
        for manifest in &self.manifests {
            names.push(manifest.provider.name.clone());
            let toolsets: BTreeSet<&str> =
                manifest.tools.iter().map(|t| t.toolset.as_str()).collect();
            names.extend(
                toolsets
                    .iter()
                    .map(|set| format!("{}:{set}", manifest.provider.name)),
            );
        }
        names
    }

    /// The scopes to request when connecting `provider` so that every tool the filter allows
    /// works, with scopes implied by others left out.
    pub fn required_scopes(&self, provider: &str, filter: &ToolFilter) -> Vec<String> {
        let Some(spec) = self.provider(provider) else {
            return Vec::new();
        };
        let wanted: Vec<String> = self
            .provider_tools(provider)
            .filter(|tool| filter.allows(spec, tool))
            .flat_map(|tool| tool.scopes.iter().cloned())
            .collect();
        minimize_scopes(spec, &wanted)
    }
}

fn embedded_sources() -> Vec<Source> {
    EMBEDDED
        .iter()
        .map(|(file, text)| Source {
            file: file.to_string(),
            text: text.to_string(),
        })
        .collect()
}

/// Read every `*.toml` in `dir`. The folder and its manifests must be the user's own
/// (invariant 13): a manifest names the hosts a token may be sent to.
fn read_manifest_dir(dir: &Path) -> Result<Vec<Source>> {
    check_trusted(dir, "the tools folder", Fix::NoWrite)?;
    let entries = std::fs::read_dir(dir)
        .map_err(|e| Error::io(format!("reading the tools folder {}", dir.display()), e))?;
    let mut paths = Vec::new();
    for entry in entries {
        let entry = entry
            .map_err(|e| Error::io(format!("reading the tools folder {}", dir.display()), e))?;
        let path = entry.path();
        if path.extension().is_some_and(|ext| ext == "toml") && path.is_file() {
            paths.push(path);
        }
    }
    paths.sort();
    paths
        .into_iter()
        .map(|path| {
            check_trusted(&path, "the manifest", Fix::NoWrite)?;
            let text = std::fs::read_to_string(&path)
                .map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
            Ok(Source {
                file: path.display().to_string(),
                text,
            })
        })
        .collect()
}

fn parse_manifest(source: &Source) -> Result<Manifest> {
    toml::from_str::<Manifest>(&source.text).map_err(|e| {
        let line = e
            .span()
            .map(|span| line_at(&source.text, span.start))
            .unwrap_or(1);
        Error::config(format!("{}:{line}: {}", source.file, e.message().trim()))
    })
}

/// 1-based line number of a byte offset.
fn line_at(text: &str, offset: usize) -> usize {
    text.as_bytes()[..offset.min(text.len())]
        .iter()
        .filter(|b| **b == b'\n')
        .count()
        + 1
}

/// The line where `key = …` is first written, or 1.
fn line_of_key(text: &str, key: &str) -> usize {
    text.lines()
        .position(|line| {
            line.trim_start()
                .strip_prefix(key)
                .is_some_and(|rest| rest.trim_start().starts_with('='))
        })
        .map_or(1, |index| index + 1)
}

/// The line of a tool's `name = "…"`, or 1.
fn line_of_tool(text: &str, tool: &str) -> usize {
    let quoted = format!("\"{tool}\"");
    text.lines()
        .position(|line| {
            let line = line.trim_start();
            line.starts_with("name") && line.contains(&quoted)
        })
        .map_or(1, |index| index + 1)
}

/// Check a manifest and compile its error rules and tools; an error names the file and line.
fn compile_manifest(
    source: &Source,
    manifest: Manifest,
) -> Result<(ProviderSpec, errors::ErrorRules, Vec<Tool>)> {
    let at =
        |line: usize, reason: String| Error::config(format!("{}:{line}: {reason}", source.file));
    check_provider(&manifest.provider)
        .map_err(|(key, reason)| at(line_of_key(&source.text, key), reason))?;
    let rules = errors::ErrorRules::compile(&manifest.provider)
        .map_err(|e| at(line_in_errors_table(&source.text, &e.near), e.reason))?;
    let tools = manifest
        .tools
        .into_iter()
        .map(|tool| {
            let line = line_of_tool(&source.text, &tool.name);
            let name = tool.name.clone();
            Tool::compile(tool).map_err(|reason| at(line, format!("tool `{name}`: {reason}")))
        })
        .collect::<Result<Vec<_>>>()?;
    for tool in &tools {
        compiled::check_resolvers(tool, &tools).map_err(|reason| {
            at(
                line_of_tool(&source.text, &tool.name),
                format!("tool `{}`: {reason}", tool.name),
            )
        })?;
    }
    Ok((manifest.provider, rules, tools))
}

/// The line of `near` (a status, code or key) inside the `[provider.errors…]` tables, else the
/// line that opens them, else the line of `errors = …`.
fn line_in_errors_table(text: &str, near: &str) -> usize {
    let Some(start) = text
        .lines()
        .position(|line| line.trim_start().starts_with("[provider.errors"))
    else {
        return line_of_key(text, "errors");
    };
    text.lines()
        .skip(start)
        .position(|line| !line.trim_start().starts_with('#') && line.contains(near))
        .map_or(start + 1, |offset| start + offset + 1)
}

/// The provider's own rules; the error names the offending key.
fn check_provider(provider: &ProviderSpec) -> std::result::Result<(), (&'static str, String)> {
    let name = &provider.name;
    let valid_name = name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
    if !valid_name {
        return Err((
            "name",
            format!("provider name `{name}` must be lowercase letters, digits, `-` or `_`"),
        ));
    }
    for (key, url) in [
        ("authorize_url", Some(&provider.authorize_url)),
        ("token_url", Some(&provider.token_url)),
        ("revoke_url", provider.revoke_url.as_ref()),
        (
            "device_authorization_url",
            provider.device_authorization_url.as_ref(),
        ),
    ] {
        if let Some(url) = url {
            hosts::parse_endpoint(url).map_err(|reason| (key, format!("`{key}`: {reason}")))?;
        }
    }
    if provider.revoke_url.is_some() != provider.revoke_style.is_some() {
        return Err((
            "revoke_url",
            "`revoke_url` and `revoke_style` go together".into(),
        ));
    }
    if provider.allowed_hosts.is_empty() {
        return Err((
            "allowed_hosts",
            "`allowed_hosts` is empty; no request could be sent".into(),
        ));
    }
    check_api_base(&provider.api_base, &provider.allowed_hosts).map_err(|r| ("api_base", r))?;
    if provider.scope_separator.is_empty() {
        return Err(("scope_separator", "`scope_separator` is empty".into()));
    }
    for (header, value) in &provider.headers {
        compiled::check_header_name(header).map_err(|r| ("headers", r))?;
        if http::HeaderValue::from_str(value).is_err() {
            return Err(("headers", format!("header `{header}` has an invalid value")));
        }
    }
    Ok(())
}

/// Invariant 2 at load time: https (http only to loopback), no query or fragment, and a host
/// the provider declares.
fn check_api_base(api_base: &str, allowed_hosts: &[String]) -> std::result::Result<(), String> {
    let url = hosts::parse_endpoint(api_base).map_err(|r| format!("`api_base`: {r}"))?;
    if url.query().is_some() || url.fragment().is_some() {
        return Err(format!(
            "`api_base` `{api_base}` must not have a query or fragment"
        ));
    }
    if !hosts::host_allowed(allowed_hosts, &url) {
        return Err(format!(
            "`api_base` `{api_base}` points at `{}`, which is not in `allowed_hosts` ({}); tokens \
             are only sent to declared hosts",
            url.host_str().unwrap_or_default(),
            allowed_hosts.join(", ")
        ));
    }
    Ok(())
}

fn apply_override(
    provider: &mut ProviderSpec,
    config: &ProviderConfig,
) -> std::result::Result<(), String> {
    if let Some(api_base) = &config.api_base {
        let url = hosts::parse_endpoint(api_base).map_err(|r| format!("api_base: {r}"))?;
        let host = url.host_str().unwrap_or_default().to_string();
        if !provider
            .allowed_hosts
            .iter()
            .any(|h| h.eq_ignore_ascii_case(&host))
        {
            provider.allowed_hosts.push(host);
        }
        check_api_base(api_base, &provider.allowed_hosts)?;
        provider.api_base = api_base.clone();
    }
    for (key, value, target) in [
        (
            "authorize_url",
            &config.authorize_url,
            &mut provider.authorize_url,
        ),
        ("token_url", &config.token_url, &mut provider.token_url),
    ] {
        if let Some(value) = value {
            hosts::parse_endpoint(value).map_err(|r| format!("{key}: {r}"))?;
            *target = value.clone();
        }
    }
    for (key, value, target) in [
        ("revoke_url", &config.revoke_url, &mut provider.revoke_url),
        (
            "device_authorization_url",
            &config.device_authorization_url,
            &mut provider.device_authorization_url,
        ),
    ] {
        if let Some(value) = value {
            hosts::parse_endpoint(value).map_err(|r| format!("{key}: {r}"))?;
            *target = Some(value.clone());
        }
    }
    if config.revoke_url.is_some() && provider.revoke_style.is_none() {
        return Err("revoke_url: the manifest declares no `revoke_style` for it".into());
    }
    if let Some(margin) = config.refresh_margin_secs {
        provider.refresh_margin_secs = margin;
    }
    Ok(())
}

#[cfg(test)]
mod tests;
