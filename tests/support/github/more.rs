//! Commits, branches, pull request files, diffs, reviews, review comments, creating and merging
//! pull requests, updating issues, the user's repositories, repository and code search, and
//! Actions runs — stateful like the routes in `github.rs`, sharing their data: an updated issue
//! is what `GET …/issues/{n}` and the lists return, a created pull request is listed, a merge
//! closes the pull request and puts a merge commit on its base branch.
//!
//! Fixtures per repository (besides the special names in `github.rs`): 40 commits on `main`
//! (the oldest adds every file, the second rewrites `docs/guide.md` with a patch over 4 KB),
//! `develop` three commits ahead; branches `main` and `develop` (protected), `release/v1.0` and
//! `feature/change-1`…`-30` (the pull requests' heads); pull request N changes `1 + N % 7`
//! files (#13 also adds a 100 KB file, so its diff is over 64 KB), has `N % 3` reviews and
//! `N % 4` review comments; 35 workflow runs. `empty` has none of these.

use axum::response::Response;
use serde_json::{json, Value};

use super::super::github_data::{self as gd, IssueMeta, PullMeta, EPOCH, PEOPLE};
use super::super::{bytes_response, fake_sha, json_response, lock, now_unix, set_header, Req};
use super::{
    all_issues, find_issue, gh_error, issue_value, not_found, paginate, paginate_sized,
    requires_auth, search_terms, string_list, validation_failed, with_link, Ctx,
};

const COMMIT_MESSAGES: &[&str] = &[
    "Fix off-by-one in the pagination helper",
    "Add a retry budget to the HTTP client",
    "Bump tokio from 1.40 to 1.41",
    "Document the manifest format",
    "Refactor the token refresher",
    "Handle empty config files",
    "Speed up schema compilation",
    "Redact secrets in error messages",
];

/// 2025-01-01T00:00:00Z: Actions runs start here, repositories were last pushed before.
const YEAR_2025: i64 = 1_735_689_600;

/// How many commits `main` has; `develop` has three more.
const MAIN_COMMITS: usize = 40;

fn parse_number(n: &str) -> Option<u64> {
    n.parse::<u64>().ok().filter(|&n| n > 0)
}

/// Record that `owner/repo` changed (see `GithubData::touched`).
fn touch(data: &mut gd::GithubData, owner: &str, repo: &str) {
    data.touched.insert((owner.to_string(), repo.to_string()));
    data.generation += 1;
}

/// Store a changed issue or pull request where it lives: a created one in place, a fixed one
/// in `edited`.
fn store(ctx: &Ctx, owner: &str, repo: &str, meta: IssueMeta) {
    let mut data = lock(&ctx.st.data);
    let gh = &mut data.github;
    let key = (owner.to_string(), repo.to_string());
    let created = gh
        .created
        .get_mut(&key)
        .and_then(|list| list.iter_mut().find(|m| m.number == meta.number));
    match created {
        Some(slot) => *slot = meta,
        None => {
            gh.edited
                .insert((owner.to_string(), repo.to_string(), meta.number), meta);
        }
    }
    touch(gh, owner, repo);
}

// ----- commits --------------------------------------------------------------------------------

#[derive(Clone)]
struct Commit {
    sha: String,
    message: String,
    author: String,
    time: i64,
    parents: Vec<String>,
    files: Vec<Change>,
}

/// One file a commit or a pull request changes.
#[derive(Clone)]
struct Change {
    path: String,
    additions: u64,
    deletions: u64,
    status: &'static str,
    patch: String,
    previous: Option<String>,
}

fn change(
    path: &str,
    additions: u64,
    deletions: u64,
    status: &'static str,
    patch: String,
) -> Change {
    Change {
        path: path.to_string(),
        additions,
        deletions,
        status,
        patch,
        previous: None,
    }
}

fn small_patch(path: &str, i: usize) -> String {
    format!(
        "@@ -{i},3 +{i},4 @@\n // {path}\n-let retries = {i};\n+let retries = {};\n+let budget = Duration::from_secs({i});\n context();",
        i + 1
    )
}

/// The commits of `main`, newest first.
fn main_commits(owner: &str, repo: &str) -> Vec<Commit> {
    let files = gd::files(owner, repo, "main");
    let mut out: Vec<Commit> = Vec::new();
    for i in 1..=MAIN_COMMITS {
        let sha = fake_sha(&[owner, repo, "commit", &i.to_string()]);
        let parents = if i == 1 {
            Vec::new()
        } else {
            vec![fake_sha(&[owner, repo, "commit", &(i - 1).to_string()])]
        };
        let (message, changed) = match i {
            1 => (
                "Initial commit".to_string(),
                files
                    .iter()
                    .map(|(p, bytes)| {
                        let lines = bytes.iter().filter(|b| **b == b'\n').count() as u64;
                        change(p, lines, 0, "added", format!("@@ -0,0 +1,{lines} @@\n+…"))
                    })
                    .collect(),
            ),
            2 => {
                let patch: String = std::iter::once("@@ -1,200 +1,200 @@\n".to_string())
                    .chain((1..=200).map(|l| {
                        format!("-Line {l} of a long guide.\n+Line {l} of a long guide that wraps the base64 output over many lines.\n")
                    }))
                    .collect();
                (
                    "Rewrite the guide".to_string(),
                    vec![change("docs/guide.md", 200, 200, "modified", patch)],
                )
            }
            _ => {
                let (path, _) = &files[i % 6];
                (
                    COMMIT_MESSAGES[i % COMMIT_MESSAGES.len()].to_string(),
                    vec![change(path, 2, 1, "modified", small_patch(path, i))],
                )
            }
        };
        out.push(Commit {
            sha,
            message,
            author: PEOPLE[i % PEOPLE.len()].to_string(),
            time: EPOCH + (i as i64) * 11 * 3600,
            parents,
            files: changed,
        });
    }
    out.reverse();
    out
}

/// The commits reachable from `git_ref`, newest first (`None`: no such ref).
fn commits_of(ctx: &Ctx, owner: &str, repo: &str, git_ref: &str) -> Option<Vec<Commit>> {
    let main = main_commits(owner, repo);
    let merged = |branch: &str, mut list: Vec<Commit>| {
        let data = lock(&ctx.st.data);
        let key = (owner.to_string(), repo.to_string(), branch.to_string());
        for merge in data.github.merges.get(&key).into_iter().flatten() {
            let parent = list.first().map(|c| c.sha.clone()).into_iter().collect();
            list.insert(
                0,
                Commit {
                    sha: merge.sha.clone(),
                    message: merge.message.clone(),
                    author: ctx.login.clone(),
                    time: merge.time,
                    parents: parent,
                    files: Vec::new(),
                },
            );
        }
        list
    };
    let develop = || {
        let mut list = main.clone();
        for k in 1..=3 {
            let path = format!("src/feature_{k}.rs");
            let patch = small_patch(&path, k);
            list.insert(
                0,
                Commit {
                    sha: fake_sha(&[owner, repo, "develop", &k.to_string()]),
                    message: format!("Start feature {k}"),
                    author: "hubot".into(),
                    time: main[0].time + (k as i64) * 3600,
                    parents: vec![list[0].sha.clone()],
                    files: vec![change(&path, 2, 1, "added", patch)],
                },
            );
        }
        list
    };
    match git_ref {
        "main" | "HEAD" | "refs/heads/main" => Some(merged("main", main)),
        "develop" | "refs/heads/develop" => Some(merged("develop", develop())),
        r if r.starts_with("feature/change-") || r == "release/v1.0" => Some(main),
        sha => {
            for list in [merged("main", main.clone()), merged("develop", develop())] {
                if let Some(at) = list.iter().position(|c| c.sha == sha) {
                    return Some(list[at..].to_vec());
                }
            }
            None
        }
    }
}

