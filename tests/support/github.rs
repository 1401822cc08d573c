//! The GitHub REST API under `/github`.
//!
//! Special repository names: `private-repo` (404 like a private repository you cannot see),
//! `needs-scope` (403 "Resource not accessible by integration" with scope headers), `moved`
//! (302 to the other host), `renamed` (301 to `hello-world` on the same host), `ratelimited`
//! (403 rate limit, `Retry-After: 1`), `ratelimited-429` (429, `Retry-After: 1`), `empty` (no
//! pull requests, issues or files), `seen-by` (every issue number exists; its title and author
//! name the login of the token that read it, see `SharedState::grant_github_as`).

#![allow(clippy::result_large_err)]

/// The routes of the tools issue 16 added (commits, branches, pull request files, diffs,
/// reviews and merges, issue updates, the user's repositories, repository and code search,
/// Actions runs).
mod more;

use axum::body::Bytes;
use axum::response::Response;
use base64::Engine;
use serde_json::{json, Value};

use super::github_data::{self as gd, IssueMeta};
use super::oauth::TokenStatus;
use super::{
    bytes_response, json_response, lock, now_unix, set_header, Provider, Req, SharedState,
    GITHUB_LOGIN,
};

const DOCS: &str = "https://docs.github.com/rest";

fn gh_error(status: u16, message: &str, doc: &str) -> Response {
    json_response(
        status,
        &json!({ "message": message, "documentation_url": doc, "status": status.to_string() }),
    )
}

fn not_found(doc: &str) -> Response {
    gh_error(404, "Not Found", doc)
}

fn bad_credentials() -> Response {
    gh_error(401, "Bad credentials", DOCS)
}

fn requires_auth(doc: &str) -> Response {
    gh_error(401, "Requires authentication", doc)
}

fn validation_failed(doc: &str, errors: Value) -> Response {
    json_response(
        422,
        &json!({ "message": "Validation Failed", "errors": errors, "documentation_url": doc, "status": "422" }),
    )
}

fn rate_limited(status: u16) -> Response {
    let mut resp = gh_error(
        status,
        "API rate limit exceeded for user ID 583231. If you reach out to GitHub Support for help, please include the request ID 0A1B:2C3D:4E5F:6071:8293.",
        "https://docs.github.com/rest/overview/rate-limits-for-the-rest-api",
    );
    set_header(&mut resp, "retry-after", "1");
    set_header(&mut resp, "x-ratelimit-limit", "5000");
    set_header(&mut resp, "x-ratelimit-remaining", "0");
    set_header(&mut resp, "x-ratelimit-used", "5000");
    set_header(
        &mut resp,
        "x-ratelimit-reset",
        &(now_unix() + 1).to_string(),
    );
    set_header(&mut resp, "x-ratelimit-resource", "core");
    resp
}

/// The answer to an injected API failure.
pub(crate) fn failure(status: u16) -> Response {
    match status {
        403 | 429 => rate_limited(status),
        502 => gh_error(502, "Server Error", DOCS),
        503 => gh_error(503, "Service Unavailable", DOCS),
        504 => gh_error(
            504,
            "We couldn't respond to your request in time. Sorry about that. Please try resubmitting your request and contact us if the problem persists.",
            DOCS,
        ),
        s if s >= 500 => gh_error(s, "Server Error", DOCS),
        s => gh_error(s, "Request failed", DOCS),
    }
}

struct Ctx<'a> {
    st: &'a SharedState,
    r: &'a Req,
    api: String,
    /// `None` for anonymous requests.
    scopes: Option<Vec<String>>,
    /// The account the token belongs to.
    login: String,
}

impl Ctx<'_> {
    fn has_scope(&self, any: &[&str]) -> bool {
        self.scopes
            .as_ref()
            .is_some_and(|s| s.iter().any(|have| any.contains(&have.as_str())))
    }

    /// Writes need `repo` or `public_repo`; GitHub hides what a token may not write with 404.
    fn require_write(&self, doc: &str) -> Option<Response> {
        if self.scopes.is_none() {
            return Some(requires_auth(doc));
        }
        if !self.has_scope(&["repo", "public_repo"]) {
            return Some(not_found(doc));
        }
        None
    }
}

