//! From a model's arguments to an HTTP request, or to an error the model can act on.
//!
//! This is where invariants 2 and 4 are enforced for every call. Arguments are checked against
//! the tool's declared types, ranges, enums and patterns; path arguments are checked again as
//! URL path segments (no `/`, `?`, `#`, `%`, `\`, control characters, `.` or `..`) and
//! percent-encoded so each one stays exactly one segment; the finished URL must still sit under
//! the provider's API base, on a declared host, over https (http only to loopback). Nothing here
//! touches the network or a token: the executor adds the Authorization header and sends.
//!
//! Templates (see `tools/README.md`): a string that is exactly `{param}` becomes the argument's
//! typed value and its key is dropped when the argument is absent; other values are literals;
//! `{ "$each" = "param", "$item" = … }` maps a string array, with `{$}` standing for each item;
//! a table whose keys were all dropped is dropped too. In a query, arrays are joined with `,`.

use std::fmt;

use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use serde_json::{Map, Value};
use url::Url;

use crate::catalog::hosts::{host_allowed, is_loopback};
use crate::catalog::{BodyFormat, ParamType, PathPart, Provider, Template, Tool};

/// Arguments that passed the tool's checks, with declared defaults filled in.
#[derive(Debug, Clone, PartialEq)]
pub struct ValidArgs {
    tool: String,
    /// One entry per declared parameter, in declaration order; `None` when absent.
    values: Vec<(String, Option<Value>)>,
}

impl ValidArgs {
    pub fn tool(&self) -> &str {
        &self.tool
    }

    /// The value of one argument (given, or its default).
    pub fn get(&self, name: &str) -> Option<&Value> {
        self.values
            .iter()
            .find(|(n, _)| n == name)
            .and_then(|(_, v)| v.as_ref())
    }

    /// Replace the value of a declared argument (a name resolved to its id).
    pub(crate) fn set(&mut self, name: &str, value: Value) {
        if let Some((_, slot)) = self.values.iter_mut().find(|(n, _)| n == name) {
            *slot = Some(value);
        }
    }

    /// The arguments that have a value, in declaration order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Value)> {
        self.values
            .iter()
            .filter_map(|(n, v)| v.as_ref().map(|v| (n.as_str(), v)))
    }
}

/// Why the arguments were refused. The message names the argument and what it should be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ArgError {
    Unknown {
        tool: String,
        argument: String,
        accepted: Vec<String>,
    },
    Missing {
        argument: String,
        expected: String,
    },
    Invalid {
        argument: String,
        reason: String,
    },
}

impl ArgError {
    /// The argument at fault, if one is.
    pub fn argument(&self) -> Option<&str> {
        match self {
            ArgError::Unknown { argument, .. }
            | ArgError::Missing { argument, .. }
            | ArgError::Invalid { argument, .. } => Some(argument),
        }
    }
}

impl fmt::Display for ArgError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ArgError::Unknown {
                tool,
                argument,
                accepted,
            } if accepted.is_empty() => {
                write!(
                    f,
                    "unknown argument `{argument}`: `{tool}` takes no arguments"
                )
            }
            ArgError::Unknown {
                tool,
                argument,
                accepted,
            } => write!(
                f,
                "unknown argument `{argument}`: `{tool}` accepts {}",
                accepted.join(", ")
            ),
            ArgError::Missing { argument, expected } => {
                write!(
                    f,
                    "missing required argument `{argument}`: expected {expected}"
                )
            }
            ArgError::Invalid { argument, reason } => {
                write!(f, "invalid argument `{argument}`: {reason}")
            }
        }
    }
}

impl std::error::Error for ArgError {}

/// Check the arguments of one call. `null` counts as absent, so an optional argument sent as
/// `null` gets its default.
pub fn validate_args(tool: &Tool, args: &Map<String, Value>) -> Result<ValidArgs, ArgError> {
    let compiled = &tool.compiled;
    if let Some(unknown) = args.keys().find(|key| tool.param(key).is_none()) {
        return Err(ArgError::Unknown {
            tool: tool.name.clone(),
            argument: unknown.clone(),
            accepted: tool.params.iter().map(|p| p.name.clone()).collect(),
        });
    }
    let mut values = Vec::with_capacity(tool.params.len());
    for (param, pattern) in tool.params.iter().zip(&compiled.patterns) {
        let value =
            match args.get(&param.name).filter(|v| !v.is_null()) {
                Some(value) => Some(param.check_value(pattern.as_ref(), value).map_err(
                    |reason| ArgError::Invalid {
                        argument: param.name.clone(),
                        reason,
                    },
                )?),
                None if param.required => {
                    return Err(ArgError::Missing {
                        argument: param.name.clone(),
                        expected: param.expected(),
                    })
                }
                None => param.default.clone(),
            };
        values.push((param.name.clone(), value));
    }
    Ok(ValidArgs {
        tool: tool.name.clone(),
        values,
    })
}

/// A request ready to send, minus the token.
#[derive(Debug, Clone, PartialEq)]
pub struct RenderedRequest {
    pub method: http::Method,
    pub url: Url,
    /// Provider headers, then the tool's (which win on a clash). Never Authorization.
    pub headers: Vec<(String, String)>,
    pub body: Option<RenderedBody>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum RenderedBody {
    /// Send as `application/json`.
    Json(Value),
    /// Send as `application/x-www-form-urlencoded`.
    Form(Vec<(String, String)>),
}

/// Why a request was not built. Every case is caught before anything is sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RenderError {
    /// Invariant 4: the argument would not stay one path segment (or one clean path).
    UnsafePath { argument: String, reason: String },
    /// Invariant 2: the URL left the provider's API base or declared hosts.
    Destination { url: String, reason: String },
    /// The arguments were validated for another tool.
    InvalidTool { tool: String, reason: String },
}