fn commit_json(ctx: &Ctx, owner: &str, repo: &str, c: &Commit, files: Option<&[Value]>) -> Value {
    let api = &ctx.api;
    let r = format!("{api}/repos/{owner}/{repo}");
    let sha = &c.sha;
    let signature = json!({ "name": c.author, "email": format!("{}@users.noreply.github.com", c.author), "date": gd::iso(c.time) });
    let mut v = json!({
        "sha": sha,
        "node_id": format!("C_kwDO{}", &sha[..12]),
        "commit": {
            "author": signature,
            "committer": signature,
            "message": c.message,
            "tree": { "sha": fake_sha(&[sha, "tree"]), "url": format!("{r}/git/trees/{}", fake_sha(&[sha, "tree"])) },
            "url": format!("{r}/git/commits/{sha}"),
            "comment_count": 0,
            "verification": { "verified": false, "reason": "unsigned", "signature": null, "payload": null, "verified_at": null }
        },
        "url": format!("{r}/commits/{sha}"),
        "html_url": format!("https://github.com/{owner}/{repo}/commit/{sha}"),
        "comments_url": format!("{r}/commits/{sha}/comments"),
        "author": gd::user(api, &c.author),
        "committer": gd::user(api, "web-flow"),
        "parents": c.parents.iter().map(|p| json!({
            "sha": p, "url": format!("{r}/commits/{p}"),
            "html_url": format!("https://github.com/{owner}/{repo}/commit/{p}")
        })).collect::<Vec<_>>()
    });
    if let (Some(files), Value::Object(o)) = (files, &mut v) {
        let additions: u64 = c.files.iter().map(|f| f.additions).sum();
        let deletions: u64 = c.files.iter().map(|f| f.deletions).sum();
        o.insert(
            "stats".into(),
            json!({ "total": additions + deletions, "additions": additions, "deletions": deletions }),
        );
        o.insert("files".into(), Value::Array(files.to_vec()));
    }
    v
}

fn file_json(owner: &str, repo: &str, at: &str, f: &Change) -> Value {
    let Change {
        path,
        additions,
        deletions,
        status,
        patch,
        previous,
    } = f;
    let mut v = json!({
        "sha": fake_sha(&[owner, repo, at, path]),
        "filename": path,
        "status": status,
        "additions": additions,
        "deletions": deletions,
        "changes": additions + deletions,
        "blob_url": format!("https://github.com/{owner}/{repo}/blob/{at}/{path}"),
        "raw_url": format!("https://github.com/{owner}/{repo}/raw/{at}/{path}"),
        "contents_url": format!("https://api.github.com/repos/{owner}/{repo}/contents/{path}?ref={at}"),
        "patch": patch
    });
    if let (Some(p), Value::Object(o)) = (previous, &mut v) {
        o.insert("previous_filename".into(), json!(p));
    }
    v
}

/// `GET /repos/{owner}/{repo}/commits`: `sha`, `path`, `author`, `since`, `until`, paged.
pub(super) fn list_commits(ctx: &Ctx, owner: &str, repo: &str) -> Response {
    let doc = "https://docs.github.com/rest/commits/commits#list-commits";
    if repo == "empty" {
        return gh_error(409, "Git Repository is empty.", doc);
    }
    let q = |name| ctx.r.query_get(name).filter(|v| !v.is_empty());
    let from = q("sha").unwrap_or("main");
    let Some(commits) = commits_of(ctx, owner, repo, from) else {
        return gh_error(404, &format!("No commit found for SHA: {from}"), doc);
    };
    let time = |name| -> Result<Option<i64>, Response> {
        match q(name) {
            None => Ok(None),
            Some(v) => chrono::DateTime::parse_from_rfc3339(v)
                .map(|t| Some(t.timestamp()))
                .map_err(|_| {
                    validation_failed(
                        doc,
                        json!([{ "resource": "Commit", "field": name, "code": "invalid" }]),
                    )
                }),
        }
    };
    let (since, until) = match (time("since"), time("until")) {
        (Ok(a), Ok(b)) => (a, b),
        (Err(resp), _) | (_, Err(resp)) => return resp,
    };
    let path = q("path");
    let author = q("author");
    let matched: Vec<&Commit> = commits
        .iter()
        .filter(|c| {
            path.is_none_or(|p| {
                c.files.iter().any(|f| {
                    f.path == p || f.path.starts_with(&format!("{}/", p.trim_end_matches('/')))
                })
            })
        })
        .filter(|c| {
            author.is_none_or(|a| {
                c.author.eq_ignore_ascii_case(a)
                    || format!("{}@users.noreply.github.com", c.author) == a
            })
        })
        .filter(|c| since.is_none_or(|t| c.time >= t))
        .filter(|c| until.is_none_or(|t| c.time <= t))
        .collect();
    let page = paginate(ctx.r, matched.len());
    let items: Vec<Value> = matched[page.start..page.end]
        .iter()
        .map(|c| commit_json(ctx, owner, repo, c, None))
        .collect();
    with_link(ctx, json_response(200, &Value::Array(items)), &page)
}

/// `GET /repos/{owner}/{repo}/commits/{ref}`: the commit with its files (paged, 300 a page).
pub(super) fn get_commit(ctx: &Ctx, owner: &str, repo: &str, git_ref: &str) -> Response {
    let doc = "https://docs.github.com/rest/commits/commits#get-a-commit";
    if repo == "empty" {
        return gh_error(409, "Git Repository is empty.", doc);
    }
    let Some(commit) = commits_of(ctx, owner, repo, git_ref).and_then(|l| l.into_iter().next())
    else {
        return gh_error(422, &format!("No commit found for SHA: {git_ref}"), doc);
    };
    let page = paginate_sized(ctx.r, commit.files.len(), 300, 300);
    let files: Vec<Value> = commit.files[page.start..page.end]
        .iter()
        .map(|f| file_json(owner, repo, &commit.sha, f))
        .collect();
    let v = commit_json(ctx, owner, repo, &commit, Some(&files));
    with_link(ctx, json_response(200, &v), &page)
}

// ----- branches -------------------------------------------------------------------------------

/// Every branch name, in GitHub's (alphabetical) order.
fn branch_names(repo: &str) -> Vec<String> {
    if repo == "empty" {
        return Vec::new();
    }
    let mut names: Vec<String> = ["main", "develop", "release/v1.0"]
        .iter()
        .map(|s| s.to_string())
        .chain((1..=gd::LAST_PR).map(|n| format!("feature/change-{n}")))
        .collect();
    names.sort();
    names
}