pub(crate) fn handle(st: &SharedState, r: &Req, segs: &[String]) -> Response {
    let scopes = match (r.bearer(true), r.header("authorization")) {
        (None, Some(_)) => return finish(st, bad_credentials(), None, ""),
        (None, None) => None,
        (Some(token), _) => match st.check_token(Provider::Github, token) {
            TokenStatus::Valid { scopes, .. } => Some(scopes),
            _ => return finish(st, bad_credentials(), None, ""),
        },
    };
    let login = r
        .bearer(true)
        .and_then(|token| lock(&st.github_logins).get(token).cloned())
        .unwrap_or_else(|| GITHUB_LOGIN.to_string());
    let ctx = Ctx {
        st,
        r,
        api: st.github_api_base(),
        scopes,
        login,
    };
    let s: Vec<&str> = segs.iter().map(String::as_str).collect();
    let (resp, accepted) = match (r.method.as_str(), s.as_slice()) {
        ("GET", ["user"]) => (get_user(&ctx), ""),
        ("GET", ["search", "issues"]) => (search_issues(&ctx), "repo"),
        ("GET", ["search", "repositories"]) => (more::search_repositories(&ctx), ""),
        ("GET", ["search", "code"]) => (more::search_code(&ctx), ""),
        ("GET", ["user", "repos"]) => (more::list_user_repos(&ctx), ""),
        (_, ["repos", owner, repo, rest @ ..]) => (repo_route(&ctx, owner, repo, rest), "repo"),
        _ => (not_found(DOCS), ""),
    };
    finish(st, resp, ctx.scopes.as_deref(), accepted)
}

/// Headers GitHub puts on every API answer (kept when a handler set its own).
fn finish(
    st: &SharedState,
    mut resp: Response,
    scopes: Option<&[String]>,
    accepted: &str,
) -> Response {
    let n = st.next_seq();
    let limit: u64 = if scopes.is_some() { 5000 } else { 60 };
    let used = n % limit;
    let defaults = [
        ("x-github-media-type", "github.v3; format=json".to_string()),
        ("x-github-api-version-selected", "2022-11-28".to_string()),
        ("x-ratelimit-limit", limit.to_string()),
        ("x-ratelimit-remaining", (limit - used).to_string()),
        ("x-ratelimit-reset", (now_unix() + 3600).to_string()),
        ("x-ratelimit-used", used.to_string()),
        ("x-ratelimit-resource", "core".to_string()),
        (
            "x-github-request-id",
            format!("0A1B:{n:X}:2C3D:4E5F:{n:08X}"),
        ),
    ];
    for (name, value) in defaults {
        if !resp.headers().contains_key(name) {
            set_header(&mut resp, name, &value);
        }
    }
    if let Some(scopes) = scopes {
        if !resp.headers().contains_key("x-oauth-scopes") {
            set_header(&mut resp, "x-oauth-scopes", &scopes.join(", "));
        }
        if !resp.headers().contains_key("x-accepted-oauth-scopes") {
            set_header(&mut resp, "x-accepted-oauth-scopes", accepted);
        }
    }
    resp
}

fn get_user(ctx: &Ctx) -> Response {
    let doc = "https://docs.github.com/rest/users/users#get-the-authenticated-user";
    if ctx.scopes.is_none() {
        return requires_auth(doc);
    }
    let private = ctx.has_scope(&["user", "read:user"]);
    let mut user = gd::authenticated_user(&ctx.api, private);
    user["login"] = json!(ctx.login);
    json_response(200, &user)
}

fn repo_route(ctx: &Ctx, owner: &str, repo: &str, rest: &[&str]) -> Response {
    let r = ctx.r;
    let query_suffix = r
        .raw_query
        .as_deref()
        .map(|q| format!("?{q}"))
        .unwrap_or_default();
    let after_prefix = r.path.strip_prefix("/github").unwrap_or(&r.path);
    match repo {
        "private-repo" => return not_found(DOCS),
        "seen-by" => return seen_by(ctx, owner, rest),
        "needs-scope" => {
            let mut resp = gh_error(
                403,
                "Resource not accessible by integration",
                "https://docs.github.com/rest/pulls/pulls#list-pull-requests",
            );
            set_header(&mut resp, "x-oauth-scopes", "read:user");
            set_header(&mut resp, "x-accepted-oauth-scopes", "repo");
            return resp;
        }
        "moved" => {
            let location = format!(
                "{}/steal{after_prefix}{query_suffix}",
                ctx.st.steal_base_url()
            );
            let mut resp = json_response(
                302,
                &json!({ "message": "Moved Permanently", "url": location, "documentation_url": DOCS }),
            );
            set_header(&mut resp, "location", &location);
            return resp;
        }
        "renamed" => {
            let new_path = after_prefix.replacen(
                &format!("/{owner}/renamed"),
                &format!("/{owner}/hello-world"),
                1,
            );
            let location = format!("{}{new_path}{query_suffix}", ctx.api);
            let mut resp = json_response(
                301,
                &json!({ "message": "Moved Permanently", "url": location, "documentation_url": DOCS }),
            );
            set_header(&mut resp, "location", &location);
            return resp;
        }
        "ratelimited" => return rate_limited(403),
        "ratelimited-429" => return rate_limited(429),
        _ => {}
    }
    match (r.method.as_str(), rest) {
        ("GET", []) => json_response(200, &gd::repository(&ctx.api, owner, repo)),
        ("GET", ["pulls"]) => list_pulls(ctx, owner, repo),
        ("GET", ["pulls", n]) if more::wants_diff(r) => more::pull_diff(ctx, owner, repo, n),
        ("GET", ["pulls", n]) => get_pull(ctx, owner, repo, n),
        ("POST", ["pulls"]) => more::create_pull(ctx, owner, repo),
        ("GET", ["pulls", n, "files"]) => more::pull_files(ctx, owner, repo, n),
        ("GET", ["pulls", n, "reviews"]) => more::list_reviews(ctx, owner, repo, n),
        ("POST", ["pulls", n, "reviews"]) => more::create_review(ctx, owner, repo, n),
        ("GET", ["pulls", n, "comments"]) => more::review_comments(ctx, owner, repo, n),
        ("PUT", ["pulls", n, "merge"]) => more::merge_pull(ctx, owner, repo, n),
        ("GET", ["issues"]) => list_issues(ctx, owner, repo),
        ("GET", ["issues", n]) => get_issue(ctx, owner, repo, n),
        ("PATCH", ["issues", n]) => more::update_issue(ctx, owner, repo, n),
        ("POST", ["issues"]) => create_issue(ctx, owner, repo),
        ("POST", ["issues", n, "comments"]) => add_comment(ctx, owner, repo, n),
        ("GET", ["contents", path @ ..]) => contents(ctx, owner, repo, path),
        ("GET", ["commits"]) => more::list_commits(ctx, owner, repo),
        ("GET", ["commits", git_ref]) => more::get_commit(ctx, owner, repo, git_ref),
        ("GET", ["branches"]) => more::list_branches(ctx, owner, repo),
        ("GET", ["actions", "runs"]) => more::list_runs(ctx, owner, repo),
        _ => not_found(DOCS),
    }
}