impl fmt::Display for RenderError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RenderError::UnsafePath { argument, reason } => write!(
                f,
                "invalid argument `{argument}`: {reason}; it goes into the URL path, so it must be \
                 a plain name or id"
            ),
            RenderError::Destination { url, reason } => {
                write!(f, "refusing to send a request to {url}: {reason}")
            }
            RenderError::InvalidTool { tool, reason } => {
                write!(f, "the tool `{tool}` is misconfigured ({reason})")
            }
        }
    }
}

impl std::error::Error for RenderError {}

/// Characters left as they are in a path segment: RFC 3986 unreserved. Everything else,
/// including `#`, `@` and `:`, is percent-encoded, so a value can never end its segment.
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// Build the request for a validated call.
pub fn render(
    provider: &Provider,
    tool: &Tool,
    args: &ValidArgs,
) -> Result<RenderedRequest, RenderError> {
    let compiled = &tool.compiled;
    if args.tool != tool.name || args.values.len() != tool.params.len() {
        return Err(RenderError::InvalidTool {
            tool: tool.name.clone(),
            reason: format!("the arguments were validated for `{}`", args.tool),
        });
    }
    let values: Vec<Option<&Value>> = args.values.iter().map(|(_, v)| v.as_ref()).collect();
    let base = &provider.base;

    let mut path = base.path().trim_end_matches('/').to_string();
    let last = compiled.path.len().saturating_sub(1);
    for (position, part) in compiled.path.iter().enumerate() {
        path.push('/');
        match part {
            PathPart::Literal(text) => path.push_str(text),
            PathPart::Param(index) => {
                let param = &tool.params[*index];
                let unsafe_path = |reason: String| RenderError::UnsafePath {
                    argument: param.name.clone(),
                    reason,
                };
                let text = match values[*index] {
                    Some(Value::String(text)) => text.clone(),
                    Some(Value::Number(number)) => number.to_string(),
                    _ => return Err(unsafe_path("a value is required".into())),
                };
                if param.kind == ParamType::Path {
                    push_file_path(&mut path, &text, position == last).map_err(unsafe_path)?;
                } else {
                    check_segment(&text, param.allow_hash).map_err(unsafe_path)?;
                    path.extend(utf8_percent_encode(&text, SEGMENT));
                }
            }
        }
    }

    let mut url = base.clone();
    url.set_path(&path);
    url.set_query(None);
    url.set_fragment(None);
    let mut query = Vec::with_capacity(compiled.query.len());
    for (key, template) in &compiled.query {
        if let Some(text) = eval(template, &values, None).as_ref().and_then(query_text) {
            query.push((key, text));
        }
    }
    if !query.is_empty() {
        let mut pairs = url.query_pairs_mut();
        for (key, text) in &query {
            pairs.append_pair(key, text);
        }
    }
    check_destination(provider, base, &url)?;

    let mut headers: Vec<(String, String)> = provider
        .headers
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    for (name, value) in &tool.request.headers {
        headers.retain(|(existing, _)| !existing.eq_ignore_ascii_case(name));
        headers.push((name.clone(), value.clone()));
    }

    let body = compiled.body.as_ref().map(|template| {
        let value = eval(template, &values, None).unwrap_or_else(|| Value::Object(Map::new()));
        match tool.request.body_format {
            BodyFormat::Json => RenderedBody::Json(value),
            BodyFormat::Form => RenderedBody::Form(match value {
                Value::Object(map) => map
                    .into_iter()
                    .filter_map(|(key, value)| query_text(&value).map(|text| (key, text)))
                    .collect(),
                _ => Vec::new(),
            }),
        }
    });

    Ok(RenderedRequest {
        method: tool.request.method.as_http(),
        url,
        headers,
        body,
    })
}

/// Invariant 4 for one segment value.
fn check_segment(text: &str, allow_hash: bool) -> Result<(), String> {
    if text.is_empty() {
        return Err("it is empty".into());
    }
    if text == "." || text == ".." {
        return Err(format!("`{text}` is not allowed"));
    }
    for c in text.chars() {
        let problem = match c {
            '/' => "contains `/`",
            '?' => "contains `?`",
            '#' if !allow_hash => "contains `#`",
            '%' => "contains `%` (pass plain text; it is encoded for you)",
            '\\' => "contains `\\`",
            c if c.is_control() => "contains a control character",
            _ => continue,
        };
        return Err(problem.into());
    }
    Ok(())
}

/// A `path`-kind argument: `/`-separated, each part checked and encoded on its own. Leading and
/// trailing slashes are ignored; an empty path is allowed only at the end of the URL, where it
/// means the root (`/contents/`).
fn push_file_path(path: &mut String, text: &str, is_last: bool) -> Result<(), String> {
    let trimmed = text.trim_matches('/');
    if trimmed.is_empty() {
        return if is_last {
            Ok(())
        } else {
            Err("it is empty".into())
        };
    }
    for (i, part) in trimmed.split('/').enumerate() {
        if part.is_empty() {
            return Err("it has an empty segment (`//`)".into());
        }
        if part == "." || part == ".." {
            return Err(format!("it has a `{part}` segment"));
        }
        check_segment(part, false)?;
        if i > 0 {
            path.push('/');
        }
        path.extend(utf8_percent_encode(part, SEGMENT));
    }
    Ok(())
}