fn branch_head(ctx: &Ctx, owner: &str, repo: &str, branch: &str) -> String {
    match branch.strip_prefix("feature/change-") {
        Some(n) => fake_sha(&[owner, repo, "head", n]),
        None => commits_of(ctx, owner, repo, branch)
            .and_then(|l| l.first().map(|c| c.sha.clone()))
            .unwrap_or_default(),
    }
}

/// `GET /repos/{owner}/{repo}/branches`: `protected`, paged.
pub(super) fn list_branches(ctx: &Ctx, owner: &str, repo: &str) -> Response {
    let protected = match ctx.r.query_get("protected") {
        Some("true") => Some(true),
        Some("false") => Some(false),
        _ => None,
    };
    let names: Vec<String> = branch_names(repo)
        .into_iter()
        .filter(|b| protected.is_none_or(|p| p == matches!(b.as_str(), "main" | "develop")))
        .collect();
    let page = paginate(ctx.r, names.len());
    let items: Vec<Value> = names[page.start..page.end]
        .iter()
        .map(|b| {
            let sha = branch_head(ctx, owner, repo, b);
            json!({
                "name": b,
                "commit": { "sha": sha, "url": format!("{}/repos/{owner}/{repo}/commits/{sha}", ctx.api) },
                "protected": matches!(b.as_str(), "main" | "develop")
            })
        })
        .collect();
    with_link(ctx, json_response(200, &Value::Array(items)), &page)
}

// ----- pull requests --------------------------------------------------------------------------

fn find_pull(ctx: &Ctx, owner: &str, repo: &str, n: &str) -> Option<IssueMeta> {
    parse_number(n)
        .and_then(|n| find_issue(ctx, owner, repo, n))
        .filter(|m| m.pull.is_some())
}

/// `GET …/pulls` of a repository with changes: built from the metadata.
pub(super) fn list_pulls_changed(
    ctx: &Ctx,
    owner: &str,
    repo: &str,
    state: &str,
    base: Option<&str>,
    asc: bool,
) -> Response {
    let mut metas: Vec<IssueMeta> = all_issues(ctx, owner, repo)
        .into_iter()
        .filter(|m| {
            m.pull.as_ref().is_some_and(|p| {
                (state == "all" || m.state == state) && base.is_none_or(|b| p.base == b)
            })
        })
        .collect();
    metas.sort_by_key(|m| m.number);
    if !asc {
        metas.reverse();
    }
    let page = paginate(ctx.r, metas.len());
    let items: Vec<Value> = metas[page.start..page.end]
        .iter()
        .map(|m| gd::pull_json(&ctx.api, owner, repo, m, false, 0))
        .collect();
    with_link(ctx, json_response(200, &Value::Array(items)), &page)
}

/// The files pull request `n` changes.
fn pull_changes(repo: &str, n: u64) -> Vec<Change> {
    let mut out = Vec::new();
    for i in 0..(1 + n % 7) {
        let path = format!("src/{repo}/module_{:02}.rs", (n + i) % 24);
        let (status, previous, patch) = match i {
            1 => (
                "added",
                None,
                format!("@@ -0,0 +1,3 @@\n+//! Module {i}.\n+\n+pub fn edge_case_{n}() {{}}"),
            ),
            2 => (
                "renamed",
                Some(format!("src/{repo}/old_module_{:02}.rs", (n + i) % 24)),
                small_patch(&path, i as usize),
            ),
            _ => ("modified", None, small_patch(&path, (n + i) as usize)),
        };
        let (additions, deletions) = if status == "added" { (3, 0) } else { (2, 1) };
        out.push(Change {
            previous,
            ..change(&path, additions, deletions, status, patch)
        });
    }
    if n == 13 {
        let patch: String = std::iter::once("@@ -0,0 +1,2500 @@".to_string())
            .chain(
                (1..=2500)
                    .map(|l| format!("\n+{{\"id\": {l}, \"name\": \"fixture row {l:05}\"}},")),
            )
            .collect();
        out.push(change("data/fixtures.json", 2500, 0, "added", patch));
    }
    out
}

/// `GET …/pulls/{n}/files`, paged.
pub(super) fn pull_files(ctx: &Ctx, owner: &str, repo: &str, n: &str) -> Response {
    let doc = "https://docs.github.com/rest/pulls/pulls#list-pull-requests-files";
    let Some(meta) = find_pull(ctx, owner, repo, n) else {
        return not_found(doc);
    };
    let head = fake_sha(&[owner, repo, "head", &meta.number.to_string()]);
    let changes = pull_changes(repo, meta.number);
    let page = paginate(ctx.r, changes.len());
    let items: Vec<Value> = changes[page.start..page.end]
        .iter()
        .map(|c| file_json(owner, repo, &head, c))
        .collect();
    with_link(ctx, json_response(200, &Value::Array(items)), &page)
}

/// `Accept: application/vnd.github.diff` (or `.v3.diff`) asks for the diff instead of JSON.
pub(super) fn wants_diff(r: &Req) -> bool {
    r.header("accept")
        .is_some_and(|a| a.contains("vnd.github.diff") || a.contains("vnd.github.v3.diff"))
}

/// `GET …/pulls/{n}` as a unified diff.
pub(super) fn pull_diff(ctx: &Ctx, owner: &str, repo: &str, n: &str) -> Response {
    let doc = "https://docs.github.com/rest/pulls/pulls#get-a-pull-request";
    let Some(meta) = find_pull(ctx, owner, repo, n) else {
        return not_found(doc);
    };
    let mut diff = String::new();
    for Change {
        path,
        status,
        patch,
        previous,
        ..
    } in pull_changes(repo, meta.number)
    {
        let old = previous.clone().unwrap_or_else(|| path.clone());
        let a = fake_sha(&[owner, repo, "base", &old]);
        let b = fake_sha(&[owner, repo, "head", &path]);
        diff.push_str(&format!("diff --git a/{old} b/{path}\n"));
        match status {
            "added" => diff.push_str(&format!(
                "new file mode 100644\nindex 0000000..{}\n--- /dev/null\n+++ b/{path}\n",
                &b[..7]
            )),
            "renamed" => diff.push_str(&format!(
                "similarity index 90%\nrename from {old}\nrename to {path}\nindex {}..{} 100644\n--- a/{old}\n+++ b/{path}\n",
                &a[..7],
                &b[..7]
            )),
            _ => diff.push_str(&format!(
                "index {}..{} 100644\n--- a/{old}\n+++ b/{path}\n",
                &a[..7],
                &b[..7]
            )),
        }
        diff.push_str(&patch);
        diff.push('\n');
    }
    let mut resp = bytes_response(200, "application/vnd.github.diff; charset=utf-8", diff);
    set_header(&mut resp, "x-github-media-type", "github.v3; param=diff");
    resp
}