// ----- pagination ---------------------------------------------------------------------------

struct Page {
    page: usize,
    per_page: usize,
    start: usize,
    end: usize,
    last: usize,
}

fn paginate(r: &Req, total: usize) -> Page {
    paginate_sized(r, total, 30, 100)
}

/// [`paginate`] with another default and largest page (a commit's files: 300 and 300).
fn paginate_sized(r: &Req, total: usize, default: usize, max: usize) -> Page {
    let per_page = r
        .query_get("per_page")
        .and_then(|v| v.parse::<usize>().ok())
        .filter(|&v| v > 0)
        .unwrap_or(default)
        .min(max);
    let page = r
        .query_get("page")
        .and_then(|v| v.parse::<usize>().ok())
        .filter(|&v| v > 0)
        .unwrap_or(1);
    let start = ((page - 1) * per_page).min(total);
    let end = (start + per_page).min(total);
    let last = total.div_ceil(per_page).max(1);
    Page {
        page,
        per_page,
        start,
        end,
        last,
    }
}

/// RFC 8288 `Link` with next/last (and prev/first past page 1), like GitHub's.
fn link_header(ctx: &Ctx, p: &Page) -> Option<String> {
    if p.last <= 1 && p.page <= 1 {
        return None;
    }
    let path = ctx.r.path.strip_prefix("/github").unwrap_or(&ctx.r.path);
    let url_for = |page: usize| {
        let mut ser = url::form_urlencoded::Serializer::new(String::new());
        let mut saw_page = false;
        for (k, v) in &ctx.r.query {
            if k == "page" {
                saw_page = true;
                ser.append_pair("page", &page.to_string());
            } else {
                ser.append_pair(k, v);
            }
        }
        if !saw_page {
            ser.append_pair("page", &page.to_string());
        }
        format!("<{}{path}?{}>", ctx.api, ser.finish())
    };
    let mut parts = Vec::new();
    if p.page > 1 {
        parts.push(format!(
            "{}; rel=\"prev\"",
            url_for((p.page - 1).min(p.last))
        ));
    }
    if p.page < p.last {
        parts.push(format!("{}; rel=\"next\"", url_for(p.page + 1)));
        parts.push(format!("{}; rel=\"last\"", url_for(p.last)));
    }
    if p.page > 1 {
        parts.push(format!("{}; rel=\"first\"", url_for(1)));
    }
    (!parts.is_empty()).then(|| parts.join(", "))
}

fn with_link(ctx: &Ctx, mut resp: Response, p: &Page) -> Response {
    if let Some(link) = link_header(ctx, p) {
        set_header(&mut resp, "link", &link);
    }
    resp
}

fn json_bytes(status: u16, bytes: Bytes) -> Response {
    bytes_response(status, "application/json; charset=utf-8", bytes)
}

// ----- pull requests --------------------------------------------------------------------------