/// Invariant 2 on the finished URL, whatever the templates did.
fn check_destination(provider: &Provider, base: &Url, url: &Url) -> Result<(), RenderError> {
    let refuse = |reason: &str| RenderError::Destination {
        url: url.to_string(),
        reason: reason.into(),
    };
    match url.scheme() {
        "https" => {}
        "http" if is_loopback(url) => {}
        _ => {
            return Err(refuse(
                "only https is allowed (http only to loopback addresses)",
            ))
        }
    }
    if !host_allowed(&provider.allowed_hosts, url) {
        return Err(refuse("the host is not one the provider declares"));
    }
    if url.scheme() != base.scheme()
        || url.host() != base.host()
        || url.port_or_known_default() != base.port_or_known_default()
    {
        return Err(refuse("it is not on the provider's API base"));
    }
    let base_path = base.path().trim_end_matches('/');
    let under_base = url.path() == base_path
        || url
            .path()
            .strip_prefix(base_path)
            .is_some_and(|rest| rest.starts_with('/'));
    if !under_base {
        return Err(refuse("the path left the provider's API base"));
    }
    Ok(())
}

/// Fill a template; `None` means "drop this key".
fn eval(template: &Template, values: &[Option<&Value>], item: Option<&Value>) -> Option<Value> {
    match template {
        Template::Literal(value) => Some(value.clone()),
        Template::Param(index) => values[*index].cloned(),
        Template::Item => item.cloned(),
        Template::Object(fields) => {
            let mut map = Map::with_capacity(fields.len());
            for (key, field) in fields {
                if let Some(value) = eval(field, values, item) {
                    map.insert(key.clone(), value);
                }
            }
            (!map.is_empty() || fields.is_empty()).then_some(Value::Object(map))
        }
        Template::Array(items) => {
            let filled: Vec<Value> = items.iter().filter_map(|t| eval(t, values, item)).collect();
            (!filled.is_empty() || items.is_empty()).then_some(Value::Array(filled))
        }
        Template::Each { param, item: each } => match values[*param] {
            Some(Value::Array(elements)) => Some(Value::Array(
                elements
                    .iter()
                    .filter_map(|element| eval(each, values, Some(element)))
                    .collect(),
            )),
            _ => None,
        },
    }
}