/// A review of pull request `n` (`at`: when it was submitted; `None` while pending).
struct Review<'a> {
    n: u64,
    id: u64,
    user: &'a str,
    state: &'a str,
    body: &'a str,
    at: Option<i64>,
}

fn review_json(ctx: &Ctx, owner: &str, repo: &str, review: &Review) -> Value {
    let Review {
        n,
        id,
        user,
        state,
        body,
        at,
    } = *review;
    let api = &ctx.api;
    let html = format!("https://github.com/{owner}/{repo}/pull/{n}#pullrequestreview-{id}");
    let pull_url = format!("{api}/repos/{owner}/{repo}/pulls/{n}");
    json!({
        "id": id,
        "node_id": format!("PRR_kwDO{id}"),
        "user": gd::user(api, user),
        "body": body,
        "state": state,
        "html_url": html,
        "pull_request_url": pull_url,
        "author_association": if user == owner { "OWNER" } else { "CONTRIBUTOR" },
        "_links": { "html": { "href": html }, "pull_request": { "href": pull_url } },
        "submitted_at": at.map(gd::iso),
        "commit_id": fake_sha(&[owner, repo, "head", &n.to_string()])
    })
}

/// The reviews of a pull request, oldest first: the fixed ones, then those submitted.
fn reviews_of(ctx: &Ctx, owner: &str, repo: &str, m: &IssueMeta) -> Vec<Value> {
    let n = m.number;
    let mut out = Vec::new();
    if n <= gd::LAST_PR {
        for k in 0..(n % 3) {
            let who = PEOPLE[((n + k + 2) as usize) % PEOPLE.len()];
            if who == m.author {
                continue;
            }
            let state = ["APPROVED", "CHANGES_REQUESTED", "COMMENTED"][((n + k) % 3) as usize];
            let id = 80_000_000 + n * 10 + k;
            let body = if state == "APPROVED" {
                ""
            } else {
                "Please handle the error case in the retry loop."
            };
            let review = Review {
                n,
                id,
                user: who,
                state,
                body,
                at: Some(m.created + 3600 * (k as i64 + 1)),
            };
            out.push(review_json(ctx, owner, repo, &review));
        }
    }
    let data = lock(&ctx.st.data);
    if let Some(list) = data
        .github
        .reviews
        .get(&(owner.to_string(), repo.to_string(), n))
    {
        out.extend(list.iter().cloned());
    }
    out
}

/// `GET …/pulls/{n}/reviews`, paged.
pub(super) fn list_reviews(ctx: &Ctx, owner: &str, repo: &str, n: &str) -> Response {
    let doc = "https://docs.github.com/rest/pulls/reviews#list-reviews-for-a-pull-request";
    let Some(meta) = find_pull(ctx, owner, repo, n) else {
        return not_found(doc);
    };
    let reviews = reviews_of(ctx, owner, repo, &meta);
    let page = paginate(ctx.r, reviews.len());
    with_link(
        ctx,
        json_response(200, &Value::Array(reviews[page.start..page.end].to_vec())),
        &page,
    )
}

fn unprocessable(doc: &str, reason: &str) -> Response {
    json_response(
        422,
        &json!({ "message": "Unprocessable Entity", "errors": [reason], "documentation_url": doc, "status": "422" }),
    )
}

/// `POST …/pulls/{n}/reviews`: `event` APPROVE / REQUEST_CHANGES / COMMENT (none: a pending
/// review), `body` required unless approving; the author may only comment.
pub(super) fn create_review(ctx: &Ctx, owner: &str, repo: &str, n: &str) -> Response {
    let doc = "https://docs.github.com/rest/pulls/reviews#create-a-review-for-a-pull-request";
    if let Some(resp) = ctx.require_write(doc) {
        return resp;
    }
    let Some(meta) = find_pull(ctx, owner, repo, n) else {
        return not_found(doc);
    };
    let Some(Value::Object(body)) = ctx.r.json() else {
        return gh_error(400, "Problems parsing JSON", doc);
    };
    let text = body
        .get("body")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let state = match body.get("event").and_then(Value::as_str) {
        None => "PENDING",
        Some("APPROVE") => "APPROVED",
        Some("REQUEST_CHANGES") => "CHANGES_REQUESTED",
        Some("COMMENT") => "COMMENTED",
        Some(other) => {
            return validation_failed(
                doc,
                json!([{ "resource": "PullRequestReview", "field": "event", "code": "invalid", "value": other }]),
            )
        }
    };
    if meta.author == ctx.login {
        match state {
            "APPROVED" => return unprocessable(doc, "Can not approve your own pull request"),
            "CHANGES_REQUESTED" => {
                return unprocessable(
                    doc,
                    "Review Can not request changes on your own pull request",
                )
            }
            _ => {}
        }
    }
    if text.is_empty() && matches!(state, "CHANGES_REQUESTED" | "COMMENTED") {
        return unprocessable(
            doc,
            "Review body is required when the event is REQUEST_CHANGES or COMMENT",
        );
    }
    let now = now_unix();
    let v = {
        let mut data = lock(&ctx.st.data);
        data.github.next_review_id += 1;
        let id = 90_000_000 + data.github.next_review_id;
        let at = (state != "PENDING").then_some(now);
        let review = Review {
            n: meta.number,
            id,
            user: &ctx.login,
            state,
            body: &text,
            at,
        };
        let v = review_json(ctx, owner, repo, &review);
        data.github
            .reviews
            .entry((owner.to_string(), repo.to_string(), meta.number))
            .or_default()
            .push(v.clone());
        touch(&mut data.github, owner, repo);
        v
    };
    json_response(200, &v)
}

/// `GET …/pulls/{n}/comments`: `n % 4` comments on the diff, oldest first, paged.
pub(super) fn review_comments(ctx: &Ctx, owner: &str, repo: &str, n: &str) -> Response {
    let doc = "https://docs.github.com/rest/pulls/comments#list-review-comments-on-a-pull-request";
    let Some(meta) = find_pull(ctx, owner, repo, n) else {
        return not_found(doc);
    };
    let n = meta.number;
    let api = &ctx.api;
    let r = format!("{api}/repos/{owner}/{repo}");
    let changes = pull_changes(repo, n);
    let head = fake_sha(&[owner, repo, "head", &n.to_string()]);
    let first_id = 700_000_000 + n * 10;
    let comments: Vec<Value> = (0..(n % 4))
        .map(|k| {
            let id = first_id + k;
            let who = PEOPLE[((n + k + 1) as usize) % PEOPLE.len()];
            let path = &changes[0].path;
            let url = format!("{r}/pulls/comments/{id}");
            let html = format!("https://github.com/{owner}/{repo}/pull/{n}#discussion_r{id}");
            let at = gd::iso(meta.created + 1800 * (k as i64 + 1));
            json!({
                "url": url,
                "pull_request_review_id": 80_000_000 + n * 10,
                "id": id,
                "node_id": format!("PRRC_kwDO{id}"),
                "diff_hunk": "@@ -1,3 +1,4 @@\n // context\n-let retries = 1;\n+let retries = 2;",
                "path": path,
                "commit_id": head,
                "original_commit_id": head,
                "user": gd::user(api, who),
                "body": if k == 0 { "Why two retries and not three?".to_string() } else { format!("Reply {k}: it matches the budget.") },
                "created_at": at,
                "updated_at": at,
                "html_url": html,
                "pull_request_url": format!("{r}/pulls/{n}"),
                "author_association": "CONTRIBUTOR",
                "_links": { "self": { "href": url }, "html": { "href": html }, "pull_request": { "href": format!("{r}/pulls/{n}") } },
                "reactions": { "url": format!("{url}/reactions"), "total_count": 0, "+1": 0, "-1": 0, "laugh": 0, "hooray": 0, "confused": 0, "heart": 0, "rocket": 0, "eyes": 0 },
                "start_line": null,
                "original_start_line": null,
                "start_side": null,
                "line": 2,
                "original_line": 2,
                "side": "RIGHT",
                "in_reply_to_id": if k == 0 { Value::Null } else { json!(first_id) },
                "original_position": 3,
                "position": 3,
                "subject_type": "line"
            })
        })
        .collect();
    let page = paginate(ctx.r, comments.len());
    with_link(
        ctx,
        json_response(200, &Value::Array(comments[page.start..page.end].to_vec())),
        &page,
    )
}