fn extra_comments(ctx: &Ctx, owner: &str, repo: &str, n: u64) -> u64 {
    lock(&ctx.st.data)
        .github
        .extra_comments
        .get(&(owner.to_string(), repo.to_string(), n))
        .copied()
        .unwrap_or(0)
}

fn state_filter(ctx: &Ctx, doc: &str) -> Result<&'static str, Response> {
    match ctx.r.query_get("state").unwrap_or("open") {
        "open" => Ok("open"),
        "closed" => Ok("closed"),
        "all" => Ok("all"),
        other => Err(validation_failed(
            doc,
            json!([{ "resource": "Issue", "field": "state", "code": "invalid", "value": other }]),
        )),
    }
}

fn list_pulls(ctx: &Ctx, owner: &str, repo: &str) -> Response {
    let doc = "https://docs.github.com/rest/pulls/pulls#list-pull-requests";
    let state = match state_filter(ctx, doc) {
        Ok(s) => s,
        Err(resp) => return resp,
    };
    let base = ctx.r.query_get("base").filter(|b| !b.is_empty());
    let asc = ctx.r.query_get("direction") == Some("asc");
    if touched(ctx, owner, repo) {
        return more::list_pulls_changed(ctx, owner, repo, state, base, asc);
    }
    let mut numbers: Vec<u64> = (1..=gd::LAST_PR)
        .filter(|&n| {
            gd::pull_brief(repo, n).is_some_and(|(s, b)| {
                (state == "all" || s == state) && base.is_none_or(|want| b == want)
            })
        })
        .collect();
    if !asc {
        numbers.reverse();
    }
    let page = paginate(ctx.r, numbers.len());
    let key = format!(
        "pulls|{owner}|{repo}|{state}|{}|{asc}|{}|{}",
        base.unwrap_or(""),
        page.start,
        page.end
    );
    let cached = lock(&ctx.st.cache).get(&key).cloned();
    let bytes = cached.unwrap_or_else(|| {
        let items: Vec<Value> = numbers[page.start..page.end]
            .iter()
            .filter_map(|&n| gd::fixed_issue(owner, repo, n))
            .map(|m| gd::pull_json(&ctx.api, owner, repo, &m, false, 0))
            .collect();
        let bytes = Bytes::from(serde_json::to_vec(&items).unwrap_or_default());
        let mut cache = lock(&ctx.st.cache);
        if cache.len() > 4096 {
            cache.clear();
        }
        cache.insert(key, bytes.clone());
        bytes
    });
    with_link(ctx, json_bytes(200, bytes), &page)
}

fn get_pull(ctx: &Ctx, owner: &str, repo: &str, n: &str) -> Response {
    let doc = "https://docs.github.com/rest/pulls/pulls#get-a-pull-request";
    let Ok(n) = n.parse::<u64>() else {
        return not_found(doc);
    };
    let Some(meta) = find_issue(ctx, owner, repo, n).filter(|m| m.pull.is_some()) else {
        return not_found(doc);
    };
    let extra = extra_comments(ctx, owner, repo, n);
    let generation = lock(&ctx.st.data).github.generation;
    let key = format!("pull|{owner}|{repo}|{n}|{extra}|{generation}");
    let cached = lock(&ctx.st.cache).get(&key).cloned();
    let bytes = cached.unwrap_or_else(|| {
        let v = gd::pull_json(&ctx.api, owner, repo, &meta, true, extra);
        let bytes = Bytes::from(serde_json::to_vec(&v).unwrap_or_default());
        lock(&ctx.st.cache).insert(key, bytes.clone());
        bytes
    });
    json_bytes(200, bytes)
}

// ----- issues ---------------------------------------------------------------------------------

/// Whether anything of the repository was changed through the API (see `GithubData`).
fn touched(ctx: &Ctx, owner: &str, repo: &str) -> bool {
    lock(&ctx.st.data)
        .github
        .touched
        .contains(&(owner.to_string(), repo.to_string()))
}

/// Every issue and pull request of a repository as it is now: the fixed ones (with the
/// changes made to them) and the created ones.
fn all_issues(ctx: &Ctx, owner: &str, repo: &str) -> Vec<IssueMeta> {
    let data = lock(&ctx.st.data);
    let key = (owner.to_string(), repo.to_string());
    let mut out: Vec<IssueMeta> = (1..=gd::LAST_ISSUE)
        .filter_map(|n| {
            let edited = data
                .github
                .edited
                .get(&(key.0.clone(), key.1.clone(), n))
                .cloned();
            edited.or_else(|| gd::fixed_issue(owner, repo, n))
        })
        .collect();
    if let Some(created) = data.github.created.get(&key) {
        out.extend(created.iter().cloned());
    }
    out
}

