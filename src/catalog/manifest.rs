//! The manifest format: what a provider and its tools look like in `tools/*.toml`.
//!
//! These types are the single source of truth for the format. `tools/manifest.schema.json` is
//! generated from them (so editors can check manifests), and `tools/README.md` explains them
//! with examples. Adding a tool for another REST API is a manifest, not code, so everything a
//! tool needs — parameters, request template, projection — has to be expressible here.
//!
//! The types are plain data: what the file says, nothing more. [`crate::catalog::Catalog::load`]
//! checks each manifest once and compiles it into [`crate::catalog::Provider`] and
//! [`crate::catalog::Tool`] (anchored regexes, parsed templates, field paths, error hints), so
//! a mistake fails loading and the call path never parses or compiles anything.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::de::{MapAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;

/// One provider manifest: a `[provider]` table and its `[[tools]]`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub provider: ProviderSpec,
    #[serde(default)]
    pub tools: Vec<ToolSpec>,
}

/// The provider: its OAuth endpoints, where its API lives and how it speaks.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ProviderSpec {
    /// Short lowercase name used in commands, config sections and tool filters, e.g. `github`.
    pub name: String,
    /// Human-readable name, e.g. `GitHub`.
    pub title: String,
    /// OAuth authorization endpoint (the browser is sent here).
    pub authorize_url: String,
    /// OAuth token endpoint (code exchange and refresh).
    pub token_url: String,
    /// Where a grant or token is revoked; may contain `{client_id}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoke_url: Option<String>,
    /// How `revoke_url` is called.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoke_style: Option<RevokeStyle>,
    /// OAuth device authorization endpoint (RFC 8628), when the provider has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_authorization_url: Option<String>,
    /// Base URL that every tool path is appended to, e.g. `https://api.github.com`. Must be
    /// https (plain http only for loopback hosts) and its host must be in `allowed_hosts`.
    pub api_base: String,
    /// The only hosts a token of this provider is ever sent to.
    pub allowed_hosts: Vec<String>,
    /// How scopes are joined in an authorization request (`" "` or `","`).
    #[serde(default = "default_scope_separator")]
    pub scope_separator: String,
    /// Scope → the scopes it includes, e.g. GitHub `repo` → [`public_repo`, …]. Applied
    /// transitively when checking whether a grant covers a tool.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub scope_implications: BTreeMap<String, Vec<String>>,
    /// How the API reports errors.
    #[serde(default)]
    pub error_convention: ErrorConvention,
    /// The provider's error codes and the hints keyward gives for them.
    #[serde(default, skip_serializing_if = "ErrorsSpec::is_empty")]
    pub errors: ErrorsSpec,
    /// Headers sent with every API request (never the Authorization header).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
    /// Refresh an access token this many seconds before it expires.
    #[serde(default = "default_refresh_margin_secs")]
    pub refresh_margin_secs: u64,
    /// Where the access token goes in an API request.
    #[serde(default)]
    pub token_in: TokenPlacement,
}

fn default_scope_separator() -> String {
    " ".to_string()
}

fn default_refresh_margin_secs() -> u64 {
    300
}

/// How a provider revokes a grant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum RevokeStyle {
    /// GitHub: `DELETE revoke_url` (with `{client_id}` filled in), HTTP basic auth with the
    /// client credentials, JSON body `{"access_token": "…"}`; revokes the whole grant.
    GithubGrant,
    /// Slack: `auth.revoke` called with the token itself as bearer.
    Slack,
    /// RFC 7009: `POST revoke_url` with the form `token=…`.
    Rfc7009,
}

/// How the API signals failure.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ErrorConvention {
    /// The HTTP status code says it.
    #[default]
    Http,
    /// Slack: HTTP 200 with `{"ok": false, "error": "…"}`.
    SlackOk,
}

/// `[provider.errors]`: what the provider's failures mean and the hint keyward adds to each.
///
/// keyward has a hint for every HTTP error status (401: reconnect, 404: not found, 5xx: retry
/// later, …). This table holds what is particular to one provider: a better hint for a status,
/// and for `error_convention = "slack_ok"` providers, the error codes they answer with.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ErrorsSpec {
    /// Error codes meaning the provider refused the token itself. Handled like HTTP 401: one
    /// forced refresh and one retry, then a hint naming the `keyward connect` command.
    /// `slack_ok` providers only.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub auth_codes: Vec<String>,
    /// HTTP status (`"404"`) → the hint for it, replacing keyward's own for that status.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("propertyNames" = { "pattern": "^[45][0-9][0-9]$" }))]
    pub status: BTreeMap<String, ErrorHint>,
    /// Error code → its hint. `slack_ok` providers only.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub codes: BTreeMap<String, ErrorHint>,
    /// The hint for an error code that neither `auth_codes` nor `codes` lists. `slack_ok`
    /// providers only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub other_codes: Option<String>,
}