/// `POST …/pulls`: `head` must be a branch (`user:branch` for the owner's own), `base` too, not
/// the same one, and no open pull request from `head` may exist.
pub(super) fn create_pull(ctx: &Ctx, owner: &str, repo: &str) -> Response {
    let doc = "https://docs.github.com/rest/pulls/pulls#create-a-pull-request";
    if let Some(resp) = ctx.require_write(doc) {
        return resp;
    }
    let Some(Value::Object(body)) = ctx.r.json() else {
        return gh_error(400, "Problems parsing JSON", doc);
    };
    let field = |name: &str| {
        body.get(name)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
    };
    let missing = |name: &str| {
        validation_failed(
            doc,
            json!([{ "resource": "PullRequest", "code": "missing_field", "field": name }]),
        )
    };
    let Some(title) = field("title") else {
        return missing("title");
    };
    let (Some(head), Some(base)) = (field("head"), field("base")) else {
        return missing(if field("head").is_none() {
            "head"
        } else {
            "base"
        });
    };
    let branches = branch_names(repo);
    let head_branch = match head.split_once(':') {
        Some((user, branch)) if user.eq_ignore_ascii_case(owner) => branch,
        Some(_) => "",
        None => head,
    };
    for (name, value) in [("head", head_branch), ("base", base)] {
        if !branches.iter().any(|b| b == value) {
            return validation_failed(
                doc,
                json!([{ "resource": "PullRequest", "field": name, "code": "invalid" }]),
            );
        }
    }
    if head_branch == base {
        return validation_failed(
            doc,
            json!([{ "resource": "PullRequest", "code": "custom", "message": format!("No commits between {base} and {head_branch}") }]),
        );
    }
    let open_from_head = all_issues(ctx, owner, repo).into_iter().any(|m| {
        m.state == "open"
            && m.pull
                .as_ref()
                .is_some_and(|p| p.head == head_branch && p.base == base)
    });
    if open_from_head {
        return validation_failed(
            doc,
            json!([{ "resource": "PullRequest", "code": "custom", "message": format!("A pull request already exists for {owner}:{head_branch}.") }]),
        );
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
            title: title.to_string(),
            body: field("body").unwrap_or("").to_string(),
            state: "open",
            state_reason: None,
            author: ctx.login.clone(),
            labels: Vec::new(),
            assignees: Vec::new(),
            comments: 0,
            created: now,
            updated: now,
            closed: None,
            pull: Some(PullMeta {
                base: base.to_string(),
                head: head_branch.to_string(),
                merged: false,
                draft: body.get("draft").and_then(Value::as_bool).unwrap_or(false),
                reviewers: Vec::new(),
            }),
        };
        list.push(meta.clone());
        touch(&mut data.github, owner, repo);
        meta
    };
    let v = gd::pull_json(&ctx.api, owner, repo, &meta, true, 0);
    let mut resp = json_response(201, &v);
    if let Some(url) = v.get("url").and_then(Value::as_str) {
        set_header(&mut resp, "location", url);
    }
    resp
}

/// `PUT …/pulls/{n}/merge`: 405 unless the pull request is open, not a draft and mergeable
/// (#8, #16, … conflict with their base); 409 when `sha` is not its head.
pub(super) fn merge_pull(ctx: &Ctx, owner: &str, repo: &str, n: &str) -> Response {
    let doc = "https://docs.github.com/rest/pulls/pulls#merge-a-pull-request";
    if let Some(resp) = ctx.require_write(doc) {
        return resp;
    }
    let Some(mut meta) = find_pull(ctx, owner, repo, n) else {
        return not_found(doc);
    };
    let body = match ctx.r.json() {
        Some(Value::Object(b)) => b,
        None if ctx.r.body.is_empty() => serde_json::Map::new(),
        _ => return gh_error(400, "Problems parsing JSON", doc),
    };
    let method = body
        .get("merge_method")
        .and_then(Value::as_str)
        .unwrap_or("merge");
    if !matches!(method, "merge" | "squash" | "rebase") {
        return validation_failed(
            doc,
            json!([{ "resource": "PullRequest", "field": "merge_method", "code": "invalid" }]),
        );
    }
    let number = meta.number;
    let head = fake_sha(&[owner, repo, "head", &number.to_string()]);
    let Some(pull) = meta.pull.as_mut() else {
        return not_found(doc);
    };
    if meta.state != "open" || pull.draft || number.is_multiple_of(8) {
        return gh_error(405, "Pull Request is not mergeable", doc);
    }
    if body
        .get("sha")
        .and_then(Value::as_str)
        .is_some_and(|sha| sha != head)
    {
        return gh_error(
            409,
            "Head branch was modified. Review and try the merge again.",
            doc,
        );
    }
    let now = now_unix();
    pull.merged = true;
    let base = pull.base.clone();
    let head_branch = pull.head.clone();
    meta.state = "closed";
    meta.closed = Some(now);
    meta.updated = now;
    let sha = fake_sha(&[owner, repo, "merge", &number.to_string()]);
    let title = body
        .get("commit_title")
        .and_then(Value::as_str)
        .map(str::to_string)
        .unwrap_or_else(|| match method {
            "merge" => format!("Merge pull request #{number} from {owner}/{head_branch}"),
            _ => format!("{} (#{number})", meta.title),
        });
    store(ctx, owner, repo, meta);
    lock(&ctx.st.data)
        .github
        .merges
        .entry((owner.to_string(), repo.to_string(), base))
        .or_default()
        .push(gd::MergeCommit {
            sha: sha.clone(),
            message: title,
            time: now,
        });
    json_response(
        200,
        &json!({ "sha": sha, "merged": true, "message": "Pull Request successfully merged" }),
    )
}

// ----- issues ---------------------------------------------------------------------------------