fn find_issue(ctx: &Ctx, owner: &str, repo: &str, n: u64) -> Option<IssueMeta> {
    let data = lock(&ctx.st.data);
    if let Some(m) = data
        .github
        .edited
        .get(&(owner.to_string(), repo.to_string(), n))
    {
        return Some(m.clone());
    }
    gd::fixed_issue(owner, repo, n).or_else(|| {
        data.github
            .created
            .get(&(owner.to_string(), repo.to_string()))
            .and_then(|list| list.iter().find(|m| m.number == n).cloned())
    })
}

fn issue_value(ctx: &Ctx, owner: &str, repo: &str, m: &IssueMeta) -> Value {
    let extra = extra_comments(ctx, owner, repo, m.number);
    gd::issue_json(&ctx.api, owner, repo, m, extra)
}

fn list_issues(ctx: &Ctx, owner: &str, repo: &str) -> Response {
    let doc = "https://docs.github.com/rest/issues/issues#list-repository-issues";
    let state = match state_filter(ctx, doc) {
        Ok(s) => s,
        Err(resp) => return resp,
    };
    let wanted: Vec<String> = ctx
        .r
        .query_get("labels")
        .unwrap_or("")
        .split(',')
        .map(|l| l.trim().to_ascii_lowercase())
        .filter(|l| !l.is_empty())
        .collect();
    let creator = ctx.r.query_get("creator");
    let assignee = ctx.r.query_get("assignee");
    let asc = ctx.r.query_get("direction") == Some("asc");
    let mut items: Vec<IssueMeta> = all_issues(ctx, owner, repo)
        .into_iter()
        .filter(|m| state == "all" || m.state == state)
        .filter(|m| {
            wanted
                .iter()
                .all(|w| m.labels.iter().any(|l| l.name.to_ascii_lowercase() == *w))
        })
        .filter(|m| creator.is_none_or(|c| m.author.eq_ignore_ascii_case(c)))
        .filter(|m| match assignee {
            Some("*") => !m.assignees.is_empty(),
            Some("none") => m.assignees.is_empty(),
            Some(a) => m.assignees.iter().any(|x| x.eq_ignore_ascii_case(a)),
            None => true,
        })
        .collect();
    items.sort_by_key(|m| m.number);
    if !asc {
        items.reverse();
    }
    let page = paginate(ctx.r, items.len());
    let values: Vec<Value> = items[page.start..page.end]
        .iter()
        .map(|m| issue_value(ctx, owner, repo, m))
        .collect();
    with_link(ctx, json_response(200, &Value::Array(values)), &page)
}

fn get_issue(ctx: &Ctx, owner: &str, repo: &str, n: &str) -> Response {
    let doc = "https://docs.github.com/rest/issues/issues#get-an-issue";
    match n
        .parse::<u64>()
        .ok()
        .and_then(|n| find_issue(ctx, owner, repo, n))
    {
        Some(m) => json_response(200, &issue_value(ctx, owner, repo, &m)),
        None => not_found(doc),
    }
}

fn string_list(v: Option<&Value>) -> Result<Vec<String>, ()> {
    match v {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(items)) => items
            .iter()
            .map(|i| match i {
                Value::String(s) => Ok(s.clone()),
                Value::Object(o) => o
                    .get("name")
                    .and_then(Value::as_str)
                    .map(str::to_string)
                    .ok_or(()),
                _ => Err(()),
            })
            .collect(),
        Some(_) => Err(()),
    }
}

fn create_issue(ctx: &Ctx, owner: &str, repo: &str) -> Response {
    let doc = "https://docs.github.com/rest/issues/issues#create-an-issue";
    if let Some(resp) = ctx.require_write(doc) {
        return resp;
    }
    let Some(Value::Object(body)) = ctx.r.json() else {
        return gh_error(400, "Problems parsing JSON", doc);
    };
    let title = match body.get("title") {
        Some(Value::String(s)) if !s.is_empty() => s.clone(),
        Some(Value::Number(n)) => n.to_string(),
        _ => return gh_error(422, "Invalid request.\n\n\"title\" wasn't supplied.", doc),
    };
    let text = match body.get("body") {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(_) => {
            return gh_error(
                422,
                "Invalid request.\n\nFor 'properties/body', it is not a string or null.",
                doc,
            )
        }
    };
    let Ok(labels) = string_list(body.get("labels")) else {
        return gh_error(
            422,
            "Invalid request.\n\nFor 'properties/labels', it is not an array.",
            doc,
        );
    };
    let Ok(mut assignees) = string_list(body.get("assignees")) else {
        return gh_error(
            422,
            "Invalid request.\n\nFor 'properties/assignees', it is not an array.",
            doc,
        );
    };
    if let Some(Value::String(a)) = body.get("assignee") {
        assignees.push(a.clone());
    }
    let now = now_unix();
    let meta = {
        let mut data = lock(&ctx.st.data);
        let list = data
            .github
            .created
            .entry((owner.to_string(), repo.to_string()))
            .or_default();
        let first = if repo == "empty" {
            1
        } else {
            gd::LAST_ISSUE + 1
        };
        let meta = IssueMeta {
            number: first + list.len() as u64,
            title,
            body: text,
            state: "open",
            state_reason: None,
            author: GITHUB_LOGIN.to_string(),
            labels: labels.iter().map(|l| gd::label_catalog(l)).collect(),
            assignees,
            comments: 0,
            created: now,
            updated: now,
            closed: None,
            pull: None,
        };
        list.push(meta.clone());
        meta
    };
    let v = issue_value(ctx, owner, repo, &meta);
    let mut resp = json_response(201, &v);
    if let Some(url) = v.get("url").and_then(Value::as_str) {
        set_header(&mut resp, "location", url);
    }
    resp
}