/// A value as query (or form) text; `None` for values that would only send an empty parameter.
fn query_text(value: &Value) -> Option<String> {
    match value {
        Value::String(text) if text.is_empty() => None,
        Value::String(text) => Some(text.clone()),
        Value::Number(number) => Some(number.to_string()),
        Value::Bool(flag) => Some(flag.to_string()),
        Value::Array(items) if items.is_empty() => None,
        Value::Array(items) => Some(
            items
                .iter()
                .map(|item| match item {
                    Value::String(text) => text.clone(),
                    other => other.to_string(),
                })
                .collect::<Vec<_>>()
                .join(","),
        ),
        Value::Null | Value::Object(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::{Catalog, Manifest};
    use serde_json::json;

    fn args(value: Value) -> Map<String, Value> {
        value.as_object().cloned().expect("arguments are an object")
    }

    fn render_tool(name: &str, arguments: Value) -> RenderedRequest {
        let catalog = Catalog::embedded();
        let (provider, tool) = catalog.tool(name).unwrap();
        let valid = validate_args(tool, &args(arguments)).unwrap_or_else(|e| panic!("{name}: {e}"));
        render(provider, tool, &valid).unwrap_or_else(|e| panic!("{name}: {e}"))
    }

    fn validation_error(name: &str, arguments: Value) -> ArgError {
        let catalog = Catalog::embedded();
        let (_, tool) = catalog.tool(name).unwrap();
        validate_args(tool, &args(arguments)).expect_err("the arguments should be refused")
    }

    #[test]
    fn validation_errors_name_the_argument_and_what_is_expected() {
        let list_prs = "github_list_pull_requests";
        let base = json!({ "owner": "o", "repo": "r" });
        let with = |extra: Value| {
            let mut all = base.clone();
            all.as_object_mut().unwrap().extend(args(extra));
            all
        };
        let cases: Vec<(&str, Value, &str, &str)> = vec![
            (list_prs, with(json!({ "status": "open" })), "status",
             "unknown argument `status`: `github_list_pull_requests` accepts owner, repo, state, base, per_page, page"),
            (list_prs, json!({ "owner": "o" }), "repo", "missing required argument `repo`: expected a string"),
            (list_prs, json!({ "owner": "o", "repo": null }), "repo", "missing required argument `repo`"),
            (list_prs, with(json!({ "per_page": "10" })), "per_page",
             "invalid argument `per_page`: expected an integer from 1 to 100, got the string \"10\""),
            (list_prs, with(json!({ "per_page": 500 })), "per_page",
             "expected an integer from 1 to 100, got 500"),
            (list_prs, with(json!({ "per_page": 0 })), "per_page", "got 0"),
            (list_prs, with(json!({ "per_page": 2.5 })), "per_page", "got 2.5"),
            (list_prs, with(json!({ "page": -1 })), "page", "expected an integer ≥ 1, got -1"),
            (list_prs, with(json!({ "state": "merged" })), "state",
             "expected one of \"open\", \"closed\", \"all\", got the string \"merged\""),
            (list_prs, with(json!({ "state": true })), "state", "got true"),
            (list_prs, json!({ "owner": "-octocat", "repo": "r" }), "owner", "expected a string matching"),
            (list_prs, json!({ "owner": "o", "repo": ".." }), "repo", "expected a string matching"),
            (list_prs, json!({ "owner": "o", "repo": "a/b" }), "repo", "got the string \"a/b\""),
            ("github_list_issues", with(json!({ "labels": "bug" })), "labels",
             "expected an array of strings, each at most 100 characters, got the string \"bug\""),
            ("github_list_issues", with(json!({ "labels": ["bug", 3] })), "labels", "an array of strings"),
            ("github_create_issue", with(json!({ "title": "x".repeat(300) })), "title",
             "expected at most 256 characters, got 300 characters"),
            ("github_create_issue", with(json!({ "title": "t", "assignees": ["ok", "not ok"] })), "assignees",
             "expected each item to be a string matching"),
            ("slack_list_channels", json!({ "types": ["public_channel", "shared"] }), "types",
             "expected each item to be one of \"public_channel\""),
            ("github_get_me", json!({ "verbose": true }), "verbose",
             "unknown argument `verbose`: `github_get_me` takes no arguments"),
            ("calendar_list_events", json!({ "time_min": "tomorrow" }), "time_min", "expected a string matching"),
        ];
        for (tool, arguments, argument, message) in cases {
            let error = validation_error(tool, arguments.clone());
            assert_eq!(
                error.argument(),
                Some(argument),
                "{tool} {arguments}: {error}"
            );
            let text = error.to_string();
            assert!(
                text.contains(message),
                "{tool} {arguments}:\n  got:      {text}\n  expected: …{message}…"
            );
        }
    }

    #[test]
    fn valid_arguments_are_normalised_and_defaults_filled() {
        let catalog = Catalog::embedded();
        let (_, tool) = catalog.tool("github_list_pull_requests").unwrap();
        let valid = validate_args(
            tool,
            &args(json!({ "owner": "o", "repo": "r", "per_page": 10.0, "base": null })),
        )
        .unwrap();
        assert_eq!(valid.get("per_page"), Some(&json!(10)));
        assert!(valid.get("per_page").unwrap().is_i64());
        assert_eq!(valid.get("base"), None);
        assert_eq!(
            valid.iter().map(|(k, _)| k).collect::<Vec<_>>(),
            ["owner", "repo", "per_page"]
        );

        let (_, events) = catalog.tool("calendar_list_events").unwrap();
        let valid = validate_args(events, &Map::new()).unwrap();
        assert_eq!(valid.get("calendar_id"), Some(&json!("primary")));
        assert_eq!(valid.get("max_results"), Some(&json!(25)));
        assert_eq!(valid.tool(), "calendar_list_events");
    }

    struct Expect {
        method: http::Method,
        url: &'static str,
        body: Option<Value>,
    }

    fn get(url: &'static str) -> Expect {
        Expect {
            method: http::Method::GET,
            url,
            body: None,
        }
    }

    fn with_body(method: http::Method, url: &'static str, body: Value) -> Expect {
        Expect {
            method,
            url,
            body: Some(body),
        }
    }

    #[test]
    fn every_tool_renders_the_request_the_real_api_expects() {
        use http::Method;
        let cases: Vec<(&str, Value, Expect)> = vec![
            ("github_get_me", json!({}), get("https://api.github.com/user")),
            ("github_list_pull_requests", json!({ "owner": "o", "repo": "r", "state": "open", "per_page": 10 }),
             get("https://api.github.com/repos/o/r/pulls?state=open&per_page=10")),
            ("github_list_pull_requests", json!({ "page": 2, "base": "main", "repo": "r", "owner": "o" }),
             get("https://api.github.com/repos/o/r/pulls?base=main&page=2")),
            ("github_get_pull_request", json!({ "owner": "octo-org", "repo": "hello.world", "number": 42 }),
             get("https://api.github.com/repos/octo-org/hello.world/pulls/42")),
            ("github_list_issues", json!({ "owner": "o", "repo": "r", "state": "closed", "labels": ["bug", "good first issue"], "page": 2 }),
             get("https://api.github.com/repos/o/r/issues?state=closed&labels=bug%2Cgood+first+issue&page=2")),
            ("github_list_issues", json!({ "owner": "o", "repo": "r", "labels": [] }),
             get("https://api.github.com/repos/o/r/issues")),
            ("github_get_issue", json!({ "owner": "o", "repo": "r", "number": 7 }),
             get("https://api.github.com/repos/o/r/issues/7")),
            ("github_search_issues", json!({ "query": "repo:o/r is:issue is:open", "per_page": 5 }),
             get("https://api.github.com/search/issues?q=repo%3Ao%2Fr+is%3Aissue+is%3Aopen&per_page=5")),
            ("github_create_issue", json!({ "owner": "o", "repo": "r", "title": "Crash", "body": "Steps…", "labels": ["bug"] }),
             with_body(Method::POST, "https://api.github.com/repos/o/r/issues",
                       json!({ "title": "Crash", "body": "Steps…", "labels": ["bug"] }))),
            ("github_add_issue_comment", json!({ "owner": "o", "repo": "r", "number": 7, "body": "Thanks!" }),
             with_body(Method::POST, "https://api.github.com/repos/o/r/issues/7/comments", json!({ "body": "Thanks!" }))),
            ("github_get_file_contents", json!({ "owner": "o", "repo": "r", "path": "src/lib.rs", "ref": "v1.0" }),
             get("https://api.github.com/repos/o/r/contents/src/lib.rs?ref=v1.0")),
            ("github_get_file_contents", json!({ "owner": "o", "repo": "r", "path": "" }),
             get("https://api.github.com/repos/o/r/contents/")),
            ("github_get_file_contents", json!({ "owner": "o", "repo": "r", "path": "/docs/my notes/é.md/" }),
             get("https://api.github.com/repos/o/r/contents/docs/my%20notes/%C3%A9.md")),
            ("github_list_commits", json!({ "owner": "octo", "repo": "hello", "sha": "main", "path": "src/a b.rs", "since": "2024-03-01T00:00:00Z", "per_page": 5 }),
             get("https://api.github.com/repos/octo/hello/commits?sha=main&path=src%2Fa+b.rs&since=2024-03-01T00%3A00%3A00Z&per_page=5")),
            ("github_get_commit", json!({ "owner": "octo", "repo": "hello", "ref": "1a954628a960aaef81d7b2d4521929579f3541e6", "page": 2 }),
             get("https://api.github.com/repos/octo/hello/commits/1a954628a960aaef81d7b2d4521929579f3541e6?page=2")),
            ("github_get_pull_request_files", json!({ "owner": "octo", "repo": "hello", "number": 25 }),
             get("https://api.github.com/repos/octo/hello/pulls/25/files")),
            ("github_get_pull_request_diff", json!({ "owner": "octo", "repo": "hello", "number": 25 }),
             get("https://api.github.com/repos/octo/hello/pulls/25")),
            ("github_list_pull_request_reviews", json!({ "owner": "octo", "repo": "hello", "number": 25, "per_page": 30 }),
             get("https://api.github.com/repos/octo/hello/pulls/25/reviews?per_page=30")),
            ("github_list_pull_request_comments", json!({ "owner": "octo", "repo": "hello", "number": 25, "page": 2 }),
             get("https://api.github.com/repos/octo/hello/pulls/25/comments?page=2")),
            ("github_create_pull_request", json!({ "owner": "octo", "repo": "hello", "title": "Fix", "head": "octo:fix", "base": "main" }),
             with_body(Method::POST, "https://api.github.com/repos/octo/hello/pulls",
                       json!({ "title": "Fix", "head": "octo:fix", "base": "main" }))),
            ("github_create_pull_request_review", json!({ "owner": "octo", "repo": "hello", "number": 25, "event": "APPROVE" }),
             with_body(Method::POST, "https://api.github.com/repos/octo/hello/pulls/25/reviews", json!({ "event": "APPROVE" }))),
            ("github_merge_pull_request", json!({ "owner": "octo", "repo": "hello", "number": 25 }),
             with_body(Method::PUT, "https://api.github.com/repos/octo/hello/pulls/25/merge", json!({}))),
            ("github_update_issue", json!({ "owner": "octo", "repo": "hello", "number": 24, "labels": [] }),
             with_body(Method::PATCH, "https://api.github.com/repos/octo/hello/issues/24", json!({ "labels": [] }))),
            ("github_list_repositories", json!({ "visibility": "private", "sort": "pushed" }),
             get("https://api.github.com/user/repos?visibility=private&sort=pushed")),
            ("github_search_repositories", json!({ "query": "tokio language:rust", "sort": "stars" }),
             get("https://api.github.com/search/repositories?q=tokio+language%3Arust&sort=stars")),
            ("github_search_code", json!({ "query": "parse_config repo:octo/hello" }),
             get("https://api.github.com/search/code?q=parse_config+repo%3Aocto%2Fhello")),
            ("github_list_branches", json!({ "owner": "octo", "repo": "hello", "protected": true }),
             get("https://api.github.com/repos/octo/hello/branches?protected=true")),
            ("github_list_workflow_runs", json!({ "owner": "octo", "repo": "hello", "branch": "main", "status": "failure" }),
             get("https://api.github.com/repos/octo/hello/actions/runs?branch=main&status=failure")),
            ("slack_list_channels", json!({}),
             get("https://slack.com/api/conversations.list?limit=100&exclude_archived=true")),
            ("slack_list_channels", json!({ "types": ["public_channel", "private_channel"], "cursor": "dGVhbTpD" }),
             get("https://slack.com/api/conversations.list?types=public_channel%2Cprivate_channel&limit=100&cursor=dGVhbTpD&exclude_archived=true")),
            ("slack_read_channel", json!({ "channel": "C0123456789", "oldest": "1712345678.000100" }),
             get("https://slack.com/api/conversations.history?channel=C0123456789&limit=20&oldest=1712345678.000100")),
            ("slack_read_thread", json!({ "channel": "C0123456789", "thread_ts": "1712345678.000100" }),
             get("https://slack.com/api/conversations.replies?channel=C0123456789&ts=1712345678.000100&limit=50")),
            ("slack_post_message", json!({ "channel": "C0123456789", "text": "Deployed :rocket:" }),
             with_body(Method::POST, "https://slack.com/api/chat.postMessage",
                       json!({ "channel": "C0123456789", "text": "Deployed :rocket:" }))),
            ("slack_post_message", json!({ "channel": "C0123456789", "text": "ok", "thread_ts": "1712345678.000100" }),
             with_body(Method::POST, "https://slack.com/api/chat.postMessage",
                       json!({ "channel": "C0123456789", "text": "ok", "thread_ts": "1712345678.000100" }))),
            ("slack_search_messages", json!({ "query": "deploy in:#ops", "count": 5 }),
             get("https://slack.com/api/search.messages?query=deploy+in%3A%23ops&count=5")),
            ("slack_get_user", json!({ "user": "U0123456789" }),
             get("https://slack.com/api/users.info?user=U0123456789")),
            ("calendar_list_calendars", json!({}),
             get("https://www.googleapis.com/calendar/v3/users/me/calendarList")),
            ("calendar_list_events", json!({ "time_min": "2024-05-01T00:00:00Z", "query": "standup" }),
             get("https://www.googleapis.com/calendar/v3/calendars/primary/events?timeMin=2024-05-01T00%3A00%3A00Z&q=standup&maxResults=25&singleEvents=true&orderBy=startTime")),
            ("calendar_list_events", json!({ "calendar_id": "team@group.calendar.google.com", "max_results": 5, "cursor": "CigK" }),
             get("https://www.googleapis.com/calendar/v3/calendars/team%40group.calendar.google.com/events?maxResults=5&pageToken=CigK&singleEvents=true&orderBy=startTime")),
            ("calendar_get_event", json!({ "calendar_id": "en.usa#holiday@group.v.calendar.google.com", "event_id": "abc_20240101" }),
             get("https://www.googleapis.com/calendar/v3/calendars/en.usa%23holiday%40group.v.calendar.google.com/events/abc_20240101")),
            ("calendar_create_event",
             json!({ "summary": "Review", "start": "2024-05-01T10:00:00", "end": "2024-05-01T10:30:00",
                     "time_zone": "Europe/Paris", "attendees": ["a@example.com", "b@example.com"], "send_updates": "all" }),
             with_body(Method::POST, "https://www.googleapis.com/calendar/v3/calendars/primary/events?sendUpdates=all",
                       json!({ "summary": "Review",
                               "start": { "dateTime": "2024-05-01T10:00:00", "timeZone": "Europe/Paris" },
                               "end": { "dateTime": "2024-05-01T10:30:00", "timeZone": "Europe/Paris" },
                               "attendees": [{ "email": "a@example.com" }, { "email": "b@example.com" }] }))),
            ("calendar_create_event",
             json!({ "summary": "Solo", "start": "2024-05-01T10:00:00Z", "end": "2024-05-01T11:00:00Z" }),
             with_body(Method::POST, "https://www.googleapis.com/calendar/v3/calendars/primary/events",
                       json!({ "summary": "Solo", "start": { "dateTime": "2024-05-01T10:00:00Z" },
                               "end": { "dateTime": "2024-05-01T11:00:00Z" } }))),
            ("calendar_delete_event", json!({ "event_id": "abc123" }),
             Expect { method: Method::DELETE, url: "https://www.googleapis.com/calendar/v3/calendars/primary/events/abc123", body: None }),
            ("calendar_find_free_busy", json!({ "time_min": "2024-05-01T08:00:00Z", "time_max": "2024-05-01T18:00:00Z" }),
             with_body(Method::POST, "https://www.googleapis.com/calendar/v3/freeBusy",
                       json!({ "timeMin": "2024-05-01T08:00:00Z", "timeMax": "2024-05-01T18:00:00Z", "items": [{ "id": "primary" }] }))),
            ("calendar_find_free_busy",
             json!({ "time_min": "2024-05-01T08:00:00Z", "time_max": "2024-05-01T18:00:00+02:00", "calendars": ["a@example.com", "en.usa#holiday@group.v.calendar.google.com"] }),
             with_body(Method::POST, "https://www.googleapis.com/calendar/v3/freeBusy",
                       json!({ "timeMin": "2024-05-01T08:00:00Z", "timeMax": "2024-05-01T18:00:00+02:00",
                               "items": [{ "id": "a@example.com" }, { "id": "en.usa#holiday@group.v.calendar.google.com" }] }))),
            ("calendar_update_event", json!({ "event_id": "abc123", "summary": "Moved", "location": "Room 4" }),
             with_body(Method::PATCH, "https://www.googleapis.com/calendar/v3/calendars/primary/events/abc123",
                       json!({ "summary": "Moved", "location": "Room 4" }))),
            ("calendar_respond_to_event", json!({ "event_id": "abc123", "email": "me@example.com", "response": "tentative" }),
             with_body(Method::PATCH, "https://www.googleapis.com/calendar/v3/calendars/primary/events/abc123",
                       json!({ "attendeesOmitted": true, "attendees": [{ "email": "me@example.com", "responseStatus": "tentative" }] }))),
            ("calendar_quick_add", json!({ "text": "Lunch with Ana tomorrow 12:30" }),
             Expect { method: Method::POST, url: "https://www.googleapis.com/calendar/v3/calendars/primary/events/quickAdd?text=Lunch+with+Ana+tomorrow+12%3A30", body: None }),
            ("calendar_list_event_instances", json!({ "event_id": "abc123", "cursor": "CigK" }),
             get("https://www.googleapis.com/calendar/v3/calendars/primary/events/abc123/instances?maxResults=25&pageToken=CigK")),
            ("slack_list_users", json!({ "cursor": "dXNlcjpV" }),
             get("https://slack.com/api/users.list?limit=100&cursor=dXNlcjpV")),
            ("slack_add_reaction", json!({ "channel": "C0123456789", "ts": "1712345678.000100", "name": "eyes" }),
             with_body(Method::POST, "https://slack.com/api/reactions.add",
                       json!({ "channel": "C0123456789", "timestamp": "1712345678.000100", "name": "eyes" }))),
            // A form body, compared as an object of its fields.
            ("slack_open_dm", json!({ "users": ["U0A", "U0B"] }),
             with_body(Method::POST, "https://slack.com/api/conversations.open", json!({ "users": "U0A,U0B" }))),
            ("slack_get_channel_info", json!({ "channel": "C0123456789" }),
             get("https://slack.com/api/conversations.info?channel=C0123456789&include_num_members=true")),
            ("slack_get_permalink", json!({ "channel": "C0123456789", "ts": "1712345678.000100" }),
             get("https://slack.com/api/chat.getPermalink?channel=C0123456789&message_ts=1712345678.000100")),
        ];
        let catalog = Catalog::embedded();
        let mut covered: Vec<&str> = Vec::new();
        for (tool, arguments, expected) in cases {
            let request = render_tool(tool, arguments.clone());
            assert_eq!(request.method, expected.method, "{tool} {arguments}");
            assert_eq!(request.url.as_str(), expected.url, "{tool} {arguments}");
            assert!(
                request.url.fragment().is_none(),
                "{tool}: no fragment may survive"
            );
            let body = match request.body {
                Some(RenderedBody::Json(value)) => Some(value),
                Some(RenderedBody::Form(fields)) => Some(Value::Object(
                    fields
                        .into_iter()
                        .map(|(k, v)| (k, Value::String(v)))
                        .collect(),
                )),
                None => None,
            };
            assert_eq!(body, expected.body, "{tool} {arguments}");
            covered.push(tool);
        }
        for (_, tool) in catalog.tools() {
            assert!(
                covered.contains(&tool.name.as_str()),
                "no rendering test for {}",
                tool.name
            );
        }
    }

    #[test]
    fn provider_headers_are_sent_and_authorization_never_is() {
        let request = render_tool("github_get_me", json!({}));
        let header = |name: &str| {
            request
                .headers
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.as_str())
        };
        assert_eq!(header("accept"), Some("application/vnd.github+json"));
        assert_eq!(header("x-github-api-version"), Some("2022-11-28"));
        assert_eq!(header("authorization"), None);
    }

    /// A tool without patterns, so only the path rules stand between the argument and the URL.
    fn permissive() -> Manifest {
        toml::from_str(
            r#"
            [provider]
            name = "mock"
            title = "Mock"
            authorize_url = "https://mock.test/authorize"
            token_url = "https://mock.test/token"
            api_base = "https://api.mock.test/v1"
            allowed_hosts = ["api.mock.test"]

            [[tools]]
            name = "mock_get"
            title = "Get"
            description = "Get one item."
            toolset = "items"
            read_only = true
            params = [
                { name = "id", type = "string", required = true, description = "Item id." },
                { name = "file", type = "path", required = true, description = "File." },
            ]
            request = { method = "GET", path = "/items/{id}/files/{file}" }
            response = {}

            [[tools]]
            name = "mock_post"
            title = "Post"
            description = "Post a thing."
            toolset = "items"
            read_only = false
            params = [
                { name = "a", type = "string", description = "A." },
                { name = "b", type = "integer", description = "B." },
                { name = "flag", type = "boolean", description = "Flag." },
                { name = "tags", type = "string_array", description = "Tags." },
            ]
            request = { method = "POST", path = "/things", body_format = "form", body = { a = "{a}", b = "{b}", flag = "{flag}", tags = "{tags}", kind = "fixed" } }
            response = {}

            [[tools]]
            name = "mock_nested"
            title = "Nested"
            description = "Nested body."
            toolset = "items"
            read_only = false
            params = [
                { name = "x", type = "string", description = "X." },
                { name = "y", type = "string", description = "Y." },
                { name = "n", type = "integer", description = "N." },
            ]
            request = { method = "PATCH", path = "/nested", body = { meta = { x = "{x}", deeper = { y = "{y}" } }, n = "{n}", list = ["{x}", "{y}"] } }
            response = {}
            "#,
        )
        .unwrap()
    }

    fn render_permissive(tool: &str, arguments: Value) -> Result<RenderedRequest, RenderError> {
        let manifest = permissive();
        let spec = manifest.tools.into_iter().find(|t| t.name == tool).unwrap();
        let spec = Tool::compile(spec).unwrap();
        let valid = validate_args(&spec, &args(arguments)).unwrap();
        render(
            &Provider::compile(manifest.provider).unwrap(),
            &spec,
            &valid,
        )
    }

    #[test]
    fn path_injection_is_rejected_before_any_request() {
        let attempts = [
            ("../../user", "contains `/`"),
            ("..", "`..` is not allowed"),
            (".", "`.` is not allowed"),
            ("a/b", "contains `/`"),
            ("a%2Fb", "contains `%`"),
            ("a%2fb", "contains `%`"),
            ("%2e%2e", "contains `%`"),
            ("x?y=1", "contains `?`"),
            ("a#b", "contains `#`"),
            ("a\\b", "contains `\\`"),
            ("a\nb", "control character"),
            ("a\rb", "control character"),
            ("a\u{0}b", "control character"),
            ("a\u{7f}", "control character"),
            ("", "empty"),
        ];
        for (id, reason) in attempts {
            let error =
                render_permissive("mock_get", json!({ "id": id, "file": "a.txt" })).expect_err(id);
            let RenderError::UnsafePath {
                argument,
                reason: got,
            } = &error
            else {
                panic!("{id:?}: unexpected error {error:?}");
            };
            assert_eq!(argument, "id");
            assert!(got.contains(reason), "{id:?}: {got}");
            assert!(
                error.to_string().contains("invalid argument `id`"),
                "{error}"
            );
        }
    }

    #[test]
    fn file_paths_may_have_slashes_but_never_escape() {
        let refused = [
            ("../../etc/passwd", "`..` segment"),
            ("src/../../x", "`..` segment"),
            ("src/./x", "`.` segment"),
            ("a//b", "empty segment"),
            ("a/b%2F..", "contains `%`"),
            ("a/b?x", "contains `?`"),
            ("a/b#frag", "contains `#`"),
            ("a\\..\\b", "contains `\\`"),
            ("a/\nb", "control character"),
        ];
        for (file, reason) in refused {
            let error =
                render_permissive("mock_get", json!({ "id": "1", "file": file })).expect_err(file);
            assert!(
                matches!(&error, RenderError::UnsafePath { argument, reason: got } if argument == "file" && got.contains(reason)),
                "{file:?}: {error:?}"
            );
        }
        let ok = render_permissive(
            "mock_get",
            json!({ "id": "a b:c@d", "file": "dir/sub dir/x.tar.gz" }),
        )
        .unwrap();
        assert_eq!(
            ok.url.as_str(),
            "https://api.mock.test/v1/items/a%20b%3Ac%40d/files/dir/sub%20dir/x.tar.gz"
        );
        // An empty path is only accepted as the final segment, where it means the root.
        let empty = render_permissive("mock_get", json!({ "id": "1", "file": "" }));
        assert!(empty.is_ok(), "{empty:?}");
    }

    #[test]
    fn hash_is_encoded_only_where_the_manifest_allows_it() {
        let catalog = Catalog::embedded();
        let (provider, tool) = catalog.tool("calendar_get_event").unwrap();
        for bad in ["a/b", "a?b", "..", "a%23b"] {
            let valid = validate_args(tool, &args(json!({ "calendar_id": bad, "event_id": "e" })));
            let refused = match valid {
                Err(_) => true,
                Ok(valid) => render(provider, tool, &valid).is_err(),
            };
            assert!(refused, "calendar_id {bad:?} must be refused");
        }
        let (provider, tool) = catalog.tool("github_get_issue").unwrap();
        let mut spec = tool.spec().clone();
        spec.params[0].pattern = None;
        let spec = Tool::compile(spec).unwrap();
        let valid = validate_args(
            &spec,
            &args(json!({ "owner": "a#b", "repo": "r", "number": 1 })),
        )
        .unwrap();
        let error = render(provider, &spec, &valid).unwrap_err();
        assert!(error.to_string().contains("contains `#`"), "{error}");
    }

    #[test]
    fn templates_drop_absent_values_and_emptied_tables() {
        let request = render_permissive("mock_nested", json!({})).unwrap();
        assert_eq!(request.method, http::Method::PATCH);
        assert_eq!(request.body, Some(RenderedBody::Json(json!({}))));

        let request = render_permissive("mock_nested", json!({ "y": "why", "n": 3 })).unwrap();
        assert_eq!(
            request.body,
            Some(RenderedBody::Json(
                json!({ "meta": { "deeper": { "y": "why" } }, "n": 3, "list": ["why"] })
            ))
        );
    }

    #[test]
    fn form_bodies_join_arrays_and_keep_literals() {
        let request = render_permissive(
            "mock_post",
            json!({ "b": 5, "flag": false, "tags": ["x", "y"] }),
        )
        .unwrap();
        let Some(RenderedBody::Form(mut pairs)) = request.body else {
            panic!("expected a form body")
        };
        pairs.sort();
        let expected: Vec<(String, String)> = [
            ("b", "5"),
            ("flag", "false"),
            ("kind", "fixed"),
            ("tags", "x,y"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        assert_eq!(pairs, expected);
    }

    #[test]
    fn the_url_must_stay_on_a_declared_host_over_https() {
        let manifest = permissive();
        let tool = &Tool::compile(manifest.tools[0].clone()).unwrap();
        let valid = validate_args(tool, &args(json!({ "id": "1", "file": "f" }))).unwrap();
        let provider = |spec| Provider::compile(spec).unwrap();

        let mut off_host = manifest.provider.clone();
        off_host.allowed_hosts = vec!["other.test".into()];
        let error = render(&provider(off_host), tool, &valid).unwrap_err();
        assert!(
            matches!(error, RenderError::Destination { .. }),
            "{error:?}"
        );
        assert!(
            error.to_string().contains("not one the provider declares"),
            "{error}"
        );

        let mut plain_http = manifest.provider.clone();
        plain_http.api_base = "http://api.mock.test/v1".into();
        assert!(
            // Refused when the provider is built, before any render.
            Provider::compile(plain_http).is_err(),
            "plain http to a remote host"
        );

        let mut loopback = manifest.provider.clone();
        loopback.api_base = "http://127.0.0.1:8765/github".into();
        loopback.allowed_hosts.push("127.0.0.1".into());
        let request = render(&provider(loopback), tool, &valid).unwrap();
        assert_eq!(
            request.url.as_str(),
            "http://127.0.0.1:8765/github/items/1/files/f"
        );
    }

    #[test]
    fn arguments_validated_for_another_tool_are_refused() {
        let catalog = Catalog::embedded();
        let (_, me) = catalog.tool("github_get_me").unwrap();
        let (provider, issue) = catalog.tool("github_get_issue").unwrap();
        let valid = validate_args(me, &Map::new()).unwrap();
        assert!(matches!(
            render(provider, issue, &valid),
            Err(RenderError::InvalidTool { .. })
        ));
    }
}