/// `PATCH …/issues/{n}`: only the fields sent change; `labels` and `assignees` replace.
pub(super) fn update_issue(ctx: &Ctx, owner: &str, repo: &str, n: &str) -> Response {
    let doc = "https://docs.github.com/rest/issues/issues#update-an-issue";
    if let Some(resp) = ctx.require_write(doc) {
        return resp;
    }
    let Some(mut meta) = parse_number(n).and_then(|n| find_issue(ctx, owner, repo, n)) else {
        return not_found(doc);
    };
    let Some(Value::Object(body)) = ctx.r.json() else {
        return gh_error(400, "Problems parsing JSON", doc);
    };
    let invalid = |field: &str| {
        validation_failed(
            doc,
            json!([{ "resource": "Issue", "field": field, "code": "invalid" }]),
        )
    };
    match body.get("title") {
        None => {}
        Some(Value::String(t)) if !t.is_empty() => meta.title = t.clone(),
        Some(_) => return invalid("title"),
    }
    match body.get("body") {
        None => {}
        Some(Value::Null) => meta.body = String::new(),
        Some(Value::String(t)) => meta.body = t.clone(),
        Some(_) => return invalid("body"),
    }
    if body.contains_key("labels") {
        let Ok(labels) = string_list(body.get("labels")) else {
            return invalid("labels");
        };
        meta.labels = labels.iter().map(|l| gd::label_catalog(l)).collect();
    }
    if body.contains_key("assignees") {
        let Ok(assignees) = string_list(body.get("assignees")) else {
            return invalid("assignees");
        };
        meta.assignees = assignees;
    }
    let reason = match body.get("state_reason") {
        None | Some(Value::Null) => None,
        Some(Value::String(r)) => match r.as_str() {
            "completed" => Some("completed"),
            "not_planned" => Some("not_planned"),
            "reopened" => Some("reopened"),
            _ => return invalid("state_reason"),
        },
        Some(_) => return invalid("state_reason"),
    };
    let now = now_unix();
    match body.get("state").and_then(Value::as_str) {
        None => {}
        Some("closed") => {
            if meta.state == "open" {
                meta.closed = Some(now);
            }
            meta.state = "closed";
            if meta.pull.is_none() {
                meta.state_reason = Some(reason.unwrap_or("completed"));
            }
        }
        Some("open") => {
            if meta.state == "closed" && meta.pull.as_ref().is_some_and(|p| p.merged) {
                return validation_failed(
                    doc,
                    json!([{ "resource": "Issue", "code": "custom", "field": "state", "message": "state cannot be changed. The pull request has already been merged." }]),
                );
            }
            if meta.state == "closed" && meta.pull.is_none() {
                meta.state_reason = Some("reopened");
            }
            meta.state = "open";
            meta.closed = None;
        }
        Some(_) => return invalid("state"),
    }
    meta.updated = now;
    store(ctx, owner, repo, meta.clone());
    json_response(200, &issue_value(ctx, owner, repo, &meta))
}

// ----- Actions --------------------------------------------------------------------------------

/// `GET …/actions/runs`: 35 runs, newest first; `branch`, `event`, `status` (a status or a
/// conclusion), paged.
pub(super) fn list_runs(ctx: &Ctx, owner: &str, repo: &str) -> Response {
    let api = &ctx.api;
    let q = |name| ctx.r.query_get(name).filter(|v| !v.is_empty());
    let total_runs = if repo == "empty" { 0 } else { 35u64 };
    let runs: Vec<Value> = (1..=total_runs)
        .rev()
        .map(|i| {
            let (name, event) = match i % 3 {
                0 => ("CodeQL", "schedule"),
                1 => ("CI", "push"),
                _ => ("CI", "pull_request"),
            };
            let pr = i % 25 + 1;
            let branch = if event == "pull_request" {
                format!("feature/change-{pr}")
            } else {
                "main".to_string()
            };
            let (status, conclusion) = match i {
                35 => ("in_progress", None),
                34 => ("queued", None),
                _ if i % 7 == 0 => ("completed", Some("failure")),
                _ if i % 11 == 0 => ("completed", Some("cancelled")),
                _ if i % 13 == 0 => ("completed", Some("skipped")),
                _ => ("completed", Some("success")),
            };
            let id = 9_000_000_000 + super::super::fnv(&[owner, repo]) % 1_000_000 * 100 + i;
            let created = gd::iso(YEAR_2025 + (i as i64) * 5 * 3600);
            let head_sha = fake_sha(&[owner, repo, "run", &i.to_string()]);
            let title = if event == "pull_request" {
                format!("Pull request #{pr}")
            } else {
                COMMIT_MESSAGES[(i as usize) % COMMIT_MESSAGES.len()].to_string()
            };
            let r = format!("{api}/repos/{owner}/{repo}");
            json!({
                "id": id,
                "name": name,
                "node_id": format!("WFR_kwLO{id}"),
                "head_branch": branch,
                "head_sha": head_sha,
                "path": format!(".github/workflows/{}.yml", name.to_lowercase()),
                "display_title": title,
                "run_number": i,
                "event": event,
                "status": status,
                "conclusion": conclusion,
                "workflow_id": 161_335 + (i % 3),
                "check_suite_id": 42_000_000 + i,
                "url": format!("{r}/actions/runs/{id}"),
                "html_url": format!("https://github.com/{owner}/{repo}/actions/runs/{id}"),
                "pull_requests": [],
                "created_at": created,
                "updated_at": created,
                "actor": gd::user(api, PEOPLE[(i as usize) % PEOPLE.len()]),
                "run_attempt": 1,
                "run_started_at": created,
                "jobs_url": format!("{r}/actions/runs/{id}/jobs"),
                "logs_url": format!("{r}/actions/runs/{id}/logs"),
                "check_suite_url": format!("{r}/check-suites/{}", 42_000_000 + i),
                "artifacts_url": format!("{r}/actions/runs/{id}/artifacts"),
                "cancel_url": format!("{r}/actions/runs/{id}/cancel"),
                "rerun_url": format!("{r}/actions/runs/{id}/rerun"),
                "workflow_url": format!("{r}/actions/workflows/{}", 161_335 + (i % 3)),
                "head_commit": { "id": head_sha, "message": title, "timestamp": created },
                "repository": { "id": 1, "name": repo, "full_name": format!("{owner}/{repo}") }
            })
        })
        .filter(|run| q("branch").is_none_or(|b| run["head_branch"] == b))
        .filter(|run| q("event").is_none_or(|e| run["event"] == e))
        .filter(|run| q("status").is_none_or(|s| run["status"] == s || run["conclusion"] == s))
        .collect();
    let page = paginate(ctx.r, runs.len());
    with_link(
        ctx,
        json_response(
            200,
            &json!({ "total_count": runs.len(), "workflow_runs": runs[page.start..page.end].to_vec() }),
        ),
        &page,
    )
}

// ----- repositories and search ----------------------------------------------------------------

struct RepoRow {
    owner: &'static str,
    name: &'static str,
    private: bool,
    fork: bool,
    archived: bool,
    language: &'static str,
    stars: u64,
    /// Days before 2025-01-01 of the last push.
    pushed_days_ago: i64,
}