impl ErrorsSpec {
    pub fn is_empty(&self) -> bool {
        *self == ErrorsSpec::default()
    }
}

/// The hint for one status or error code. In `hint`, `{connect}` stands for the connection's
/// `keyward connect …` command, `{tool}` for the tool's name, `{title}` for the provider's
/// title, `{code}` for the error code, and each name in `fields` for that field of the error
/// answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ErrorHint {
    /// What the model is told to do about the error.
    pub hint: String,
    /// The same call may succeed later (rate limits). Default: for a status, keyward's own
    /// rule (5xx are retryable); for a code, false.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retryable: Option<bool>,
    /// Top-level fields of the error answer the hint quotes → the text used when the answer
    /// lacks one (Slack `missing_scope`: `needed`, `provided`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub fields: BTreeMap<String, String>,
}

/// Where the access token is placed in an API request.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum TokenPlacement {
    /// `Authorization: Bearer <token>`.
    #[default]
    AuthorizationBearer,
}

/// One tool as the model sees it, and how it maps onto one API request.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ToolSpec {
    /// Unique across all providers; letters, digits, `_` and `-`, at most 64 characters.
    pub name: String,
    /// Short human-readable title.
    pub title: String,
    /// For the model: when to use the tool and what it returns. One or two sentences.
    pub description: String,
    /// Group name used by tool filters (`provider:toolset`), e.g. `issues`.
    pub toolset: String,
    /// The tool only reads.
    pub read_only: bool,
    /// The tool may delete or overwrite data.
    #[serde(default)]
    pub destructive: bool,
    /// Calling the tool twice with the same arguments has no additional effect. Defaults to
    /// `read_only`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotent: Option<bool>,
    /// The minimal OAuth scopes the call needs.
    #[serde(default)]
    pub scopes: Vec<String>,
    /// The arguments, in the order they are documented to the model.
    #[serde(default)]
    pub params: Vec<ParamSpec>,
    pub request: RequestSpec,
    pub response: ResponseSpec,
}

impl ToolSpec {
    /// Whether repeating the call is harmless (explicit `idempotent`, else `read_only`).
    pub fn is_idempotent(&self) -> bool {
        self.idempotent.unwrap_or(self.read_only)
    }

    /// The declared parameter called `name`.
    pub fn param(&self, name: &str) -> Option<&ParamSpec> {
        self.params.iter().find(|p| p.name == name)
    }
}

/// One argument of a tool.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ParamSpec {
    pub name: String,
    #[serde(rename = "type")]
    pub kind: ParamType,
    /// For the model: what the value means, with an example where it helps. Left out when the
    /// name says it all (`title`, `location`): every byte is in every session's context.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
    #[serde(default)]
    pub required: bool,
    /// The only accepted values (for `string_array`: of each item).
    #[serde(rename = "enum", default, skip_serializing_if = "Option::is_none")]
    pub enum_values: Option<Vec<String>>,
    /// A regular expression the whole value (each item of a `string_array`) must match.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pattern: Option<String>,
    /// Smallest accepted integer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min: Option<i64>,
    /// Largest accepted integer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<i64>,
    /// Longest accepted string, in characters (for `string_array`: of each item).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_length: Option<usize>,
    /// Value used (and sent) when the argument is absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<Value>,
    /// Path parameters only: allow `#` in the value, sent percent-encoded as `%23` inside the
    /// one segment. Needed for ids such as Google's `en.usa#holiday@group.v.calendar.google.com`.
    #[serde(default, skip_serializing_if = "is_false")]
    pub allow_hash: bool,
    /// Accept a name where the API wants an id: a value that is not an id already is looked up
    /// with another list tool of the same provider, and its id is sent instead (Slack channel
    /// names, `#general` → `C0123456789`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolve: Option<ResolveSpec>,
}

/// `resolve`: how a name becomes the id the API wants.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ResolveSpec {
    /// A list tool of the same provider whose items carry the name and the id. Its pages are
    /// followed (`next_cursor` / `next_page`), and what it found is cached per connection for a
    /// few minutes.
    pub tool: String,
    /// Arguments of the lookup tool (e.g. the largest page size).
    #[serde(default)]
    pub arguments: serde_json::Map<String, Value>,
    /// Values matching this (anchored) are ids already and are sent as they are.
    pub unless: String,
    /// Removed from the start of a name before the lookup (`#` of `#general`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub trim_prefix: String,
    /// Field of the lookup tool's items compared with the name.
    pub by: String,
    /// Field of the lookup tool's items sent instead of the name.
    pub take: String,
}

fn is_false(value: &bool) -> bool {
    !*value
}

/// The type of an argument.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ParamType {
    String,
    Integer,
    Boolean,
    /// An array of strings; joined with `,` when sent as a query parameter.
    StringArray,
    /// A file path: may contain `/`, never a `.` or `..` segment.
    Path,
}