fn add_comment(ctx: &Ctx, owner: &str, repo: &str, n: &str) -> Response {
    let doc = "https://docs.github.com/rest/issues/comments#create-an-issue-comment";
    if let Some(resp) = ctx.require_write(doc) {
        return resp;
    }
    let Some(n) = n
        .parse::<u64>()
        .ok()
        .filter(|&n| find_issue(ctx, owner, repo, n).is_some())
    else {
        return not_found(doc);
    };
    let Some(Value::Object(body)) = ctx.r.json() else {
        return gh_error(400, "Problems parsing JSON", doc);
    };
    let Some(text) = body
        .get("body")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
    else {
        return validation_failed(
            doc,
            json!([{ "resource": "IssueComment", "code": "missing_field", "field": "body" }]),
        );
    };
    let id = {
        let mut data = lock(&ctx.st.data);
        data.github.next_comment_id += 1;
        *data
            .github
            .extra_comments
            .entry((owner.to_string(), repo.to_string(), n))
            .or_insert(0) += 1;
        1_500_000_000 + data.github.next_comment_id
    };
    let api = &ctx.api;
    let now = gd::iso(now_unix());
    let url = format!("{api}/repos/{owner}/{repo}/issues/comments/{id}");
    let v = json!({
        "url": url,
        "html_url": format!("https://github.com/{owner}/{repo}/issues/{n}#issuecomment-{id}"),
        "issue_url": format!("{api}/repos/{owner}/{repo}/issues/{n}"),
        "id": id,
        "node_id": format!("IC_kwDO{id}"),
        "user": gd::user(api, GITHUB_LOGIN),
        "created_at": now,
        "updated_at": now,
        "author_association": if owner == GITHUB_LOGIN { "OWNER" } else { "CONTRIBUTOR" },
        "body": text,
        "reactions": {
            "url": format!("{url}/reactions"),
            "total_count": 0, "+1": 0, "-1": 0, "laugh": 0, "hooray": 0,
            "confused": 0, "heart": 0, "rocket": 0, "eyes": 0
        },
        "performed_via_github_app": null
    });
    let mut resp = json_response(201, &v);
    set_header(&mut resp, "location", &url);
    resp
}

// ----- search ---------------------------------------------------------------------------------