/// `""` as owner: the signed-in user.
const REPOS: &[RepoRow] = &[
    RepoRow {
        owner: "",
        name: "hello-world",
        private: false,
        fork: false,
        archived: false,
        language: "Rust",
        stars: 12,
        pushed_days_ago: 3,
    },
    RepoRow {
        owner: "",
        name: "spoon-knife",
        private: false,
        fork: true,
        archived: false,
        language: "HTML",
        stars: 0,
        pushed_days_ago: 40,
    },
    RepoRow {
        owner: "",
        name: "keyward-notes",
        private: true,
        fork: false,
        archived: false,
        language: "Markdown",
        stars: 0,
        pushed_days_ago: 1,
    },
    RepoRow {
        owner: "",
        name: "dotfiles",
        private: false,
        fork: false,
        archived: false,
        language: "Shell",
        stars: 5,
        pushed_days_ago: 20,
    },
    RepoRow {
        owner: "",
        name: "advent-of-code",
        private: false,
        fork: false,
        archived: false,
        language: "Rust",
        stars: 3,
        pushed_days_ago: 30,
    },
    RepoRow {
        owner: "",
        name: "homepage",
        private: true,
        fork: false,
        archived: false,
        language: "TypeScript",
        stars: 0,
        pushed_days_ago: 9,
    },
    RepoRow {
        owner: "",
        name: "old-experiments",
        private: false,
        fork: false,
        archived: true,
        language: "Go",
        stars: 1,
        pushed_days_ago: 700,
    },
    RepoRow {
        owner: "acme",
        name: "platform",
        private: true,
        fork: false,
        archived: false,
        language: "Rust",
        stars: 40,
        pushed_days_ago: 0,
    },
    RepoRow {
        owner: "acme",
        name: "infra",
        private: true,
        fork: false,
        archived: false,
        language: "HCL",
        stars: 8,
        pushed_days_ago: 2,
    },
    RepoRow {
        owner: "acme",
        name: "website",
        private: false,
        fork: false,
        archived: false,
        language: "TypeScript",
        stars: 25,
        pushed_days_ago: 5,
    },
    RepoRow {
        owner: "octocat",
        name: "hello-world",
        private: false,
        fork: false,
        archived: false,
        language: "Rust",
        stars: 2600,
        pushed_days_ago: 60,
    },
    RepoRow {
        owner: "tokio-rs",
        name: "tokio",
        private: false,
        fork: false,
        archived: false,
        language: "Rust",
        stars: 27000,
        pushed_days_ago: 0,
    },
    RepoRow {
        owner: "serde-rs",
        name: "serde",
        private: false,
        fork: false,
        archived: false,
        language: "Rust",
        stars: 9200,
        pushed_days_ago: 4,
    },
    RepoRow {
        owner: "hyperium",
        name: "hyper",
        private: false,
        fork: false,
        archived: false,
        language: "Rust",
        stars: 14500,
        pushed_days_ago: 1,
    },
    RepoRow {
        owner: "psf",
        name: "requests",
        private: false,
        fork: false,
        archived: false,
        language: "Python",
        stars: 52000,
        pushed_days_ago: 6,
    },
];

/// The rows the token can see, with their owners filled in; `user_only`: the user's own and
/// their organisation's (what `GET /user/repos` lists).
fn visible_repos(ctx: &Ctx, user_only: bool) -> Vec<(String, &'static RepoRow)> {
    let private_ok = ctx.has_scope(&["repo"]);
    REPOS
        .iter()
        .filter(|r| !user_only || matches!(r.owner, "" | "acme"))
        .filter(|r| private_ok || !r.private)
        .map(|r| {
            let owner = if r.owner.is_empty() {
                ctx.login.clone()
            } else {
                r.owner.to_string()
            };
            (owner, r)
        })
        .collect()
}

fn repo_json(ctx: &Ctx, owner: &str, r: &RepoRow, with_permissions: bool) -> Value {
    let mut v = gd::repository(&ctx.api, owner, r.name);
    let pushed = gd::iso(YEAR_2025 - r.pushed_days_ago * 86_400);
    if let Value::Object(o) = &mut v {
        o.insert("private".into(), json!(r.private));
        o.insert(
            "visibility".into(),
            json!(if r.private { "private" } else { "public" }),
        );
        o.insert("fork".into(), json!(r.fork));
        o.insert("archived".into(), json!(r.archived));
        o.insert("language".into(), json!(r.language));
        o.insert("stargazers_count".into(), json!(r.stars));
        o.insert("watchers_count".into(), json!(r.stars));
        o.insert("watchers".into(), json!(r.stars));
        o.insert("pushed_at".into(), json!(pushed));
        o.insert("updated_at".into(), json!(pushed));
        if with_permissions {
            let own = owner == ctx.login;
            o.insert(
                "permissions".into(),
                json!({ "admin": own, "maintain": own, "push": true, "triage": true, "pull": true }),
            );
        }
    }
    v
}

/// `GET /user/repos`: `visibility`, `sort` (full_name ascending; dates newest first), paged.
/// Private repositories only with `repo`.
pub(super) fn list_user_repos(ctx: &Ctx) -> Response {
    let doc =
        "https://docs.github.com/rest/repos/repos#list-repositories-for-the-authenticated-user";
    if ctx.scopes.is_none() {
        return requires_auth(doc);
    }
    let visibility = ctx.r.query_get("visibility").unwrap_or("all");
    if !matches!(visibility, "all" | "public" | "private") {
        return validation_failed(
            doc,
            json!([{ "resource": "Repository", "field": "visibility", "code": "invalid" }]),
        );
    }
    let mut repos: Vec<(String, &RepoRow)> = visible_repos(ctx, true)
        .into_iter()
        .filter(|(_, r)| visibility == "all" || r.private == (visibility == "private"))
        .collect();
    match ctx.r.query_get("sort").unwrap_or("full_name") {
        "full_name" => repos.sort_by_key(|(o, r)| format!("{o}/{}", r.name).to_lowercase()),
        "created" | "updated" | "pushed" => repos.sort_by_key(|(_, r)| r.pushed_days_ago),
        _ => {
            return validation_failed(
                doc,
                json!([{ "resource": "Repository", "field": "sort", "code": "invalid" }]),
            )
        }
    }
    let page = paginate(ctx.r, repos.len());
    let items: Vec<Value> = repos[page.start..page.end]
        .iter()
        .map(|(o, r)| repo_json(ctx, o, r, true))
        .collect();
    with_link(ctx, json_response(200, &Value::Array(items)), &page)
}

/// A search answer: items and counts, paged, with the search rate limit's headers.
fn search_answer(ctx: &Ctx, items: Vec<Value>) -> Response {
    let total = items.len();
    let page = paginate(ctx.r, total.min(1000));
    let resp = with_link(
        ctx,
        json_response(
            200,
            &json!({ "total_count": total, "incomplete_results": false, "items": items[page.start..page.end].to_vec() }),
        ),
        &page,
    );
    super::search_limits(ctx, resp)
}

