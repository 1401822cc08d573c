//! Manifest checks and the compiled forms the call path runs on.
//!
//! A manifest is text written by people; a tool call is on the hot path. Everything that can
//! be decided once — does every placeholder name a parameter, does every pattern compile, which
//! parameter fills which path segment, how is each projected field reached — is decided here at
//! load time, so a mistake fails loading with a reason instead of failing a call, and rendering
//! and projection only walk prebuilt structures.

use regex::Regex;
use serde_json::Value;
use url::Url;

use super::errors::ErrorRules;
use super::hosts::parse_endpoint;
use super::manifest::{
    BodyFormat, ErrorConvention, HttpMethod, Pagination, ParamSpec, ParamType, ProviderSpec,
    ResponseKind, ToolSpec,
};

/// A provider as the call path uses it: the manifest's [`ProviderSpec`] (with the config's
/// overrides applied), its parsed API base and its compiled error rules. Built once by the
/// catalog; reads like the spec through `Deref`.
#[derive(Debug, Clone)]
pub struct Provider {
    spec: ProviderSpec,
    pub(crate) base: Url,
    pub(crate) errors: ErrorRules,
}

impl Provider {
    /// `errors` were compiled from `spec` before the overrides changed its endpoints.
    pub(crate) fn new(spec: ProviderSpec, errors: ErrorRules) -> Result<Provider, String> {
        let base = parse_endpoint(&spec.api_base)?;
        Ok(Provider { spec, base, errors })
    }

    /// Check and compile a spec on its own (tests build providers this way).
    #[cfg(test)]
    pub(crate) fn compile(spec: ProviderSpec) -> Result<Provider, String> {
        let errors = ErrorRules::compile(&spec).map_err(|e| e.reason)?;
        Provider::new(spec, errors)
    }

    pub fn spec(&self) -> &ProviderSpec {
        &self.spec
    }

    /// The fields of a successful answer the executor reads to tell whether it is an error
    /// (`slack_ok`: `ok`, `error` and what the hints quote); error statuses are read whole.
    pub fn answer_fields(&self) -> Vec<&str> {
        match self.error_convention {
            ErrorConvention::Http => Vec::new(),
            ErrorConvention::SlackOk => ["ok", "error"]
                .into_iter()
                .chain(self.errors.fields())
                .collect(),
        }
    }
}

impl std::ops::Deref for Provider {
    type Target = ProviderSpec;
    fn deref(&self) -> &ProviderSpec {
        &self.spec
    }
}

/// A tool as the call path uses it: the manifest's [`ToolSpec`] and what was compiled from it
/// at load. There is no unchecked tool: [`Tool::compile`] is the only way to get one.
#[derive(Debug, Clone)]
pub struct Tool {
    spec: ToolSpec,
    pub(crate) compiled: CompiledTool,
}

impl Tool {
    /// Check a tool and compile it; the error says what is wrong with the manifest.
    pub fn compile(spec: ToolSpec) -> Result<Tool, String> {
        let compiled = CompiledTool::compile(&spec)?;
        Ok(Tool { spec, compiled })
    }

    pub fn spec(&self) -> &ToolSpec {
        &self.spec
    }
}

impl std::ops::Deref for Tool {
    type Target = ToolSpec;
    fn deref(&self) -> &ToolSpec {
        &self.spec
    }
}

#[derive(Debug, Clone)]
pub(crate) struct CompiledTool {
    /// Per parameter, in declaration order: the anchored pattern, if any.
    pub(crate) patterns: Vec<Option<Regex>>,
    /// Per parameter: for one that declares `resolve`, its anchored `unless` (an id already).
    pub(crate) resolvers: Vec<Option<Regex>>,
    pub(crate) path: Vec<PathPart>,
    pub(crate) query: Vec<(String, Template)>,
    pub(crate) body: Option<Template>,
    pub(crate) projection: Projection,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum PathPart {
    /// Already checked to need no encoding.
    Literal(String),
    /// Index into the tool's parameters.
    Param(usize),
}

/// A query or body template with placeholders resolved to parameter indices.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Template {
    Literal(Value),
    Param(usize),
    /// `"{$}"`: the current element inside `$item`.
    Item,
    Object(Vec<(String, Template)>),
    Array(Vec<Template>),
    /// `{ "$each" = "param", "$item" = … }`: one `$item` per element of a string array.
    Each {
        param: usize,
        item: Box<Template>,
    },
}