/// Split a search query into terms, keeping `"quoted phrases"` (also after `label:`) whole.
fn search_terms(q: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    for c in q.chars() {
        match c {
            '"' => quoted = !quoted,
            c if c.is_whitespace() && !quoted => {
                if !cur.is_empty() {
                    out.push(std::mem::take(&mut cur));
                }
            }
            c => cur.push(c),
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

fn search_issues(ctx: &Ctx) -> Response {
    let doc = "https://docs.github.com/rest/search/search#search-issues-and-pull-requests";
    let Some(q) = ctx.r.query_get("q").filter(|q| !q.trim().is_empty()) else {
        return validation_failed(
            doc,
            json!([{ "resource": "Search", "field": "q", "code": "missing" }]),
        );
    };
    let mut repos: Vec<(String, String)> = Vec::new();
    let mut kind: Option<bool> = None; // Some(true) = pull requests
    let mut state: Option<String> = None;
    let mut labels: Vec<String> = Vec::new();
    let mut author: Option<String> = None;
    let mut assignee: Option<String> = None;
    let mut merged: Option<bool> = None;
    let mut words: Vec<String> = Vec::new();
    for term in search_terms(q) {
        let lower = term.to_ascii_lowercase();
        match lower.split_once(':') {
            Some(("repo", v)) => {
                if let Some((o, r)) = term[5..].split_once('/') {
                    repos.push((o.to_string(), r.to_string()));
                } else {
                    return validation_failed(
                        doc,
                        json!([{ "message": format!("The listed repository {v} is not valid."), "resource": "Search", "field": "q", "code": "invalid" }]),
                    );
                }
            }
            Some(("is" | "type", "issue")) => kind = Some(false),
            Some(("is" | "type", "pr" | "pull-request")) => kind = Some(true),
            Some(("is" | "state", v @ ("open" | "closed"))) => state = Some(v.to_string()),
            Some(("is", "merged")) => merged = Some(true),
            Some(("is", "unmerged")) => merged = Some(false),
            Some(("label", _)) => labels.push(lower[6..].to_string()),
            Some(("author", _)) => author = Some(term[7..].to_string()),
            Some(("assignee", _)) => assignee = Some(term[9..].to_string()),
            Some(("in" | "sort" | "org" | "user", _)) => {}
            _ => words.push(lower),
        }
    }
    let Some(want_pr) = kind else {
        return validation_failed(
            doc,
            json!([{ "message": "Query must include 'is:issue' or 'is:pr'", "resource": "Search", "field": "q", "code": "invalid" }]),
        );
    };
    if repos.is_empty() {
        repos = vec![
            ("octocat".into(), "hello-world".into()),
            ("octocat".into(), "spoon-knife".into()),
        ];
    }
    if repos.iter().any(|(_, r)| r == "private-repo") {
        return validation_failed(
            doc,
            json!([{ "message": "The listed users and repositories cannot be searched either because the resources do not exist or you do not have permission to view them.", "resource": "Search", "field": "q", "code": "invalid" }]),
        );
    }
    let mut hits: Vec<(String, String, IssueMeta)> = Vec::new();
    for (owner, repo) in &repos {
        for m in all_issues(ctx, owner, repo) {
            let text = format!("{} {}", m.title, m.body).to_ascii_lowercase();
            let ok = m.pull.is_some() == want_pr
                && merged.is_none_or(|want| m.pull.as_ref().is_some_and(|p| p.merged == want))
                && state.as_deref().is_none_or(|s| m.state == s)
                && labels
                    .iter()
                    .all(|w| m.labels.iter().any(|l| l.name.to_ascii_lowercase() == *w))
                && author
                    .as_deref()
                    .is_none_or(|a| m.author.eq_ignore_ascii_case(a))
                && assignee
                    .as_deref()
                    .is_none_or(|a| m.assignees.iter().any(|x| x.eq_ignore_ascii_case(a)))
                && words.iter().all(|w| text.contains(w.as_str()));
            if ok {
                hits.push((owner.clone(), repo.clone(), m));
            }
        }
    }
    hits.sort_by_key(|h| std::cmp::Reverse(h.2.updated));
    let total = hits.len();
    let page = paginate(ctx.r, total.min(1000));
    let items: Vec<Value> = hits[page.start..page.end]
        .iter()
        .map(|(o, r, m)| {
            let mut v = issue_value(ctx, o, r, m);
            if let Value::Object(obj) = &mut v {
                obj.insert("score".into(), json!(1.0));
            }
            v
        })
        .collect();
    let resp = with_link(
        ctx,
        json_response(
            200,
            &json!({ "total_count": total, "incomplete_results": false, "items": items }),
        ),
        &page,
    );
    search_limits(ctx, resp)
}

/// The search API's own rate limit (30 a minute) in a search answer's headers.
fn search_limits(ctx: &Ctx, mut resp: Response) -> Response {
    let n = ctx.st.next_seq() % 30;
    set_header(&mut resp, "x-ratelimit-resource", "search");
    set_header(&mut resp, "x-ratelimit-limit", "30");
    set_header(&mut resp, "x-ratelimit-remaining", &(30 - n).to_string());
    set_header(&mut resp, "x-ratelimit-used", &n.to_string());
    resp
}

// ----- contents -------------------------------------------------------------------------------

fn known_ref(r: &str) -> bool {
    matches!(r, "main" | "develop" | "v1.0.0" | "HEAD")
        || (r.len() == 40 && r.bytes().all(|b| b.is_ascii_hexdigit()))
        || r.starts_with("refs/heads/main")
}

fn wrap_base64(bytes: &[u8]) -> String {
    let encoded = base64::engine::general_purpose::STANDARD.encode(bytes);
    let mut out = String::with_capacity(encoded.len() + encoded.len() / 60 + 1);
    for chunk in encoded.as_bytes().chunks(60) {
        out.push_str(std::str::from_utf8(chunk).unwrap_or(""));
        out.push('\n');
    }
    out
}

fn contents(ctx: &Ctx, owner: &str, repo: &str, path: &[&str]) -> Response {
    let doc = "https://docs.github.com/rest/repos/contents#get-repository-content";
    let git_ref = ctx
        .r
        .query_get("ref")
        .filter(|r| !r.is_empty())
        .unwrap_or("main");
    if !known_ref(git_ref) {
        return gh_error(404, &format!("No commit found for the ref {git_ref}"), doc);
    }
    if repo == "empty" {
        return gh_error(404, "This repository is empty.", doc);
    }
    let parts: Vec<&str> = path.iter().copied().filter(|p| !p.is_empty()).collect();
    if parts.iter().any(|p| *p == "." || *p == "..") {
        return not_found(doc);
    }
    let path = parts.join("/");
    let api = &ctx.api;
    let r = format!("{api}/repos/{owner}/{repo}");
    let web = format!("https://github.com/{owner}/{repo}");
    let ref_q = format!("?ref={}", git_ref.replace('/', "%2F"));
    let entry = |p: &str, size: u64, is_dir: bool| {
        let name = p.rsplit('/').next().unwrap_or(p);
        let sha = fake_git_sha(owner, repo, git_ref, p);
        let kind = if is_dir { "dir" } else { "file" };
        let html = format!(
            "{web}/{}/{git_ref}/{p}",
            if is_dir { "tree" } else { "blob" }
        );
        let git = format!("{r}/git/{}/{sha}", if is_dir { "trees" } else { "blobs" });
        let url = format!("{r}/contents/{p}{ref_q}");
        json!({
            "name": name,
            "path": p,
            "sha": sha,
            "size": size,
            "url": url,
            "html_url": html,
            "git_url": git,
            "download_url": if is_dir { Value::Null } else { json!(format!("https://raw.githubusercontent.com/{owner}/{repo}/{git_ref}/{p}")) },
            "type": kind,
            "_links": { "self": url, "git": git, "html": html }
        })
    };
    let mut files = gd::files(owner, repo, git_ref);
    let wants_raw = ctx
        .r
        .header("accept")
        .is_some_and(|a| a.contains("vnd.github.raw") || a.contains("vnd.github.v3.raw"));
    if path == gd::LARGE_FILE.0 {
        let mut v = entry(&path, gd::LARGE_FILE.1, false);
        if let Value::Object(obj) = &mut v {
            obj.insert("encoding".into(), json!("none"));
            obj.insert("content".into(), json!(""));
        }
        return json_response(200, &v);
    }
    if let Some((_, bytes)) = files.iter().find(|(p, _)| *p == path) {
        if wants_raw {
            return bytes_response(
                200,
                "application/vnd.github.raw; charset=utf-8",
                bytes.clone(),
            );
        }
        let mut v = entry(&path, bytes.len() as u64, false);
        if let Value::Object(obj) = &mut v {
            // GitHub puts type first and content after name/path; order does not matter to
            // JSON readers, but keep the fields GitHub has.
            obj.insert("content".into(), json!(wrap_base64(bytes)));
            obj.insert("encoding".into(), json!("base64"));
        }
        return json_response(200, &v);
    }
    files.push((gd::LARGE_FILE.0.to_string(), Vec::new()));
    let prefix = if path.is_empty() {
        String::new()
    } else {
        format!("{path}/")
    };
    let mut children: Vec<(String, u64, bool)> = Vec::new();
    for (p, bytes) in &files {
        let Some(rest) = p.strip_prefix(&prefix) else {
            continue;
        };
        let (name, is_dir) = match rest.split_once('/') {
            Some((dir, _)) => (dir, true),
            None => (rest, false),
        };
        let full = format!("{prefix}{name}");
        if children.iter().any(|(c, _, _)| *c == full) {
            continue;
        }
        let size = if is_dir {
            0
        } else if full == gd::LARGE_FILE.0 {
            gd::LARGE_FILE.1
        } else {
            bytes.len() as u64
        };
        children.push((full, size, is_dir));
    }
    if children.is_empty() {
        return not_found(doc);
    }
    children.sort_by(|a, b| a.0.cmp(&b.0));
    let list: Vec<Value> = children
        .iter()
        .map(|(p, size, is_dir)| entry(p, *size, *is_dir))
        .collect();
    json_response(200, &Value::Array(list))
}

fn fake_git_sha(owner: &str, repo: &str, git_ref: &str, path: &str) -> String {
    super::fake_sha(&[owner, repo, git_ref, path])
}

/// The repository `seen-by`: issue N of any owner, titled with the login that read it.
fn seen_by(ctx: &Ctx, owner: &str, rest: &[&str]) -> Response {
    let doc = "https://docs.github.com/rest/issues/issues#get-an-issue";
    let ["issues", n] = rest else {
        return not_found(doc);
    };
    let Ok(n) = n.parse::<u64>() else {
        return not_found(doc);
    };
    let login = &ctx.login;
    json_response(
        200,
        &json!({
            "number": n, "title": format!("{owner}/seen-by#{n} seen by {login}"),
            "state": "open", "user": {"login": login}, "body": "text",
            "labels": [{"name": "bug"}], "assignees": [], "comments": 0,
            "url": format!("{}/repos/{owner}/seen-by/issues/{n}", ctx.api),
        }),
    )
}