/// The HTTP request a tool call becomes.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RequestSpec {
    pub method: HttpMethod,
    /// Appended to the provider's `api_base`; `{param}` placeholders are whole segments.
    pub path: String,
    /// Query parameters in order: name → template (`"{param}"` or a literal).
    #[serde(default, skip_serializing_if = "OrderedTable::is_empty")]
    #[schemars(with = "BTreeMap<String, Value>")]
    pub query: OrderedTable,
    /// Body template (see tools/README.md for `{param}`, `$each` and `$item`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<Value>,
    #[serde(default)]
    pub body_format: BodyFormat,
    /// Extra headers for this tool (added to the provider's).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "UPPERCASE")]
pub enum HttpMethod {
    Get,
    Post,
    Patch,
    Put,
    Delete,
}

impl HttpMethod {
    pub fn as_http(self) -> http::Method {
        match self {
            HttpMethod::Get => http::Method::GET,
            HttpMethod::Post => http::Method::POST,
            HttpMethod::Patch => http::Method::PATCH,
            HttpMethod::Put => http::Method::PUT,
            HttpMethod::Delete => http::Method::DELETE,
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum BodyFormat {
    #[default]
    Json,
    /// `application/x-www-form-urlencoded`; arrays are joined with `,`.
    Form,
}

/// How much of the response the model gets back.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ResponseSpec {
    #[serde(default)]
    pub kind: ResponseKind,
    /// For a list: JSON pointer to the array (`""` = the body itself, `"/items"`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub items_at: String,
    /// Fields to keep, from the object or from each item: `path` or `name = path`, where a
    /// path is dotted (`user.login`), maps over arrays with `[]` (`labels[].name`) and may
    /// list fallbacks with `|` (`start.dateTime | start.date`). Empty keeps everything.
    #[serde(default)]
    pub fields: Vec<String>,
    /// For a list: fields kept from the response root next to the items (`total_count`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub root_fields: Vec<String>,
    /// Output field holding base64 text to decode (GitHub file `content`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decode_base64: Option<String>,
    /// Output fields holding text to cap (a commit's per-file `patch`): a longer value is cut
    /// at `max_text_bytes` and the object holding it is marked `truncated`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cap_text: Vec<String>,
    /// The answer is text, not JSON (a diff asked for with `Accept: …diff`): the result is
    /// `{"<this name>": text, "size": bytes}`, cut at `max_text_bytes` and marked `truncated`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text_body: Option<String>,
    /// Longest text returned, in bytes (decoded base64, `cap_text` fields, a `text_body`);
    /// longer text is cut on a character boundary and marked `truncated`.
    #[serde(default = "default_max_text_bytes")]
    pub max_text_bytes: usize,
    /// Result returned when the API answers with an empty body (e.g. 204 No Content).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub empty_result: Option<Value>,
    #[serde(default)]
    pub pagination: Pagination,
}

fn default_max_text_bytes() -> usize {
    64 * 1024
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ResponseKind {
    /// One object (an array body is still projected item by item, e.g. a directory listing).
    #[default]
    Object,
    /// An array found at `items_at`; the result is `{"count", "items", …}`.
    List,
}

/// Where the next page is announced; surfaced to the model as `next_page` (the tool's `page`
/// argument) or `next_cursor` (its `cursor` argument), so every list tool pages the same way.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Pagination {
    #[default]
    None,
    /// GitHub: `Link: <…?page=3>; rel="next"` → `"next_page": 3`.
    LinkHeader,
    /// Slack: `response_metadata.next_cursor` → `"next_cursor"` (omitted when empty).
    SlackCursor,
    /// Google: `nextPageToken` → `"next_cursor"`.
    PageToken,
    /// Slack search: `paging` next to the items (`{"page": 2, "pages": 5}`) → `"next_page": 3`
    /// while `page` < `pages`.
    SlackPaging,
}

/// A TOML table that remembers the order its keys were written in, so query strings come out
/// in the order the manifest author chose. Order is recovered from the key spans the TOML
/// deserializer reports, which is why this only deserializes from TOML.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct OrderedTable(pub Vec<(String, Value)>);

impl OrderedTable {
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &Value)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v))
    }
}

impl Serialize for OrderedTable {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_map(self.0.iter().map(|(k, v)| (k, v)))
    }
}

impl<'de> Deserialize<'de> for OrderedTable {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct TableVisitor;

        impl<'de> Visitor<'de> for TableVisitor {
            type Value = OrderedTable;

            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a table")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<OrderedTable, A::Error> {
                let mut entries: Vec<(usize, String, Value)> = Vec::new();
                while let Some((key, value)) = map.next_entry::<toml::Spanned<String>, Value>()? {
                    entries.push((key.span().start, key.into_inner(), value));
                }
                entries.sort_by_key(|(start, _, _)| *start);
                Ok(OrderedTable(
                    entries.into_iter().map(|(_, k, v)| (k, v)).collect(),
                ))
            }
        }

        deserializer.deserialize_map(TableVisitor)
    }
}