#[derive(Debug, Clone)]
pub(crate) struct Projection {
    pub(crate) items_at: String,
    pub(crate) fields: Vec<FieldRule>,
    pub(crate) root_fields: Vec<FieldRule>,
}

/// One output field: its name and the paths tried in order until one yields a value.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct FieldRule {
    pub(crate) output: String,
    pub(crate) alternatives: Vec<Vec<Step>>,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Step {
    pub(crate) key: String,
    /// `key[]`: the value is an array and the rest of the path applies to each element.
    pub(crate) each: bool,
}

const MAX_TOOL_NAME: usize = 64;

impl CompiledTool {
    pub(crate) fn compile(tool: &ToolSpec) -> Result<CompiledTool, String> {
        check_tool_name(&tool.name)?;
        if tool.read_only && tool.destructive {
            return Err("a tool cannot be both `read_only` and `destructive`".into());
        }
        if tool.description.trim().is_empty() {
            return Err("`description` is empty; tell the model when to use the tool".into());
        }
        let patterns = compile_params(&tool.params)?;
        let resolvers = compile_resolvers(&tool.params)?;
        let mut used = vec![false; tool.params.len()];
        let path = compile_path(tool, &mut used)?;

        let mut query = Vec::with_capacity(tool.request.query.0.len());
        for (key, value) in tool.request.query.iter() {
            let template = compile_template(value, &tool.params, &mut used, Context::Query)
                .map_err(|e| format!("query `{key}`: {e}"))?;
            query.push((key.to_string(), template));
        }

        let body = match &tool.request.body {
            None => None,
            Some(value) => {
                if matches!(tool.request.method, HttpMethod::Get | HttpMethod::Delete) {
                    return Err(format!(
                        "a {} request cannot have a body; use `query`",
                        tool.request.method.as_http()
                    ));
                }
                let Value::Object(fields) = value else {
                    return Err("`body` must be a table".into());
                };
                let template = match tool.request.body_format {
                    BodyFormat::Json => {
                        compile_template(value, &tool.params, &mut used, Context::Body)
                    }
                    // A form is one flat table: its values follow the query rules.
                    BodyFormat::Form => fields
                        .iter()
                        .map(|(key, field)| {
                            compile_template(field, &tool.params, &mut used, Context::Form)
                                .map(|template| (key.clone(), template))
                                .map_err(|e| format!("`{key}`: {e}"))
                        })
                        .collect::<Result<Vec<_>, _>>()
                        .map(Template::Object),
                };
                Some(template.map_err(|e| format!("body: {e}"))?)
            }
        };

        if let Some(unused) = tool.params.iter().zip(&used).find(|(_, used)| !**used) {
            return Err(format!(
                "parameter `{}` is declared but not used in the path, query or body",
                unused.0.name
            ));
        }
        for (name, value) in &tool.request.headers {
            check_header_name(name)?;
            if http::HeaderValue::from_str(value).is_err() {
                return Err(format!("header `{name}` has an invalid value"));
            }
        }

        let projection = compile_projection(tool)?;
        check_paging(tool)?;
        Ok(CompiledTool {
            patterns,
            resolvers,
            path,
            query,
            body,
            projection,
        })
    }
}

fn check_tool_name(name: &str) -> Result<(), String> {
    let valid_chars = name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if name.is_empty() || name.len() > MAX_TOOL_NAME || !valid_chars {
        return Err(format!(
            "tool name `{name}` must be 1 to {MAX_TOOL_NAME} letters, digits, `_` or `-`"
        ));
    }
    Ok(())
}

