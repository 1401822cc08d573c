//! What the model gets back: the fields a tool declares, not the API's whole answer.
//!
//! Provider responses are mostly URLs and nested copies of users and repositories; a list of
//! ten GitHub pull requests is around 200 KB, which would drown the model's context and cost
//! the user money. Each tool's manifest names the fields worth keeping, and this module keeps
//! exactly those (renamed and flattened as declared), adds where the next page is, and turns
//! base64 file content into text. Field paths are compiled at load time; projecting walks them
//! without parsing anything.
//!
//! Shapes: an object response becomes one flat-ish object; a list (or an array answer to an
//! object tool, such as a directory listing) becomes
//! `{ <root fields>, "count": n, "next_…": …, "items": [ … ] }`.

use base64::Engine as _;
use serde_json::{json, Map, Value};

use crate::catalog::{FieldRule, Pagination, ResponseKind, Step, Tool};

/// Project a successful response body. `headers` are the response headers (GitHub announces
/// the next page in `Link`). An empty body (`null`) becomes the tool's `empty_result`, or `{}`.
pub fn project(tool: &Tool, headers: &http::HeaderMap, body: Value) -> Value {
    let spec = &tool.response;
    let compiled = &tool.compiled.projection;
    if body.is_null() || body.as_str() == Some("") {
        return spec
            .empty_result
            .clone()
            .unwrap_or_else(|| Value::Object(Map::new()));
    }
    if let Some(name) = &spec.text_body {
        return text_result(name, body, spec.max_text_bytes);
    }
    let shape = Shape {
        fields: &compiled.fields,
        decode: spec.decode_base64.as_deref(),
        cap: &spec.cap_text,
        max_text: spec.max_text_bytes,
    };

    let mut body = body;
    match spec.kind {
        ResponseKind::Object => match body {
            Value::Array(items) => list(Map::new(), None, items, &shape),
            object => shape.item(object),
        },
        ResponseKind::List => {
            let mut out = Map::new();
            for rule in &compiled.root_fields {
                if let Some(value) = extract_rule(&body, rule) {
                    out.insert(rule.output.clone(), value);
                }
            }
            let next = next_page(spec.pagination, &compiled.items_at, headers, &body);
            let items = match body.pointer_mut(&compiled.items_at).map(Value::take) {
                Some(Value::Array(items)) => items,
                _ => Vec::new(),
            };
            list(out, next, items, &shape)
        }
    }
}

/// How each object is cut down.
struct Shape<'a> {
    fields: &'a [FieldRule],
    decode: Option<&'a str>,
    cap: &'a [String],
    max_text: usize,
}

impl Shape<'_> {
    fn item(&self, source: Value) -> Value {
        if self.fields.is_empty() {
            return source;
        }
        let mut out = Map::with_capacity(self.fields.len());
        for rule in self.fields {
            if let Some(value) = extract_rule(&source, rule) {
                out.insert(rule.output.clone(), value);
            }
        }
        if let Some(field) = self.decode {
            decode_text(&mut out, field, &source, self.max_text);
        }
        for field in self.cap {
            if let Some(Value::String(text)) = out.get_mut(field.as_str()) {
                if cut(text, self.max_text) {
                    out.insert("truncated".into(), json!(true));
                }
            }
        }
        Value::Object(out)
    }
}

fn list(
    mut out: Map<String, Value>,
    next: Option<(&str, Value)>,
    items: Vec<Value>,
    shape: &Shape,
) -> Value {
    out.insert("count".into(), json!(items.len()));
    if let Some((key, value)) = next {
        out.insert(key.into(), value);
    }
    out.insert(
        "items".into(),
        Value::Array(items.into_iter().map(|item| shape.item(item)).collect()),
    );
    Value::Object(out)
}

/// The first alternative that yields a non-null value.
fn extract_rule(source: &Value, rule: &FieldRule) -> Option<Value> {
    rule.alternatives
        .iter()
        .find_map(|steps| extract(source, steps))
}

fn extract(value: &Value, steps: &[Step]) -> Option<Value> {
    let Some((step, rest)) = steps.split_first() else {
        return (!value.is_null()).then(|| value.clone());
    };
    let next = value.get(step.key.as_str())?;
    if !step.each {
        return extract(next, rest);
    }
    match next {
        Value::Array(elements) => Some(Value::Array(
            elements
                .iter()
                .filter_map(|element| extract(element, rest))
                .collect(),
        )),
        _ => None,
    }
}

/// Where the next page is, as the key and value the model sees.
fn next_page(
    pagination: Pagination,
    items_at: &str,
    headers: &http::HeaderMap,
    body: &Value,
) -> Option<(&'static str, Value)> {
    match pagination {
        Pagination::None => None,
        Pagination::LinkHeader => headers
            .get_all(http::header::LINK)
            .iter()
            .filter_map(|value| value.to_str().ok())
            .find_map(next_link_page)
            .map(|page| ("next_page", json!(page))),
        Pagination::SlackCursor => body
            .pointer("/response_metadata/next_cursor")
            .and_then(Value::as_str)
            .filter(|cursor| !cursor.is_empty())
            .map(|cursor| ("next_cursor", json!(cursor))),
        Pagination::PageToken => body
            .get("nextPageToken")
            .and_then(Value::as_str)
            .filter(|token| !token.is_empty())
            .map(|token| ("next_cursor", json!(token))),
        Pagination::SlackPaging => {
            let paging = body.pointer(&format!("{}/paging", parent_pointer(items_at)))?;
            let page = paging.get("page")?.as_u64()?;
            let pages = paging.get("pages")?.as_u64()?;
            (page < pages).then(|| ("next_page", json!(page + 1)))
        }
    }
}