fn missing_query(doc: &str) -> Response {
    validation_failed(
        doc,
        json!([{ "resource": "Search", "field": "q", "code": "missing" }]),
    )
}

/// `GET /search/repositories`: words in the name or description, `user:`/`org:`,
/// `language:`, `stars:>N`/`>=N`/`<N`, `fork:true`, `archived:`, `is:public`/`is:private`;
/// `sort` stars/forks/updated, else best match.
pub(super) fn search_repositories(ctx: &Ctx) -> Response {
    let doc = "https://docs.github.com/rest/search/search#search-repositories";
    let Some(q) = ctx.r.query_get("q").filter(|q| !q.trim().is_empty()) else {
        return missing_query(doc);
    };
    let mut hits = visible_repos(ctx, false);
    let mut words = Vec::new();
    let mut forks = false;
    for term in search_terms(q) {
        let lower = term.to_ascii_lowercase();
        let Some((key, value)) = lower.split_once(':') else {
            words.push(lower);
            continue;
        };
        let value = value.to_string();
        match key {
            "user" | "org" => hits.retain(|(o, _)| o.eq_ignore_ascii_case(&value)),
            "language" => hits.retain(|(_, r)| r.language.eq_ignore_ascii_case(&value)),
            "stars" => {
                let (op, n) = if let Some(n) = value.strip_prefix(">=") {
                    (">=", n)
                } else if let Some(n) = value.strip_prefix('>') {
                    (">", n)
                } else if let Some(n) = value.strip_prefix('<') {
                    ("<", n)
                } else {
                    ("=", value.as_str())
                };
                let Ok(n) = n.parse::<u64>() else {
                    return validation_failed(
                        doc,
                        json!([{ "message": format!("The stars qualifier value {value} is not valid."), "resource": "Search", "field": "q", "code": "invalid" }]),
                    );
                };
                hits.retain(|(_, r)| match op {
                    ">=" => r.stars >= n,
                    ">" => r.stars > n,
                    "<" => r.stars < n,
                    _ => r.stars == n,
                });
            }
            "fork" => forks = matches!(value.as_str(), "true" | "only"),
            "archived" => hits.retain(|(_, r)| r.archived == (value == "true")),
            "is" => hits.retain(|(_, r)| r.private == (value == "private")),
            _ => {}
        }
    }
    if !forks {
        hits.retain(|(_, r)| !r.fork);
    }
    hits.retain(|(_, r)| {
        let text = format!(
            "{} {}: a repository served by the keyward fake upstream",
            r.name, r.name
        )
        .to_ascii_lowercase();
        words.iter().all(|w| text.contains(w.as_str()))
    });
    match ctx.r.query_get("sort") {
        Some("updated") => hits.sort_by_key(|(_, r)| r.pushed_days_ago),
        // The fake has no fork counts of its own: forks follow stars.
        Some("stars" | "forks") | None => hits.sort_by_key(|(_, r)| std::cmp::Reverse(r.stars)),
        Some(_) => {
            return validation_failed(
                doc,
                json!([{ "resource": "Search", "field": "sort", "code": "invalid" }]),
            )
        }
    }
    let items = hits
        .iter()
        .map(|(o, r)| {
            let mut v = repo_json(ctx, o, r, false);
            if let Value::Object(obj) = &mut v {
                obj.insert("score".into(), json!(1.0));
            }
            v
        })
        .collect();
    search_answer(ctx, items)
}

/// A test of a file's path (a `path:`, `filename:`, `extension:` or `language:` qualifier).
type PathFilter = Box<dyn Fn(&str) -> bool>;

/// `GET /search/code`: signed-in only; words in a file's text, `repo:`, `path:`,
/// `filename:`, `extension:`, `language:` (rust, markdown, toml).
pub(super) fn search_code(ctx: &Ctx) -> Response {
    let doc = "https://docs.github.com/rest/search/search#search-code";
    if ctx.scopes.is_none() {
        return requires_auth(doc);
    }
    let Some(q) = ctx.r.query_get("q").filter(|q| !q.trim().is_empty()) else {
        return missing_query(doc);
    };
    let mut repos: Vec<(String, String)> = Vec::new();
    let mut words = Vec::new();
    let mut path_filters: Vec<PathFilter> = Vec::new();
    for term in search_terms(q) {
        let lower = term.to_ascii_lowercase();
        match lower.split_once(':') {
            Some(("repo", _)) => match term[5..].split_once('/') {
                Some((o, r)) => repos.push((o.to_string(), r.to_string())),
                None => return missing_query(doc),
            },
            Some(("path", p)) => {
                let p = p.trim_matches('/').to_string();
                path_filters.push(Box::new(move |path: &str| path.starts_with(&p)));
            }
            Some(("filename", f)) => {
                let f = f.to_string();
                path_filters.push(Box::new(move |path: &str| {
                    path.rsplit('/').next() == Some(f.as_str())
                }));
            }
            Some(("extension", e)) => {
                let suffix = format!(".{e}");
                path_filters.push(Box::new(move |path: &str| path.ends_with(&suffix)));
            }
            Some(("language", l)) => {
                let suffix = match l {
                    "rust" => ".rs",
                    "markdown" => ".md",
                    "toml" => ".toml",
                    _ => ".none",
                };
                path_filters.push(Box::new(move |path: &str| path.ends_with(suffix)));
            }
            Some(("user" | "org" | "in", _)) => {}
            _ => words.push(lower),
        }
    }
    if repos.iter().any(|(_, r)| r == "private-repo") {
        return validation_failed(
            doc,
            json!([{ "message": "The listed users and repositories cannot be searched either because the resources do not exist or you do not have permission to view them.", "resource": "Search", "field": "q", "code": "invalid" }]),
        );
    }
    if repos.is_empty() {
        repos = vec![
            ("octocat".into(), "hello-world".into()),
            ("octocat".into(), "spoon-knife".into()),
        ];
    }
    let mut items = Vec::new();
    for (owner, repo) in &repos {
        if repo == "empty" {
            continue;
        }
        for (path, bytes) in gd::files(owner, repo, "main") {
            let Ok(text) = std::str::from_utf8(&bytes) else {
                continue;
            };
            let text = text.to_ascii_lowercase();
            if !words.iter().all(|w| text.contains(w.as_str()))
                || !path_filters.iter().all(|f| f(&path))
            {
                continue;
            }
            let sha = super::fake_git_sha(owner, repo, "main", &path);
            let api = &ctx.api;
            items.push(json!({
                "name": path.rsplit('/').next().unwrap_or(&path),
                "path": path,
                "sha": sha,
                "url": format!("{api}/repos/{owner}/{repo}/contents/{path}?ref={}", fake_sha(&[owner, repo, "commit", "40"])),
                "git_url": format!("{api}/repos/{owner}/{repo}/git/blobs/{sha}"),
                "html_url": format!("https://github.com/{owner}/{repo}/blob/{}/{path}", fake_sha(&[owner, repo, "commit", "40"])),
                "repository": gd::repository(api, owner, repo),
                "score": 1.0
            }));
        }
    }
    search_answer(ctx, items)
}