/// Header names a manifest may not set: the executor owns credentials and framing.
pub(crate) fn check_header_name(name: &str) -> Result<(), String> {
    const RESERVED: [&str; 5] = [
        "authorization",
        "cookie",
        "proxy-authorization",
        "host",
        "content-length",
    ];
    if http::HeaderName::from_bytes(name.as_bytes()).is_err() {
        return Err(format!("`{name}` is not a valid header name"));
    }
    if RESERVED.iter().any(|r| r.eq_ignore_ascii_case(name)) {
        return Err(format!("a manifest may not set the `{name}` header"));
    }
    Ok(())
}

pub(crate) fn is_identifier(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn compile_params(params: &[ParamSpec]) -> Result<Vec<Option<Regex>>, String> {
    let mut patterns = Vec::with_capacity(params.len());
    for (index, param) in params.iter().enumerate() {
        let name = &param.name;
        if !is_identifier(name) {
            return Err(format!(
                "parameter name `{name}` must be letters, digits and `_`"
            ));
        }
        if params[..index].iter().any(|p| p.name == *name) {
            return Err(format!("parameter `{name}` is declared twice"));
        }
        let textual = matches!(
            param.kind,
            ParamType::String | ParamType::StringArray | ParamType::Path
        );
        if !textual
            && (param.enum_values.is_some()
                || param.pattern.is_some()
                || param.max_length.is_some())
        {
            return Err(format!(
                "parameter `{name}`: `enum`, `pattern` and `max_length` apply to text parameters only"
            ));
        }
        if param.kind != ParamType::Integer && (param.min.is_some() || param.max.is_some()) {
            return Err(format!(
                "parameter `{name}`: `min` and `max` apply to integers only"
            ));
        }
        if let (Some(min), Some(max)) = (param.min, param.max) {
            if min > max {
                return Err(format!(
                    "parameter `{name}`: `min` {min} is above `max` {max}"
                ));
            }
        }
        if matches!(&param.enum_values, Some(values) if values.is_empty()) {
            return Err(format!("parameter `{name}`: `enum` is empty"));
        }
        let pattern = match &param.pattern {
            None => None,
            Some(pattern) => Some(
                anchored(pattern)
                    .map_err(|e| format!("parameter `{name}`: pattern does not compile: {e}"))?,
            ),
        };
        if let Some(default) = &param.default {
            if param.required {
                return Err(format!(
                    "parameter `{name}` is required, so its `default` would never be used"
                ));
            }
            param
                .check_value(pattern.as_ref(), default)
                .map_err(|e| format!("parameter `{name}`: `default` is invalid: {e}"))?;
        }
        if let Some(values) = &param.enum_values {
            for value in values {
                param
                    .check_item(pattern.as_ref(), value)
                    .map_err(|e| format!("parameter `{name}`: enum value `{value}`: {e}"))?;
            }
        }
        patterns.push(pattern);
    }
    Ok(patterns)
}

/// Lists page one way: the result's `next_page` goes back as the tool's `page` argument, its
/// `next_cursor` as `cursor` — so a tool that announces a next page must take it back.
fn check_paging(tool: &ToolSpec) -> Result<(), String> {
    let wanted = match tool.response.pagination {
        Pagination::None => return Ok(()),
        Pagination::LinkHeader | Pagination::SlackPaging => "page",
        Pagination::SlackCursor | Pagination::PageToken => "cursor",
    };
    if tool.param(wanted).is_none() {
        return Err(format!(
            "`pagination = \"{}\"` returns where the next page is; declare a `{wanted}` \
             parameter to take it back",
            serde_json::to_value(tool.response.pagination)
                .ok()
                .and_then(|v| v.as_str().map(String::from))
                .unwrap_or_default()
        ));
    }
    Ok(())
}

/// The `unless` pattern of each parameter that declares `resolve`. Whether the lookup tool
/// exists and lists `by` and `take` is checked with the whole manifest ([`check_resolvers`]).
fn compile_resolvers(params: &[ParamSpec]) -> Result<Vec<Option<Regex>>, String> {
    params
        .iter()
        .map(|param| {
            let Some(resolve) = &param.resolve else {
                return Ok(None);
            };
            if param.kind != ParamType::String {
                return Err(format!(
                    "parameter `{}`: `resolve` applies to string parameters only",
                    param.name
                ));
            }
            anchored(&resolve.unless).map(Some).map_err(|e| {
                format!(
                    "parameter `{}`: `resolve.unless` does not compile: {e}",
                    param.name
                )
            })
        })
        .collect()
}

/// Each `resolve` of `tool` names a list tool among `tools` (its provider's) whose items carry
/// the `by` and `take` fields.
pub(crate) fn check_resolvers(tool: &ToolSpec, tools: &[Tool]) -> Result<(), String> {
    for param in &tool.params {
        let Some(resolve) = &param.resolve else {
            continue;
        };
        let name = &param.name;
        let Some(lookup) = tools.iter().find(|t| t.name == resolve.tool) else {
            return Err(format!(
                "parameter `{name}`: `resolve.tool` `{}` is not a tool of this provider",
                resolve.tool
            ));
        };
        if lookup.response.kind != ResponseKind::List {
            return Err(format!(
                "parameter `{name}`: `resolve.tool` `{}` must be a `kind = \"list\"` tool",
                resolve.tool
            ));
        }
        let outputs = &lookup.compiled.projection.fields;
        for field in [&resolve.by, &resolve.take] {
            if !outputs.iter().any(|rule| rule.output == *field) {
                return Err(format!(
                    "parameter `{name}`: `{}` items have no field `{field}`",
                    resolve.tool
                ));
            }
        }
    }
    Ok(())
}

/// `^(?:pattern)$`, compiled once per process: the catalog repeats a few patterns (owners,
/// repositories, Slack ids, timestamps) across many tools, and compiling them is most of the
/// time it takes to load the catalog — that is, to start `keyward serve`.
fn anchored(pattern: &str) -> Result<Regex, regex::Error> {
    static COMPILED: std::sync::OnceLock<
        std::sync::Mutex<std::collections::HashMap<String, Regex>>,
    > = std::sync::OnceLock::new();
    let mut compiled = COMPILED
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some(regex) = compiled.get(pattern) {
        return Ok(regex.clone());
    }
    let regex = Regex::new(&format!("^(?:{pattern})$"))?;
    compiled.insert(pattern.to_string(), regex.clone());
    Ok(regex)
}

/// A string that is exactly `{name}` names a parameter (or `{$}`, the current `$each` item).
pub(crate) fn placeholder(text: &str) -> Option<&str> {
    let inner = text.strip_prefix('{')?.strip_suffix('}')?;
    (inner == "$" || is_identifier(inner)).then_some(inner)
}

/// Whether `{identifier}` appears inside a longer string: almost certainly a typo for a
/// placeholder, since templates only substitute whole strings.
fn embeds_placeholder(text: &str) -> bool {
    let mut rest = text;
    while let Some(open) = rest.find('{') {
        let after = &rest[open + 1..];
        if let Some(close) = after.find('}') {
            let inner = &after[..close];
            if inner == "$" || is_identifier(inner) {
                return true;
            }
        }
        rest = after;
    }
    false
}

fn param_index(params: &[ParamSpec], name: &str) -> Result<usize, String> {
    params.iter().position(|p| p.name == name).ok_or_else(|| {
        let declared: Vec<&str> = params.iter().map(|p| p.name.as_str()).collect();
        format!(
            "`{{{name}}}` is not a declared parameter (declared: {})",
            declared.join(", ")
        )
    })
}

/// Characters a literal path segment may hold without any encoding.
fn is_plain_segment(segment: &str) -> bool {
    !segment.is_empty()
        && segment != "."
        && segment != ".."
        && segment
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_' | '~' | ':' | '@'))
}

fn compile_path(tool: &ToolSpec, used: &mut [bool]) -> Result<Vec<PathPart>, String> {
    let path = &tool.request.path;
    let Some(rest) = path.strip_prefix('/') else {
        return Err(format!("request path `{path}` must start with `/`"));
    };
    let mut parts = Vec::new();
    for segment in rest.split('/') {
        if let Some(name) = placeholder(segment) {
            if name == "$" {
                return Err("`{$}` is only meaningful inside `$item`".into());
            }
            let index = param_index(&tool.params, name)?;
            let param = &tool.params[index];
            if !param.required && param.default.is_none() {
                return Err(format!(
                    "path parameter `{name}` must be `required` or have a `default`; an absent \
                     path segment would change the endpoint"
                ));
            }
            if matches!(param.kind, ParamType::StringArray | ParamType::Boolean) {
                return Err(format!(
                    "path parameter `{name}` must be a string, integer or path"
                ));
            }
            used[index] = true;
            parts.push(PathPart::Param(index));
        } else if is_plain_segment(segment) {
            parts.push(PathPart::Literal(segment.to_string()));
        } else {
            return Err(format!(
                "request path `{path}`: segment `{segment}` must be a whole `{{param}}` or plain \
                 text (letters, digits, `-._~:@`), and not empty, `.` or `..`"
            ));
        }
    }
    for (index, param) in tool.params.iter().enumerate() {
        let in_path = parts.contains(&PathPart::Param(index));
        if param.allow_hash && !in_path {
            return Err(format!(
                "`allow_hash` applies to path parameters only (`{}`)",
                param.name
            ));
        }
        if param.allow_hash && param.kind != ParamType::String {
            return Err(format!(
                "`allow_hash` applies to string parameters only (`{}`)",
                param.name
            ));
        }
    }
    Ok(parts)
}

#[derive(Clone, Copy, PartialEq)]
enum Context {
    Query,
    Form,
    Body,
    /// Inside `$item`, where `{$}` is the current element.
    Item,
}

fn compile_template(
    value: &Value,
    params: &[ParamSpec],
    used: &mut [bool],
    context: Context,
) -> Result<Template, String> {
    let nested_allowed = matches!(context, Context::Body | Context::Item);
    match value {
        Value::String(text) => match placeholder(text) {
            Some("$") if context == Context::Item => Ok(Template::Item),
            Some("$") => Err("`{$}` is only meaningful inside `$item`".into()),
            Some(name) => {
                let index = param_index(params, name)?;
                used[index] = true;
                Ok(Template::Param(index))
            }
            None if embeds_placeholder(text) => Err(format!(
                "`{text}`: a placeholder must be the whole string, e.g. \"{{name}}\""
            )),
            None => Ok(Template::Literal(value.clone())),
        },
        Value::Array(_) | Value::Object(_) if !nested_allowed => Err(
            "query and form values must be a `{param}` placeholder or a literal string, number \
             or boolean"
                .into(),
        ),
        Value::Array(items) => items
            .iter()
            .map(|item| compile_template(item, params, used, context))
            .collect::<Result<_, _>>()
            .map(Template::Array),
        Value::Object(map) if map.contains_key("$each") || map.contains_key("$item") => {
            if map.len() != 2 {
                return Err("`$each` and `$item` go together and alone in one table".into());
            }
            let (Some(Value::String(each)), Some(item)) = (map.get("$each"), map.get("$item"))
            else {
                return Err(
                    "`$each` names a string_array parameter and `$item` is its template".into(),
                );
            };
            let param = param_index(params, each)?;
            if params[param].kind != ParamType::StringArray {
                return Err(format!(
                    "`$each` needs a string_array parameter; `{each}` is not one"
                ));
            }
            used[param] = true;
            let item = compile_template(item, params, used, Context::Item)?;
            Ok(Template::Each {
                param,
                item: Box::new(item),
            })
        }
        Value::Object(map) => {
            let mut fields = Vec::with_capacity(map.len());
            for (key, value) in map {
                if key.starts_with('$') {
                    return Err(format!(
                        "unknown template key `{key}` (known: `$each`, `$item`)"
                    ));
                }
                let template = compile_template(value, params, used, context)
                    .map_err(|e| format!("`{key}`: {e}"))?;
                fields.push((key.clone(), template));
            }
            Ok(Template::Object(fields))
        }
        Value::Null => Err("a template value cannot be null; leave the key out".into()),
        Value::Bool(_) | Value::Number(_) => Ok(Template::Literal(value.clone())),
    }
}

fn compile_projection(tool: &ToolSpec) -> Result<Projection, String> {
    let response = &tool.response;
    let items_at = response.items_at.clone();
    if !items_at.is_empty() && !items_at.starts_with('/') {
        return Err(format!(
            "response `items_at` `{items_at}` must be a JSON pointer: \"\" or start with `/`"
        ));
    }
    if response.kind == ResponseKind::Object && !items_at.is_empty() {
        return Err("`items_at` applies to `kind = \"list\"` responses only".into());
    }
    if response.kind == ResponseKind::Object && !response.root_fields.is_empty() {
        return Err("`root_fields` applies to `kind = \"list\"` responses only".into());
    }
    let fields = parse_fields(&response.fields)?;
    let root_fields = parse_fields(&response.root_fields)?;
    if let Some(decoded) = &response.decode_base64 {
        if !fields.is_empty() && !fields.iter().any(|f| f.output == *decoded) {
            return Err(format!(
                "`decode_base64` names `{decoded}`, which `fields` does not keep"
            ));
        }
    }
    for capped in &response.cap_text {
        if !fields.iter().any(|f| f.output == *capped) {
            return Err(format!(
                "`cap_text` names `{capped}`, which `fields` does not keep"
            ));
        }
    }
    if let Some(name) = &response.text_body {
        // The whole answer is one text: there is nothing to pick fields or items from.
        if !is_identifier(name) {
            return Err(format!(
                "`text_body` `{name}` must be letters, digits and `_`"
            ));
        }
        if response.kind == ResponseKind::List
            || !fields.is_empty()
            || response.decode_base64.is_some()
            || !response.cap_text.is_empty()
        {
            return Err("`text_body` takes no `kind = \"list\"`, `fields`, `decode_base64` or `cap_text`: the answer is one text".into());
        }
    }
    Ok(Projection {
        items_at,
        fields,
        root_fields,
    })
}

fn parse_fields(fields: &[String]) -> Result<Vec<FieldRule>, String> {
    let mut rules: Vec<FieldRule> = Vec::with_capacity(fields.len());
    for field in fields {
        let rule = parse_field(field).map_err(|e| format!("response field `{field}`: {e}"))?;
        if rules.iter().any(|r| r.output == rule.output) {
            return Err(format!("response field `{}` is listed twice", rule.output));
        }
        rules.push(rule);
    }
    Ok(rules)
}

/// `name = a.b | c[].d` or just `a.b`.
pub(crate) fn parse_field(text: &str) -> Result<FieldRule, String> {
    let (output, paths) = match text.split_once('=') {
        Some((name, paths)) => (Some(name.trim()), paths),
        None => (None, text),
    };
    let alternatives: Vec<&str> = paths.split('|').map(str::trim).collect();
    let output = match output {
        Some(name) if is_identifier(name) => name.to_string(),
        Some(name) => {
            return Err(format!(
                "output name `{name}` must be letters, digits and `_`"
            ))
        }
        None if alternatives.len() > 1 => {
            return Err("fallbacks need an output name: `name = a | b`".into())
        }
        None => alternatives[0].replace("[]", ""),
    };
    let alternatives = alternatives
        .into_iter()
        .map(parse_path)
        .collect::<Result<Vec<_>, _>>()?;
    Ok(FieldRule {
        output,
        alternatives,
    })
}

fn parse_path(path: &str) -> Result<Vec<Step>, String> {
    path.split('.')
        .map(|part| {
            let (key, each) = match part.strip_suffix("[]") {
                Some(key) => (key, true),
                None => (part, false),
            };
            let valid = !key.is_empty()
                && key
                    .chars()
                    .all(|c| !c.is_whitespace() && !matches!(c, '[' | ']' | '|' | '='));
            if !valid {
                return Err(format!(
                    "`{path}` is not a path like `user.login` or `labels[].name`"
                ));
            }
            Ok(Step {
                key: key.to_string(),
                each,
            })
        })
        .collect()
}

impl ParamSpec {
    /// Check one argument value and return it in canonical form (integers as `i64`).
    /// The error describes what was expected and what came instead.
    pub(crate) fn check_value(
        &self,
        pattern: Option<&Regex>,
        value: &Value,
    ) -> Result<Value, String> {
        let mismatch = || format!("expected {}, got {}", self.expected(), describe(value));
        match self.kind {
            ParamType::String | ParamType::Path => match value {
                Value::String(text) => {
                    self.check_item(pattern, text)?;
                    Ok(value.clone())
                }
                _ => Err(mismatch()),
            },
            ParamType::StringArray => match value {
                Value::Array(items) => {
                    for item in items {
                        let Value::String(text) = item else {
                            return Err(mismatch());
                        };
                        self.check_item(pattern, text)?;
                    }
                    Ok(value.clone())
                }
                _ => Err(mismatch()),
            },
            ParamType::Boolean => match value {
                Value::Bool(_) => Ok(value.clone()),
                _ => Err(mismatch()),
            },
            ParamType::Integer => {
                let Value::Number(number) = value else {
                    return Err(mismatch());
                };
                let integer = match number.as_i64() {
                    Some(integer) => integer,
                    None => match number.as_f64() {
                        Some(f) if f.fract() == 0.0 && f.abs() < 9.0e15 => f as i64,
                        _ => return Err(mismatch()),
                    },
                };
                if self.min.is_some_and(|min| integer < min)
                    || self.max.is_some_and(|max| integer > max)
                {
                    return Err(mismatch());
                }
                Ok(Value::from(integer))
            }
        }
    }

    /// Check one string (a string value or one item of a string array).
    pub(crate) fn check_item(&self, pattern: Option<&Regex>, text: &str) -> Result<(), String> {
        let what = if self.kind == ParamType::StringArray {
            "each item to be "
        } else {
            ""
        };
        if let Some(values) = &self.enum_values {
            if !values.iter().any(|v| v == text) {
                return Err(format!(
                    "expected {what}one of {}, got {}",
                    quote_list(values),
                    describe(&Value::from(text))
                ));
            }
        }
        if let Some(max) = self.max_length {
            let length = text.chars().count();
            if length > max {
                return Err(format!(
                    "expected {what}at most {max} characters, got {length} characters"
                ));
            }
        }
        if let Some(pattern) = pattern {
            if !pattern.is_match(text) {
                return Err(format!(
                    "expected {what}a string matching `{}`, got {}",
                    self.pattern.as_deref().unwrap_or_default(),
                    describe(&Value::from(text))
                ));
            }
        }
        Ok(())
    }

    /// What a valid value looks like, for error messages.
    pub(crate) fn expected(&self) -> String {
        let mut text = match self.kind {
            ParamType::String => "a string".to_string(),
            ParamType::Path => "a file path such as \"src/main.rs\"".to_string(),
            ParamType::StringArray => "an array of strings".to_string(),
            ParamType::Boolean => "true or false".to_string(),
            ParamType::Integer => match (self.min, self.max) {
                (Some(min), Some(max)) => format!("an integer from {min} to {max}"),
                (Some(min), None) => format!("an integer ≥ {min}"),
                (None, Some(max)) => format!("an integer ≤ {max}"),
                (None, None) => "an integer".to_string(),
            },
        };
        let each = if self.kind == ParamType::StringArray {
            "each "
        } else {
            ""
        };
        if let Some(values) = &self.enum_values {
            text.push_str(&format!(", {each}one of {}", quote_list(values)));
        }
        if let Some(pattern) = &self.pattern {
            text.push_str(&format!(", {each}matching `{pattern}`"));
        }
        if let Some(max) = self.max_length {
            text.push_str(&format!(", {each}at most {max} characters"));
        }
        text
    }
}

fn quote_list(values: &[String]) -> String {
    values
        .iter()
        .map(|v| format!("\"{v}\""))
        .collect::<Vec<_>>()
        .join(", ")
}

/// A short description of a JSON value for error messages (long strings are cut).
pub(crate) fn describe(value: &Value) -> String {
    const LIMIT: usize = 60;
    match value {
        Value::String(text) if text.chars().count() > LIMIT => {
            let cut: String = text.chars().take(LIMIT).collect();
            format!("the string {:?}…", cut)
        }
        Value::String(text) => format!("the string {text:?}"),
        Value::Array(_) => "an array".to_string(),
        Value::Object(_) => "an object".to_string(),
        Value::Null => "null".to_string(),
        other => other.to_string(),
    }
}