/// The JSON pointer of the object holding `items_at` (`/messages/matches` → `/messages`).
fn parent_pointer(items_at: &str) -> &str {
    items_at.rfind('/').map_or("", |at| &items_at[..at])
}

/// The `page` query parameter of the `rel="next"` link in an RFC 8288 `Link` header.
fn next_link_page(header: &str) -> Option<u64> {
    let mut rest = header;
    while let Some(open) = rest.find('<') {
        let after = &rest[open + 1..];
        let close = after.find('>')?;
        let target = &after[..close];
        let params_end = after[close + 1..]
            .find('<')
            .map_or(after.len(), |i| close + 1 + i);
        let params = &after[close + 1..params_end];
        let is_next = params.split(';').any(|param| {
            let param = param.trim().trim_end_matches(',').trim();
            param.strip_prefix("rel=").is_some_and(|rel| {
                rel.trim_matches('"')
                    .split_whitespace()
                    .any(|r| r.eq_ignore_ascii_case("next"))
            })
        });
        if is_next {
            let query = target.split_once('?')?.1;
            let query = query.split('#').next().unwrap_or(query);
            return query
                .split('&')
                .find_map(|pair| pair.strip_prefix("page="))
                .and_then(|page| page.parse().ok());
        }
        rest = &after[params_end..];
    }
    None
}

/// Cut `text` to at most `max` bytes on a character boundary; true when something was cut.
fn cut(text: &mut String, max: usize) -> bool {
    if text.len() <= max {
        return false;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text.truncate(end);
    true
}

/// A tool whose answer is text (a diff): `{"<name>": text, "size": bytes}`, the text capped.
/// `size` is the whole answer's, so a model seeing `truncated` knows how much it did not get.
fn text_result(name: &str, body: Value, max_text: usize) -> Value {
    let mut text = match body {
        Value::String(text) => text,
        // A JSON answer where text was expected: still the answer, shown as written.
        other => other.to_string(),
    };
    let mut out = Map::new();
    out.insert("size".into(), json!(text.len()));
    let truncated = cut(&mut text, max_text);
    out.insert(name.into(), Value::String(text));
    if truncated {
        out.insert("truncated".into(), json!(true));
    }
    Value::Object(out)
}

/// Replace base64 `field` with its text; binary content becomes `"binary": true` with its size.
fn decode_text(out: &mut Map<String, Value>, field: &str, source: &Value, max_text: usize) {
    let Some(Value::String(encoded)) = out.get(field) else {
        return;
    };
    if let Some(encoding) = source.get("encoding").and_then(Value::as_str) {
        if encoding != "base64" {
            out.remove(field);
            out.insert(
                "note".into(),
                json!(format!("the API did not include the content (encoding \"{encoding}\"); the file is probably too large")),
            );
            return;
        }
    }
    // GitHub wraps base64 at 60 columns.
    let compact: Vec<u8> = encoded
        .bytes()
        .filter(|b| !b.is_ascii_whitespace())
        .collect();
    let bytes = match base64::engine::general_purpose::STANDARD.decode(&compact) {
        Ok(bytes) => bytes,
        Err(_) => {
            out.remove(field);
            out.insert("note".into(), json!("the content is not valid base64"));
            return;
        }
    };
    let size = bytes.len();
    match String::from_utf8(bytes) {
        Ok(text) if !text.contains('\0') => {
            let mut text = text;
            if cut(&mut text, max_text) {
                out.insert("truncated".into(), json!(true));
            }
            out.insert(field.into(), Value::String(text));
        }
        _ => {
            out.remove(field);
            out.insert("binary".into(), json!(true));
            out.insert("size".into(), json!(size));
        }
    }
}

// ---- reading only what the projection reads -------------------------------------------------

/// The parts of a response body that a tool's projection (and its provider's error convention)
/// can look at. Building a `serde_json::Value` of a whole 200 KB list answer costs far more
/// than everything else keyward does in a call, and nearly all of it would be thrown away;
/// [`parse`] builds only these parts and skips the rest without allocating.
///
/// A node either keeps its whole value or the listed keys of an object. Arrays are transparent:
/// the node applies to each element, which is what `key[]` steps and list items need. Keeping
/// more than a projection reads changes nothing; keeping less would, so anything this cannot
/// describe exactly (an `items_at` pointer into an array) reads everything.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Reads {
    all: bool,
    keys: std::collections::HashMap<String, Reads>,
}

impl Reads {
    /// Read the whole body.
    pub fn everything() -> Reads {
        Reads {
            all: true,
            keys: Default::default(),
        }
    }

    /// What projecting `tool`'s responses reads, plus `root_keys` at the top level (kept whole:
    /// the fields of the provider's error convention, such as Slack's `ok` and `error`).
    pub fn of(tool: &Tool, root_keys: &[&str]) -> Reads {
        let projection = &tool.compiled.projection;
        let spec = &tool.response;
        let mut item = Reads::default();
        if projection.fields.is_empty() {
            item.all = true;
        } else {
            for steps in projection.fields.iter().flat_map(|r| &r.alternatives) {
                item.add(steps.iter().map(|s| s.key.as_str()));
            }
            if spec.decode_base64.is_some() {
                item.add(["encoding"]);
            }
        }
        let mut root = match spec.kind {
            // The body is the item, or an array of items (a directory listing).
            ResponseKind::Object => item,
            ResponseKind::List => {
                let mut root = Reads::default();
                for steps in projection.root_fields.iter().flat_map(|r| &r.alternatives) {
                    root.add(steps.iter().map(|s| s.key.as_str()));
                }
                let Some(keys) = pointer_keys(&projection.items_at) else {
                    return Reads::everything();
                };
                match spec.pagination {
                    Pagination::SlackCursor => root.add(["response_metadata", "next_cursor"]),
                    Pagination::PageToken => root.add(["nextPageToken"]),
                    Pagination::SlackPaging => {
                        let parent = &keys[..keys.len().saturating_sub(1)];
                        root.add(parent.iter().map(String::as_str).chain(["paging"]));
                    }
                    Pagination::None | Pagination::LinkHeader => {}
                }
                root.node(keys.iter().map(String::as_str)).merge(item);
                root
            }
        };
        for key in root_keys {
            root.add([*key]);
        }
        root
    }

    /// Only these top-level keys, each whole.
    pub fn of_keys(keys: &[&str]) -> Reads {
        let mut reads = Reads::default();
        for key in keys {
            reads.add([*key]);
        }
        reads
    }

    /// Keep the whole value at `path`.
    fn add<'a>(&mut self, path: impl IntoIterator<Item = &'a str>) {
        self.node(path).keep_all();
    }

    /// The node at `path`, created as needed (inside a node that keeps everything, a scratch
    /// node: what is put there is kept anyway).
    fn node<'a>(&mut self, path: impl IntoIterator<Item = &'a str>) -> &mut Reads {
        let mut node = self;
        for key in path {
            node = node.keys.entry(key.to_string()).or_default();
        }
        node
    }

    fn keep_all(&mut self) {
        self.all = true;
        self.keys.clear();
    }

    fn merge(&mut self, other: Reads) {
        if self.all {
            return;
        }
        if other.all {
            return self.keep_all();
        }
        for (key, child) in other.keys {
            self.keys.entry(key).or_default().merge(child);
        }
    }
}

/// The object keys of a JSON pointer (`""` → none); `None` when a token could index an array.
fn pointer_keys(pointer: &str) -> Option<Vec<String>> {
    let Some(rest) = pointer.strip_prefix('/') else {
        return pointer.is_empty().then(Vec::new);
    };
    rest.split('/')
        .map(|token| {
            let key = token.replace("~1", "/").replace("~0", "~");
            let index_like =
                key == "-" || (!key.is_empty() && key.bytes().all(|b| b.is_ascii_digit()));
            (!index_like).then_some(key)
        })
        .collect()
}

/// Parse a response body, building only what `reads` keeps (see [`Reads`]). `None` when the
/// body is not JSON, as with `serde_json::from_slice(..).ok()`.
pub fn parse(reads: &Reads, body: &[u8]) -> Option<Value> {
    use serde::de::DeserializeSeed;
    let mut de = serde_json::Deserializer::from_slice(body);
    let value = Pruned(reads).deserialize(&mut de).ok()?;
    de.end().ok()?;
    Some(value)
}

/// Deserializes a value keeping only what a [`Reads`] node keeps.
struct Pruned<'r>(&'r Reads);

impl<'de> serde::de::DeserializeSeed<'de> for Pruned<'_> {
    type Value = Value;

    fn deserialize<D: serde::Deserializer<'de>>(self, de: D) -> Result<Value, D::Error> {
        if self.0.all {
            serde::Deserialize::deserialize(de)
        } else {
            de.deserialize_any(self)
        }
    }
}

impl<'de> serde::de::Visitor<'de> for Pruned<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number))
    }

    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_string()))
    }

    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element_seed(Pruned(self.0))? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut out = Map::new();
        while let Some(key) = map.next_key_seed(Key)? {
            match self.0.keys.get(key.as_ref()) {
                Some(child) => {
                    let value = map.next_value_seed(Pruned(child))?;
                    out.insert(key.into_owned(), value);
                }
                None => {
                    map.next_value::<serde::de::IgnoredAny>()?;
                }
            }
        }
        Ok(Value::Object(out))
    }
}

/// An object key, borrowed from the body when it has no escapes.
struct Key;

impl<'de> serde::de::DeserializeSeed<'de> for Key {
    type Value = std::borrow::Cow<'de, str>;

    fn deserialize<D: serde::Deserializer<'de>>(self, de: D) -> Result<Self::Value, D::Error> {
        de.deserialize_str(self)
    }
}

impl<'de> serde::de::Visitor<'de> for Key {
    type Value = std::borrow::Cow<'de, str>;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("an object key")
    }

    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(std::borrow::Cow::Borrowed(v))
    }

    fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
        Ok(std::borrow::Cow::Owned(v.to_string()))
    }

    fn visit_string<E>(self, v: String) -> Result<Self::Value, E> {
        Ok(std::borrow::Cow::Owned(v))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::Catalog;
    use http::{HeaderMap, HeaderValue};

    fn tool(name: &str) -> Tool {
        Catalog::embedded().tool(name).unwrap().1.clone()
    }

    fn no_headers() -> HeaderMap {
        HeaderMap::new()
    }

    fn link(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(http::header::LINK, HeaderValue::from_str(value).unwrap());
        headers
    }

    // --- a realistic GitHub pull request, as GET /repos/{owner}/{repo}/pulls returns it ---

    fn api(path: &str) -> String {
        format!("https://api.github.com/{path}")
    }

    fn github_user(login: &str, id: u64) -> Value {
        let u = api(&format!("users/{login}"));
        json!({
            "login": login, "id": id, "node_id": format!("MDQ6VXNlcj{id:08}"),
            "avatar_url": format!("https://avatars.githubusercontent.com/u/{id}?v=4"),
            "gravatar_id": "", "url": u, "html_url": format!("https://github.com/{login}"),
            "followers_url": format!("{u}/followers"),
            "following_url": format!("{u}/following{{/other_user}}"),
            "gists_url": format!("{u}/gists{{/gist_id}}"),
            "starred_url": format!("{u}/starred{{/owner}}{{/repo}}"),
            "subscriptions_url": format!("{u}/subscriptions"),
            "organizations_url": format!("{u}/orgs"), "repos_url": format!("{u}/repos"),
            "events_url": format!("{u}/events{{/privacy}}"),
            "received_events_url": format!("{u}/received_events"),
            "type": "User", "user_view_type": "public", "site_admin": false
        })
    }

    fn github_repo(owner: &str, name: &str, id: u64) -> Value {
        let r = api(&format!("repos/{owner}/{name}"));
        let mut repo = json!({
            "id": id, "node_id": format!("MDEwOlJlcG9zaXRvcnk{id:08}"), "name": name,
            "full_name": format!("{owner}/{name}"), "private": false,
            "owner": github_user(owner, id + 7),
            "html_url": format!("https://github.com/{owner}/{name}"),
            "description": "A realistic repository used to measure projections", "fork": false,
            "url": r,
        });
        let templated = [
            "forks",
            "keys{/key_id}",
            "collaborators{/collaborator}",
            "teams",
            "hooks",
            "issues/events{/number}",
            "events",
            "assignees{/user}",
            "branches{/branch}",
            "tags",
            "git/blobs{/sha}",
            "git/tags{/sha}",
            "git/refs{/sha}",
            "git/trees{/sha}",
            "statuses/{sha}",
            "languages",
            "stargazers",
            "contributors",
            "subscribers",
            "subscription",
            "commits{/sha}",
            "git/commits{/sha}",
            "comments{/number}",
            "issues/comments{/number}",
            "contents/{+path}",
            "compare/{base}...{head}",
            "merges",
            "{archive_format}{/ref}",
            "downloads",
            "issues{/number}",
            "pulls{/number}",
            "milestones{/number}",
            "notifications{?since,all,participating}",
            "labels{/name}",
            "releases{/id}",
            "deployments",
        ];
        let map = repo.as_object_mut().unwrap();
        for path in templated {
            let key = path
                .split(['{', '/'])
                .find(|s| !s.is_empty())
                .unwrap_or("archive");
            map.insert(format!("{key}_url"), json!(format!("{r}/{path}")));
        }
        let extra = json!({
            "created_at": "2011-01-26T19:01:12Z", "updated_at": "2024-05-01T08:10:00Z",
            "pushed_at": "2024-05-01T08:09:00Z",
            "git_url": format!("git://github.com/{owner}/{name}.git"),
            "ssh_url": format!("git@github.com:{owner}/{name}.git"),
            "clone_url": format!("https://github.com/{owner}/{name}.git"),
            "svn_url": format!("https://github.com/{owner}/{name}"), "homepage": null,
            "size": 108, "stargazers_count": 80, "watchers_count": 80, "language": "Rust",
            "has_issues": true, "has_projects": true, "has_downloads": true, "has_wiki": true,
            "has_pages": false, "has_discussions": false, "forks_count": 9, "mirror_url": null,
            "archived": false, "disabled": false, "open_issues_count": 12, "license": {
                "key": "apache-2.0", "name": "Apache License 2.0", "spdx_id": "Apache-2.0",
                "url": api("licenses/apache-2.0"), "node_id": "MDc6TGljZW5zZTI="
            },
            "allow_forking": true, "is_template": false, "web_commit_signoff_required": false,
            "topics": ["oauth", "mcp"], "visibility": "public", "forks": 9,
            "open_issues": 12, "watchers": 80, "default_branch": "main"
        });
        map.extend(extra.as_object().unwrap().clone());
        repo
    }

    fn github_label(name: &str, id: u64) -> Value {
        json!({
            "id": id, "node_id": format!("MDU6TGFiZWw{id:08}"),
            "url": api(&format!("repos/octo-org/hello-world/labels/{name}")),
            "name": name, "color": "f29513", "default": false,
            "description": format!("Something about {name}")
        })
    }

    fn github_pull_request(number: u64) -> Value {
        let pr = api(&format!("repos/octo-org/hello-world/pulls/{number}"));
        let issue = api(&format!("repos/octo-org/hello-world/issues/{number}"));
        let html = format!("https://github.com/octo-org/hello-world/pull/{number}");
        let sha = format!("{:040x}", number * 7_919);
        let body = "This change reworks the token refresh path so that parallel tool calls \
                    share one refresh. It adds a single-flight guard per connection, persists the \
                    new record before any caller sees the token, and covers the race with a test. \
                    Fixes #12. Follow-up work is tracked in #15 and #16.\n\n- [x] tests\n- [x] docs";
        let mut pr_json = json!({
            "url": pr, "id": 1_000_000 + number, "node_id": format!("MDExOlB1bGxSZXF1ZXN0{number:06}"),
            "html_url": html, "diff_url": format!("{html}.diff"), "patch_url": format!("{html}.patch"),
            "issue_url": issue, "number": number, "state": "open", "locked": false,
            "title": format!("Share one token refresh between parallel calls (part {number})"),
            "user": github_user("octocat", 583_231),
            "body": body,
            "created_at": "2024-04-28T09:12:44Z", "updated_at": "2024-05-01T08:10:00Z",
            "closed_at": null, "merged_at": null,
            "merge_commit_sha": format!("{:040x}", number * 104_729),
            "assignee": github_user("hubot", 1),
            "assignees": [github_user("hubot", 1)],
            "requested_reviewers": [github_user("monalisa", 2)],
            "requested_teams": [{
                "id": 1, "node_id": "MDQ6VGVhbTE=", "url": api("teams/1"),
                "html_url": "https://github.com/orgs/octo-org/teams/justice-league",
                "name": "Justice League", "slug": "justice-league", "description": "A great team.",
                "privacy": "closed", "notification_setting": "notifications_enabled",
                "permission": "admin", "members_url": api("teams/1/members{/member}"),
                "repositories_url": api("teams/1/repos"), "parent": null
            }],
            "labels": [github_label("bug", 208_045_946), github_label("oauth", 208_045_947)],
            "milestone": null,
            "draft": number.is_multiple_of(3),
            "commits_url": format!("{pr}/commits"),
            "review_comments_url": format!("{pr}/comments"),
            "review_comment_url": api("repos/octo-org/hello-world/pulls/comments{/number}"),
            "comments_url": format!("{issue}/comments"),
            "statuses_url": api(&format!("repos/octo-org/hello-world/statuses/{sha}")),
            "author_association": "CONTRIBUTOR", "auto_merge": null, "active_lock_reason": null
        });
        let fields = pr_json.as_object_mut().unwrap();
        fields.insert(
            "head".into(),
            json!({
                "label": "octocat:refresh-single-flight", "ref": "refresh-single-flight",
                "sha": sha, "user": github_user("octocat", 583_231),
                "repo": github_repo("octocat", "hello-world", 1_296_269)
            }),
        );
        fields.insert(
            "base".into(),
            json!({
                "label": "octo-org:main", "ref": "main",
                "sha": format!("{:040x}", 6_700_417u64), "user": github_user("octo-org", 9_919),
                "repo": github_repo("octo-org", "hello-world", 1_296_270)
            }),
        );
        let statuses = api(&format!("repos/octo-org/hello-world/statuses/{sha}"));
        fields.insert("_links".into(), json!({
            "self": {"href": pr}, "html": {"href": html}, "issue": {"href": issue},
            "comments": {"href": format!("{issue}/comments")},
            "review_comments": {"href": format!("{pr}/comments")},
            "review_comment": {"href": api("repos/octo-org/hello-world/pulls/comments{/number}")},
            "commits": {"href": format!("{pr}/commits")},
            "statuses": {"href": statuses}
        }));
        pr_json
    }

    #[test]
    fn pull_request_list_projection_is_small_and_keeps_what_matters() {
        let one = serde_json::to_vec(&github_pull_request(1)).unwrap().len();
        assert!(
            (15_000..=26_000).contains(&one),
            "fixture should be a realistic ~20 KB, is {one}"
        );
        let raw = Value::Array((1..=10).map(github_pull_request).collect());
        let raw_bytes = serde_json::to_vec(&raw).unwrap().len();
        let headers = link(
            "<https://api.github.com/repositories/1296269/pulls?per_page=10&page=3>; rel=\"next\", \
             <https://api.github.com/repositories/1296269/pulls?per_page=10&page=9>; rel=\"last\"",
        );

        let projected = project(&tool("github_list_pull_requests"), &headers, raw);
        let projected_bytes = serde_json::to_vec(&projected).unwrap().len();
        let ratio = projected_bytes as f64 / raw_bytes as f64;
        println!(
            "10 pull requests: {raw_bytes} bytes raw, {projected_bytes} projected ({:.1}%)",
            ratio * 100.0
        );
        assert!(
            ratio <= 0.15,
            "projection is {:.1}% of the raw bytes",
            ratio * 100.0
        );

        assert_eq!(projected["count"], 10);
        assert_eq!(projected["next_page"], 3);
        let first = &projected["items"][2];
        assert_eq!(
            first,
            &json!({
                "number": 3,
                "title": "Share one token refresh between parallel calls (part 3)",
                "state": "open",
                "draft": true,
                "author": "octocat",
                "head": "refresh-single-flight",
                "base": "main",
                "labels": ["bug", "oauth"],
                "created_at": "2024-04-28T09:12:44Z",
                "updated_at": "2024-05-01T08:10:00Z",
                "html_url": "https://github.com/octo-org/hello-world/pull/3",
            })
        );
    }

    #[test]
    fn merged_and_closed_timestamps_are_kept_and_nulls_dropped() {
        let mut pr = github_pull_request(4);
        pr["state"] = json!("closed");
        pr["closed_at"] = json!("2024-05-02T10:00:00Z");
        pr["merged_at"] = json!("2024-05-02T10:00:00Z");
        let projected = project(
            &tool("github_list_pull_requests"),
            &no_headers(),
            json!([pr]),
        );
        let item = &projected["items"][0];
        assert_eq!(item["closed_at"], "2024-05-02T10:00:00Z");
        assert_eq!(item["merged_at"], "2024-05-02T10:00:00Z");
        assert!(
            projected.get("next_page").is_none(),
            "no Link header, no next page"
        );

        let open = project(
            &tool("github_list_pull_requests"),
            &no_headers(),
            json!([github_pull_request(5)]),
        );
        let keys: Vec<&String> = open["items"][0].as_object().unwrap().keys().collect();
        assert!(
            !keys.iter().any(|k| *k == "closed_at" || *k == "merged_at"),
            "{keys:?}"
        );
    }

    #[test]
    fn link_header_parsing_finds_the_next_page_only() {
        assert_eq!(
            next_link_page("<https://x/y?page=2&per_page=5>; rel=\"next\""),
            Some(2)
        );
        assert_eq!(
            next_link_page("<https://x/y?per_page=5&page=7>; rel=next"),
            Some(7)
        );
        assert_eq!(
            next_link_page(
                "<https://x/y?page=1>; rel=\"prev\", <https://x/y?page=3>; rel=\"next\""
            ),
            Some(3)
        );
        assert_eq!(
            next_link_page(
                "<https://x/y?page=1>; rel=\"first\", <https://x/y?page=4>; rel=\"last\""
            ),
            None
        );
        assert_eq!(
            next_link_page("<https://x/y?after=abc>; rel=\"next\""),
            None
        );
        assert_eq!(next_link_page("garbage"), None);
    }

    #[test]
    fn single_pull_request_object_keeps_body_and_flattens_people() {
        let mut pr = github_pull_request(7);
        pr["merged_by"] = github_user("monalisa", 2);
        pr["merged"] = json!(true);
        let projected = project(&tool("github_get_pull_request"), &no_headers(), pr);
        assert_eq!(projected["number"], 7);
        assert_eq!(projected["merged_by"], "monalisa");
        assert_eq!(projected["requested_reviewers"], json!(["monalisa"]));
        assert_eq!(projected["assignees"], json!(["hubot"]));
        assert!(projected["body"]
            .as_str()
            .unwrap()
            .contains("single-flight"));
        assert!(projected.get("_links").is_none() && projected.get("user").is_none());
    }

    fn base64_wrapped(bytes: &[u8]) -> String {
        let encoded = base64::engine::general_purpose::STANDARD.encode(bytes);
        encoded
            .as_bytes()
            .chunks(60)
            .map(|c| std::str::from_utf8(c).unwrap())
            .collect::<Vec<_>>()
            .join("\n")
            + "\n"
    }

    fn github_file(path: &str, bytes: &[u8]) -> Value {
        json!({
            "type": "file", "encoding": "base64", "size": bytes.len(),
            "name": path.rsplit('/').next().unwrap(), "path": path,
            "content": base64_wrapped(bytes), "sha": "3d21ec53a331a6f037a91c368710b99387d012c1",
            "url": api(&format!("repos/o/r/contents/{path}")),
            "git_url": api("repos/o/r/git/blobs/3d21ec53a331a6f037a91c368710b99387d012c1"),
            "html_url": format!("https://github.com/o/r/blob/main/{path}"),
            "download_url": format!("https://raw.githubusercontent.com/o/r/main/{path}"),
            "_links": { "self": "…", "git": "…", "html": "…" }
        })
    }

    #[test]
    fn file_contents_are_decoded_from_wrapped_base64() {
        let text = "fn main() {\n    println!(\"héllo\");\n}\n".repeat(20);
        let projected = project(
            &tool("github_get_file_contents"),
            &no_headers(),
            github_file("src/main.rs", text.as_bytes()),
        );
        assert_eq!(
            projected,
            json!({ "name": "main.rs", "path": "src/main.rs", "type": "file", "size": text.len(), "content": text })
        );
    }

    #[test]
    fn binary_files_report_their_size_instead_of_text() {
        let png = [
            0x89, b'P', b'N', b'G', 0x0d, 0x0a, 0x1a, 0x0a, 0x00, 0xff, 0xfe,
        ];
        let projected = project(
            &tool("github_get_file_contents"),
            &no_headers(),
            github_file("logo.png", &png),
        );
        assert_eq!(projected["binary"], true);
        assert_eq!(projected["size"], png.len());
        assert!(projected.get("content").is_none());
    }

    #[test]
    fn long_files_are_cut_on_a_character_boundary() {
        let mut spec = tool("github_get_file_contents").spec().clone();
        spec.response.max_text_bytes = 5;
        let spec = Tool::compile(spec).unwrap();
        let projected = project(
            &spec,
            &no_headers(),
            github_file("a.txt", "abcdé€".as_bytes()),
        );
        assert_eq!(projected["content"], "abcd");
        assert_eq!(projected["truncated"], true);
    }

    #[test]
    fn capped_text_fields_are_cut_and_their_object_marked() {
        let mut spec = tool("github_get_commit").spec().clone();
        spec.response.max_text_bytes = 5;
        let spec = Tool::compile(spec).unwrap();
        let body = json!({"sha": "abc", "files": [
            {"filename": "a.rs", "patch": "+abcdé€"},
            {"filename": "b.rs", "patch": "+ab"},
        ]});
        let projected = project(&spec, &no_headers(), body);
        assert_eq!(projected["sha"], "abc");
        assert_eq!(projected["items"][0]["patch"], "+abcd");
        assert_eq!(projected["items"][0]["truncated"], true);
        assert_eq!(projected["items"][1]["patch"], "+ab");
        assert!(projected["items"][1].get("truncated").is_none());
    }

    #[test]
    fn a_text_body_is_returned_capped_with_its_whole_size() {
        let mut spec = tool("github_get_pull_request_diff").spec().clone();
        spec.response.max_text_bytes = 4;
        let spec = Tool::compile(spec).unwrap();
        let projected = project(&spec, &no_headers(), json!("diff --git"));
        assert_eq!(
            projected,
            json!({"size": 10, "diff": "diff", "truncated": true})
        );
        let whole = project(
            &tool("github_get_pull_request_diff"),
            &no_headers(),
            json!("+a"),
        );
        assert_eq!(whole, json!({"size": 2, "diff": "+a"}));
    }

    #[test]
    fn files_too_large_for_the_api_say_so() {
        let mut file = github_file("big.bin", b"");
        file["encoding"] = json!("none");
        file["content"] = json!("");
        let projected = project(&tool("github_get_file_contents"), &no_headers(), file);
        assert!(projected.get("content").is_none());
        assert!(projected["note"].as_str().unwrap().contains("too large"));
    }

    #[test]
    fn directory_listings_become_names_and_types() {
        let listing = json!([
            { "type": "dir", "name": "src", "path": "src", "size": 0, "sha": "a", "url": "…", "_links": {} },
            { "type": "file", "name": "README.md", "path": "README.md", "size": 120, "sha": "b", "download_url": "…" }
        ]);
        let projected = project(&tool("github_get_file_contents"), &no_headers(), listing);
        assert_eq!(
            projected,
            json!({
                "count": 2,
                "items": [
                    { "name": "src", "path": "src", "type": "dir", "size": 0 },
                    { "name": "README.md", "path": "README.md", "type": "file", "size": 120 }
                ]
            })
        );
    }

    #[test]
    fn slack_cursor_is_reported_only_when_there_is_a_next_page() {
        let page = |cursor: &str| {
            json!({
                "ok": true,
                "messages": [
                    { "type": "message", "user": "U1", "text": "ship it", "ts": "1712345678.000100",
                      "thread_ts": "1712345678.000100", "reply_count": 2, "blocks": [{"type": "rich_text"}],
                      "team": "T1", "client_msg_id": "x" },
                    { "type": "message", "user": "U2", "text": "done", "ts": "1712345600.000200" }
                ],
                "has_more": !cursor.is_empty(),
                "response_metadata": { "next_cursor": cursor }
            })
        };
        let read = tool("slack_read_channel");
        let projected = project(&read, &no_headers(), page("bmV4dF90czoxNzEy"));
        assert_eq!(projected["next_cursor"], "bmV4dF90czoxNzEy");
        assert_eq!(
            projected["items"][0],
            json!({ "ts": "1712345678.000100", "user": "U1", "text": "ship it", "thread_ts": "1712345678.000100", "reply_count": 2 })
        );
        let last = project(&read, &no_headers(), page(""));
        assert!(last.get("next_cursor").is_none(), "{last}");
        assert_eq!(last["count"], 2);
    }

    #[test]
    fn slack_search_keeps_paging_from_the_root() {
        let body = json!({
            "ok": true, "query": "deploy",
            "messages": {
                "total": 42, "paging": { "count": 20, "total": 42, "page": 1, "pages": 3 },
                "matches": [{ "ts": "1.2", "user": "U1", "username": "ana", "text": "deploy done",
                              "channel": { "id": "C1", "name": "ops", "is_private": false },
                              "permalink": "https://x.slack.com/archives/C1/p12", "iid": "z" }]
            }
        });
        let projected = project(&tool("slack_search_messages"), &no_headers(), body);
        assert_eq!(projected["total"], 42);
        assert_eq!(projected["next_page"], 2);
        // The channel's id (what follow-up tools take); the permalink is left to
        // slack_get_permalink.
        assert_eq!(projected["items"][0]["channel"], "C1");
        assert!(projected["items"][0].get("permalink").is_none());
    }

    #[test]
    fn calendar_events_flatten_times_with_all_day_fallback() {
        let body = json!({
            "kind": "calendar#events", "summary": "me@example.com", "timeZone": "Europe/Paris",
            "nextPageToken": "CigKGjVhN",
            "items": [
                { "kind": "calendar#event", "etag": "\"1\"", "id": "ev1", "status": "confirmed",
                  "htmlLink": "https://www.google.com/calendar/event?eid=ZXYx", "summary": "Standup",
                  "start": { "dateTime": "2024-05-01T09:00:00+02:00", "timeZone": "Europe/Paris" },
                  "end": { "dateTime": "2024-05-01T09:15:00+02:00", "timeZone": "Europe/Paris" },
                  "attendees": [{ "email": "a@example.com", "responseStatus": "accepted" }, { "email": "b@example.com" }],
                  "reminders": { "useDefault": true }, "iCalUID": "ev1@google.com", "sequence": 0 },
                { "id": "ev2", "status": "confirmed", "summary": "Holiday",
                  "htmlLink": "https://www.google.com/calendar/event?eid=ZXYy",
                  "start": { "date": "2024-05-08" }, "end": { "date": "2024-05-09" } }
            ]
        });
        let projected = project(&tool("calendar_list_events"), &no_headers(), body);
        assert_eq!(projected["next_cursor"], "CigKGjVhN");
        assert_eq!(projected["time_zone"], "Europe/Paris");
        assert_eq!(
            projected["items"][0],
            json!({
                "id": "ev1", "summary": "Standup", "start": "2024-05-01T09:00:00+02:00",
                "end": "2024-05-01T09:15:00+02:00",
                "html_link": "https://www.google.com/calendar/event?eid=ZXYx"
            })
        );
        assert_eq!(projected["items"][1]["start"], "2024-05-08");
    }

    #[test]
    fn empty_bodies_become_the_declared_empty_result() {
        assert_eq!(
            project(&tool("calendar_delete_event"), &no_headers(), Value::Null),
            json!({ "deleted": true })
        );
        assert_eq!(
            project(&tool("github_get_me"), &no_headers(), Value::Null),
            json!({})
        );
    }

    /// Every body the tests above project, and a few odd ones.
    fn sample_bodies() -> Vec<Value> {
        let mut file = github_file("big.bin", b"");
        file["encoding"] = json!("none");
        vec![
            Value::Array((1..=3).map(github_pull_request).collect()),
            github_pull_request(7),
            github_file("src/main.rs", b"fn main() {}\n"),
            file,
            json!([{ "type": "dir", "name": "src", "path": "src", "size": 0, "_links": {} }]),
            json!({ "ok": true, "channels": [{ "id": "C1", "name": "general", "topic": { "value": "t", "creator": "U1" },
                    "purpose": { "value": "p" }, "num_members": 3, "is_private": false, "previous_names": ["x"] }],
                    "response_metadata": { "next_cursor": "abc", "other": 1 } }),
            json!({ "ok": false, "error": "missing_scope", "needed": "channels:read", "provided": "chat:write", "warning": "w" }),
            json!({ "ok": true, "query": "q", "messages": { "total": 2, "paging": { "page": 1, "pages": 1, "count": 20 },
                    "matches": [{ "ts": "1.2", "text": "hi", "channel": { "id": "C1", "name": "ops" }, "iid": "z" }] } }),
            json!({ "timeZone": "UTC", "nextPageToken": "n", "items": [{ "id": "e", "summary": "s",
                    "start": { "date": "2024-05-08" }, "end": { "dateTime": "2024-05-09T00:00:00Z" },
                    "attendees": [{ "email": "a@example.com", "self": true }], "etag": "x" }] }),
            json!({ "calendars": { "primary": { "busy": [{ "start": "a", "end": "b" }] } }, "timeMin": "a", "kind": "k" }),
            json!({ "login": "octo", "id": 1, "name": null, "plan": { "name": "pro" } }),
            json!([1, "two", null, [3.5, -4], { "a": { "b": [] } }]),
            json!({ "message": "Not Found", "documentation_url": "https://docs" }),
            json!("text"),
            Value::Null,
        ]
    }

    #[test]
    fn reading_only_what_a_projection_reads_projects_the_same() {
        let catalog = Catalog::embedded();
        for (provider, tool) in catalog.tools() {
            let convention = provider.answer_fields();
            let reads = Reads::of(tool, &convention);
            for body in sample_bodies() {
                let bytes = serde_json::to_vec(&body).unwrap();
                let pruned = parse(&reads, &bytes).expect("JSON");
                for key in &convention {
                    assert_eq!(pruned.get(key), body.get(key), "{}: {key}", tool.name);
                }
                for headers in [
                    no_headers(),
                    link(r#"<https://api.github.com/x?page=2>; rel="next""#),
                ] {
                    assert_eq!(
                        project(tool, &headers, pruned.clone()),
                        project(tool, &headers, body.clone()),
                        "{} on {body}",
                        tool.name
                    );
                }
            }
        }
    }

    #[test]
    fn a_pull_request_list_is_read_without_its_nested_repositories() {
        let reads = Reads::of(&tool("github_list_pull_requests"), &[]);
        let body = Value::Array((1..=10).map(github_pull_request).collect());
        let bytes = serde_json::to_vec(&body).unwrap();
        let pruned = parse(&reads, &bytes).unwrap();
        assert!(pruned[0]
            .get("head")
            .is_none_or(|head| head.get("repo").is_none()));
        assert!(pruned[0].get("_links").is_none());
        assert!(serde_json::to_vec(&pruned).unwrap().len() * 5 < bytes.len());
        assert_eq!(
            parse(&reads, b"[1, 2"),
            None,
            "not JSON is None, as with from_slice"
        );
        assert_eq!(parse(&reads, b"{} x"), None);
        assert_eq!(parse(&Reads::everything(), &bytes), Some(body));
    }

    #[test]
    fn items_at_pointers_into_arrays_read_everything() {
        let with_items_at = |pointer: &str| {
            let mut spec = tool("slack_list_channels").spec().clone();
            spec.response.items_at = pointer.into();
            Tool::compile(spec).unwrap()
        };
        assert_eq!(
            Reads::of(&with_items_at("/channels/0/members"), &[]),
            Reads::everything()
        );
        let reads = Reads::of(&with_items_at("/a~1b/c~0d"), &[]);
        let body = json!({ "a/b": { "c~d": [{ "id": "C1", "junk": 1 }] }, "x": 1 });
        let pruned = parse(&reads, &serde_json::to_vec(&body).unwrap()).unwrap();
        assert_eq!(pruned, json!({ "a/b": { "c~d": [{ "id": "C1" }] } }));
    }

    #[test]
    fn missing_list_becomes_an_empty_list() {
        let projected = project(
            &tool("slack_list_channels"),
            &no_headers(),
            json!({ "ok": true }),
        );
        assert_eq!(projected, json!({ "count": 0, "items": [] }));
    }
}
