//! GitHub fixtures: users, repositories, pull requests, issues and files, generated
//! deterministically from (owner, repo, number) in the shape of the real REST API.
//!
//! Every repository (except the special names in `github.rs`) has pull requests #1–#25 open,
//! #26–#30 closed (#26–#28 merged), issues #31–#40 open and #41–#45 closed; issues created
//! through the API get #46 and up. The repository `empty` has none of these.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use serde_json::{json, Value};

use super::{fake_sha, fnv};

pub const OPEN_PRS: u64 = 25;
pub const LAST_PR: u64 = 30;
pub const LAST_ISSUE: u64 = 45;

/// Issues, pull requests, comments, reviews and merges made through the API.
#[derive(Default)]
pub(crate) struct GithubData {
    /// Issues and pull requests created through the API, numbered after the fixed ones.
    pub created: HashMap<(String, String), Vec<IssueMeta>>,
    pub extra_comments: HashMap<(String, String, u64), u64>,
    pub next_comment_id: u64,
    /// Fixed issues and pull requests as changed through the API (`PATCH …/issues/{n}`, merge).
    pub edited: HashMap<(String, String, u64), IssueMeta>,
    /// Repositories with any of the above: their lists are built from the metadata, not the
    /// (cached) fixed answers.
    pub touched: std::collections::HashSet<(String, String)>,
    /// Bumped by every change, so cached answers of changed data are not served.
    pub generation: u64,
    /// Reviews submitted through the API, per pull request.
    pub reviews: HashMap<(String, String, u64), Vec<Value>>,
    pub next_review_id: u64,
    /// Merge commits, newest last, per (owner, repo, base branch).
    pub merges: HashMap<(String, String, String), Vec<MergeCommit>>,
}

/// A commit a merge through the API put on a base branch.
pub(crate) struct MergeCommit {
    pub sha: String,
    pub message: String,
    pub time: i64,
}

#[derive(Clone, Debug)]
pub(crate) struct Label {
    pub name: String,
    pub color: String,
    pub description: String,
}

/// Everything an issue (or the issue side of a pull request) is made from.
#[derive(Clone, Debug)]
pub(crate) struct IssueMeta {
    pub number: u64,
    pub title: String,
    pub body: String,
    pub state: &'static str,
    pub state_reason: Option<&'static str>,
    pub author: String,
    pub labels: Vec<Label>,
    pub assignees: Vec<String>,
    pub comments: u64,
    pub created: i64,
    pub updated: i64,
    pub closed: Option<i64>,
    pub pull: Option<PullMeta>,
}

#[derive(Clone, Debug)]
pub(crate) struct PullMeta {
    pub base: String,
    pub head: String,
    pub merged: bool,
    pub draft: bool,
    pub reviewers: Vec<String>,
}

const PR_TITLES: &[&str] = &[
    "Fix panic when the config file is empty",
    "Add retry with exponential backoff to the HTTP client",
    "Bump serde from 1.0.190 to 1.0.210",
    "Document the vault storage format",
    "Speed up manifest loading by caching compiled schemas",
    "Handle 429 responses with Retry-After",
    "Refactor token refresh into a single-flight helper",
    "Support GitHub Enterprise base URLs",
    "Add integration tests for the device flow",
    "Redact secrets from error messages",
    "Make the audit log append-only",
    "Use rustls instead of native-tls",
];

const ISSUE_TITLES: &[&str] = &[
    "Crash on startup when HOME is not set",
    "Login loop after the refresh token expires",
    "Support Slack Enterprise Grid workspaces",
    "Calendar events show in the wrong time zone",
    "Add a --json flag to status",
    "Document how to rotate the master key",
    "Search results are missing closed pull requests",
    "Feature request: list starred repositories",
];

pub(crate) const PEOPLE: &[&str] = &["octocat", "hubot", "monalisa", "kw-tester", "defunkt"];

pub(crate) fn label_catalog(name: &str) -> Label {
    let (color, description) = match name {
        "bug" => ("d73a4a", "Something isn't working"),
        "enhancement" => ("a2eeef", "New feature or request"),
        "documentation" => ("0075ca", "Improvements or additions to documentation"),
        "good first issue" => ("7057ff", "Good for newcomers"),
        "help wanted" => ("008672", "Extra attention is needed"),
        _ => ("ededed", ""),
    };
    Label {
        name: name.to_string(),
        color: color.to_string(),
        description: description.to_string(),
    }
}

fn labels_for(n: u64) -> Vec<Label> {
    let mut out = Vec::new();
    if n.is_multiple_of(3) {
        out.push(label_catalog("bug"));
    }
    if n % 4 == 1 {
        out.push(label_catalog("enhancement"));
    }
    if n % 5 == 2 {
        out.push(label_catalog("documentation"));
    }
    if n.is_multiple_of(7) {
        out.push(label_catalog("good first issue"));
    }
    out
}

/// 2024-01-01T00:00:00Z
pub(crate) const EPOCH: i64 = 1_704_067_200;

pub(crate) fn iso(secs: i64) -> String {
    DateTime::<Utc>::from_timestamp(secs, 0)
        .unwrap_or_default()
        .format("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

pub(crate) fn user_id(login: &str) -> u64 {
    1000 + fnv(&[login]) % 90_000_000
}

/// State and base branch of pull request `n`, without building the rest (hot path of benches).
pub(crate) fn pull_brief(repo: &str, n: u64) -> Option<(&'static str, &'static str)> {
    if repo == "empty" || n == 0 || n > LAST_PR {
        return None;
    }
    let state = if n > OPEN_PRS { "closed" } else { "open" };
    let base = if n.is_multiple_of(4) {
        "develop"
    } else {
        "main"
    };
    Some((state, base))
}

/// The fixed issue or pull request `n` of a repository, if it exists.
pub(crate) fn fixed_issue(owner: &str, repo: &str, n: u64) -> Option<IssueMeta> {
    if repo == "empty" || n == 0 || n > LAST_ISSUE {
        return None;
    }
    let h = fnv(&[owner, repo, &n.to_string()]);
    let created = EPOCH + (n as i64) * 37 * 3600 + (h % 3600) as i64;
    let updated = created + 5 * 3600 + (h % 7200) as i64;
    let author = PEOPLE[(n as usize) % PEOPLE.len()].to_string();
    let assignees = if n.is_multiple_of(2) {
        vec![PEOPLE[(n as usize + 1) % PEOPLE.len()].to_string()]
    } else {
        Vec::new()
    };
    let is_pr = n <= LAST_PR;
    let closed = if is_pr { n > OPEN_PRS } else { n > 40 };
    let pr_base = pull_brief(repo, n).map(|(_, b)| b).unwrap_or("main");
    let title = if is_pr {
        PR_TITLES[(n as usize - 1) % PR_TITLES.len()].to_string()
    } else {
        ISSUE_TITLES[(n as usize - 1) % ISSUE_TITLES.len()].to_string()
    };
    let body = if is_pr {
        format!(
            "## Summary\n\n{title}.\n\nThis change touches the `{repo}` crate only. Reviewers: please look at the error handling in particular.\n\n## Testing\n\n- [x] `cargo test`\n- [x] `cargo clippy -- -D warnings`\n- [ ] manual test against a GitHub Enterprise instance\n\nFixes #{}",
            LAST_PR + 1 + (n % 10)
        ) + &pr_details(repo, n)
    } else {
        format!(
            "### What happened\n\n{title}.\n\n### Steps to reproduce\n\n1. Install keyward 0.1.{n}\n2. Run `keyward serve`\n3. Call the tool from the agent\n\n### Expected\n\nIt works.\n"
        )
    };
    let pull = is_pr.then(|| PullMeta {
        base: pr_base.to_string(),
        head: format!("feature/change-{n}"),
        merged: (26..=28).contains(&n),
        draft: n.is_multiple_of(9),
        reviewers: if n % 3 == 1 {
            vec![PEOPLE[(n as usize + 2) % PEOPLE.len()].to_string()]
        } else {
            Vec::new()
        },
    });
    Some(IssueMeta {
        number: n,
        title,
        body,
        state: if closed { "closed" } else { "open" },
        state_reason: if closed && !is_pr {
            Some("completed")
        } else {
            None
        },
        author,
        labels: labels_for(n),
        assignees,
        comments: n % 6,
        created,
        updated,
        closed: closed.then_some(updated),
        pull,
    })
}

/// The long tail of a pull request description: a per-file change list and a details block,
/// so a pull request object weighs about what GitHub's does (~20 KB).
fn pr_details(repo: &str, n: u64) -> String {
    let mut out = String::from("\n\n## Changes\n\n");
    for i in 0..24 {
        out.push_str(&format!(
            "- `src/{repo}/module_{i:02}.rs`: adjust the handling of edge case {} and add a regression test\n",
            n * 100 + i
        ));
    }
    out.push_str("\n<details>\n<summary>Benchmark results</summary>\n\n| bench | before | after |\n|---|---|---|\n");
    for i in 0..16 {
        out.push_str(&format!(
            "| parse_{i} | {}.{} µs | {}.{} µs |\n",
            10 + i,
            n % 10,
            8 + i,
            (n + 3) % 10
        ));
    }
    out.push_str("\n</details>\n");
    out
}

pub(crate) fn user(api: &str, login: &str) -> Value {
    let id = user_id(login);
    json!({
        "login": login,
        "id": id,
        "node_id": format!("MDQ6VXNlcj{id}"),
        "avatar_url": format!("https://avatars.githubusercontent.com/u/{id}?v=4"),
        "gravatar_id": "",
        "url": format!("{api}/users/{login}"),
        "html_url": format!("https://github.com/{login}"),
        "followers_url": format!("{api}/users/{login}/followers"),
        "following_url": format!("{api}/users/{login}/following{{/other_user}}"),
        "gists_url": format!("{api}/users/{login}/gists{{/gist_id}}"),
        "starred_url": format!("{api}/users/{login}/starred{{/owner}}{{/repo}}"),
        "subscriptions_url": format!("{api}/users/{login}/subscriptions"),
        "organizations_url": format!("{api}/users/{login}/orgs"),
        "repos_url": format!("{api}/users/{login}/repos"),
        "events_url": format!("{api}/users/{login}/events{{/privacy}}"),
        "received_events_url": format!("{api}/users/{login}/received_events"),
        "type": "User",
        "user_view_type": "public",
        "site_admin": false
    })
}

/// `GET /user` for the authenticated user; private fields only with `user`/`read:user`.
pub(crate) fn authenticated_user(api: &str, private: bool) -> Value {
    let mut v = user(api, super::GITHUB_LOGIN);
    let extra = json!({
        "name": "Keyward Tester",
        "company": "@acme",
        "blog": "https://example.com/blog",
        "location": "Berlin, Germany",
        "email": "tester@example.com",
        "hireable": null,
        "bio": "I test things.",
        "twitter_username": null,
        "notification_email": "tester@example.com",
        "public_repos": 8,
        "public_gists": 1,
        "followers": 20,
        "following": 3,
        "created_at": "2015-03-04T10:11:12Z",
        "updated_at": "2024-11-02T08:09:10Z"
    });
    if let (Value::Object(m), Value::Object(e)) = (&mut v, extra) {
        m.extend(e);
        if private {
            m.insert("private_gists".into(), json!(2));
            m.insert("total_private_repos".into(), json!(4));
            m.insert("owned_private_repos".into(), json!(3));
            m.insert("disk_usage".into(), json!(20_480));
            m.insert("collaborators".into(), json!(1));
            m.insert("two_factor_authentication".into(), json!(true));
            m.insert(
                "plan".into(),
                json!({ "name": "pro", "space": 976_562_499, "collaborators": 0, "private_repos": 9999 }),
            );
        }
    }
    v
}

pub(crate) fn repository(api: &str, owner: &str, name: &str) -> Value {
    let id = 100_000 + fnv(&[owner, name]) % 800_000_000;
    let full = format!("{owner}/{name}");
    let r = format!("{api}/repos/{full}");
    let mut v = json!({
        "id": id,
        "node_id": format!("R_kgDO{id}"),
        "name": name,
        "full_name": full,
        "private": false,
        "owner": user(api, owner),
        "html_url": format!("https://github.com/{full}"),
        "description": format!("{name}: a repository served by the keyward fake upstream"),
        "fork": false,
        "url": r
    });
    const URLS: &[(&str, &str)] = &[
        ("forks_url", "/forks"),
        ("keys_url", "/keys{/key_id}"),
        ("collaborators_url", "/collaborators{/collaborator}"),
        ("teams_url", "/teams"),
        ("hooks_url", "/hooks"),
        ("issue_events_url", "/issues/events{/number}"),
        ("events_url", "/events"),
        ("assignees_url", "/assignees{/user}"),
        ("branches_url", "/branches{/branch}"),
        ("tags_url", "/tags"),
        ("blobs_url", "/git/blobs{/sha}"),
        ("git_tags_url", "/git/tags{/sha}"),
        ("git_refs_url", "/git/refs{/sha}"),
        ("trees_url", "/git/trees{/sha}"),
        ("statuses_url", "/statuses/{sha}"),
        ("languages_url", "/languages"),
        ("stargazers_url", "/stargazers"),
        ("contributors_url", "/contributors"),
        ("subscribers_url", "/subscribers"),
        ("subscription_url", "/subscription"),
        ("commits_url", "/commits{/sha}"),
        ("git_commits_url", "/git/commits{/sha}"),
        ("comments_url", "/comments{/number}"),
        ("issue_comment_url", "/issues/comments{/number}"),
        ("contents_url", "/contents/{+path}"),
        ("compare_url", "/compare/{base}...{head}"),
        ("merges_url", "/merges"),
        ("archive_url", "/{archive_format}{/ref}"),
        ("downloads_url", "/downloads"),
        ("issues_url", "/issues{/number}"),
        ("pulls_url", "/pulls{/number}"),
        ("milestones_url", "/milestones{/number}"),
        (
            "notifications_url",
            "/notifications{?since,all,participating}",
        ),
        ("labels_url", "/labels{/name}"),
        ("releases_url", "/releases{/id}"),
        ("deployments_url", "/deployments"),
    ];
    if let Value::Object(m) = &mut v {
        for (key, suffix) in URLS {
            m.insert((*key).to_string(), Value::String(format!("{r}{suffix}")));
        }
    }
    let rest = json!({
        "created_at": "2019-05-06T07:08:09Z",
        "updated_at": "2024-12-01T10:00:00Z",
        "pushed_at": "2024-12-02T11:00:00Z",
        "git_url": format!("git://github.com/{full}.git"),
        "ssh_url": format!("git@github.com:{full}.git"),
        "clone_url": format!("https://github.com/{full}.git"),
        "svn_url": format!("https://github.com/{full}"),
        "homepage": "https://example.com",
        "size": 4242,
        "stargazers_count": 1337,
        "watchers_count": 1337,
        "language": "Rust",
        "has_issues": true,
        "has_projects": true,
        "has_downloads": true,
        "has_wiki": false,
        "has_pages": false,
        "has_discussions": true,
        "forks_count": 42,
        "mirror_url": null,
        "archived": false,
        "disabled": false,
        "open_issues_count": 35,
        "license": {
            "key": "apache-2.0",
            "name": "Apache License 2.0",
            "spdx_id": "Apache-2.0",
            "url": format!("{api}/licenses/apache-2.0"),
            "node_id": "MDc6TGljZW5zZTI="
        },
        "allow_forking": true,
        "is_template": false,
        "web_commit_signoff_required": false,
        "topics": ["oauth", "mcp", "rust"],
        "visibility": "public",
        "forks": 42,
        "open_issues": 35,
        "watchers": 1337,
        "default_branch": "main"
    });
    if let (Value::Object(a), Value::Object(b)) = (&mut v, rest) {
        a.extend(b);
    }
    v
}

fn label_json(api: &str, owner: &str, repo: &str, l: &Label) -> Value {
    let id = 200_000 + fnv(&[owner, repo, &l.name]) % 900_000_000;
    let encoded = l.name.replace(' ', "%20");
    json!({
        "id": id,
        "node_id": format!("LA_kwDO{id}"),
        "url": format!("{api}/repos/{owner}/{repo}/labels/{encoded}"),
        "name": l.name,
        "color": l.color,
        "default": matches!(l.name.as_str(), "bug" | "enhancement" | "documentation" | "good first issue" | "help wanted"),
        "description": l.description
    })
}

fn milestone_json(api: &str, owner: &str, repo: &str) -> Value {
    json!({
        "url": format!("{api}/repos/{owner}/{repo}/milestones/1"),
        "html_url": format!("https://github.com/{owner}/{repo}/milestone/1"),
        "labels_url": format!("{api}/repos/{owner}/{repo}/milestones/1/labels"),
        "id": 1_002_604,
        "node_id": "MDk6TWlsZXN0b25lMTAwMjYwNA==",
        "number": 1,
        "state": "open",
        "title": "v1.0",
        "description": "The first stable release",
        "creator": user(api, "octocat"),
        "open_issues": 4,
        "closed_issues": 8,
        "created_at": "2024-01-10T09:00:00Z",
        "updated_at": "2024-03-01T09:00:00Z",
        "closed_at": null,
        "due_on": "2025-06-30T07:00:00Z"
    })
}

fn reactions(url: String, n: u64) -> Value {
    json!({
        "url": url,
        "total_count": n % 3 + n % 2,
        "+1": n % 3,
        "-1": 0,
        "laugh": 0,
        "hooray": n % 2,
        "confused": 0,
        "heart": 0,
        "rocket": 0,
        "eyes": 0
    })
}

fn issue_id(owner: &str, repo: &str, n: u64) -> u64 {
    1_000_000_000 + fnv(&[owner, repo, "issue", &n.to_string()]) % 1_000_000_000
}

/// An issue object (pull requests carry `pull_request`).
pub(crate) fn issue_json(
    api: &str,
    owner: &str,
    repo: &str,
    m: &IssueMeta,
    extra_comments: u64,
) -> Value {
    let n = m.number;
    let r = format!("{api}/repos/{owner}/{repo}");
    let id = issue_id(owner, repo, n);
    let assignees: Vec<Value> = m.assignees.iter().map(|a| user(api, a)).collect();
    let mut v = json!({
        "url": format!("{r}/issues/{n}"),
        "repository_url": r,
        "labels_url": format!("{r}/issues/{n}/labels{{/name}}"),
        "comments_url": format!("{r}/issues/{n}/comments"),
        "events_url": format!("{r}/issues/{n}/events"),
        "html_url": format!("https://github.com/{owner}/{repo}/{}/{n}", if m.pull.is_some() { "pull" } else { "issues" }),
        "id": id,
        "node_id": format!("I_kwDO{id}"),
        "number": n,
        "title": m.title,
        "user": user(api, &m.author),
        "labels": m.labels.iter().map(|l| label_json(api, owner, repo, l)).collect::<Vec<_>>(),
        "state": m.state,
        "locked": false,
        "assignee": assignees.first().cloned().unwrap_or(Value::Null),
        "assignees": assignees,
        "milestone": if n.is_multiple_of(5) { milestone_json(api, owner, repo) } else { Value::Null },
        "comments": m.comments + extra_comments,
        "created_at": iso(m.created),
        "updated_at": iso(m.updated),
        "closed_at": m.closed.map(iso),
        "author_association": if m.author == owner { "OWNER" } else { "CONTRIBUTOR" },
        "type": null,
        "active_lock_reason": null,
        "sub_issues_summary": { "total": 0, "completed": 0, "percent_completed": 0 },
        "body": m.body,
        "closed_by": if m.closed.is_some() { user(api, owner) } else { Value::Null },
        "reactions": reactions(format!("{r}/issues/{n}/reactions"), n),
        "timeline_url": format!("{r}/issues/{n}/timeline"),
        "performed_via_github_app": null,
        "state_reason": m.state_reason
    });
    if let (Some(p), Value::Object(obj)) = (&m.pull, &mut v) {
        obj.insert("draft".into(), json!(p.draft));
        obj.insert(
            "pull_request".into(),
            json!({
                "url": format!("{r}/pulls/{n}"),
                "html_url": format!("https://github.com/{owner}/{repo}/pull/{n}"),
                "diff_url": format!("https://github.com/{owner}/{repo}/pull/{n}.diff"),
                "patch_url": format!("https://github.com/{owner}/{repo}/pull/{n}.patch"),
                "merged_at": if p.merged { m.closed.map(iso) } else { None }
            }),
        );
    }
    v
}

fn branch_json(api: &str, owner: &str, repo: &str, branch: &str, sha: &str) -> Value {
    json!({
        "label": format!("{owner}:{branch}"),
        "ref": branch,
        "sha": sha,
        "user": user(api, owner),
        "repo": repository(api, owner, repo)
    })
}

/// A pull request object; `full` adds the fields only `GET …/pulls/{n}` has.
pub(crate) fn pull_json(
    api: &str,
    owner: &str,
    repo: &str,
    m: &IssueMeta,
    full: bool,
    extra_comments: u64,
) -> Value {
    let n = m.number;
    let p = m.pull.clone().unwrap_or(PullMeta {
        base: "main".into(),
        head: format!("feature/change-{n}"),
        merged: false,
        draft: false,
        reviewers: Vec::new(),
    });
    let r = format!("{api}/repos/{owner}/{repo}");
    let html = format!("https://github.com/{owner}/{repo}/pull/{n}");
    let id = 2_000_000_000 + fnv(&[owner, repo, "pull", &n.to_string()]) % 1_000_000_000;
    let head_sha = fake_sha(&[owner, repo, "head", &n.to_string()]);
    let base_sha = fake_sha(&[owner, repo, "base", &p.base]);
    let merged_at = if p.merged { m.closed.map(iso) } else { None };
    let assignees: Vec<Value> = m.assignees.iter().map(|a| user(api, a)).collect();
    let mut v = json!({
        "url": format!("{r}/pulls/{n}"),
        "id": id,
        "node_id": format!("PR_kwDO{id}"),
        "html_url": html,
        "diff_url": format!("{html}.diff"),
        "patch_url": format!("{html}.patch"),
        "issue_url": format!("{r}/issues/{n}"),
        "number": n,
        "state": m.state,
        "locked": false,
        "title": m.title,
        "user": user(api, &m.author),
        "body": m.body,
        "created_at": iso(m.created),
        "updated_at": iso(m.updated),
        "closed_at": m.closed.map(iso),
        "merged_at": merged_at,
        "merge_commit_sha": fake_sha(&[owner, repo, "merge", &n.to_string()]),
        "assignee": assignees.first().cloned().unwrap_or(Value::Null),
        "assignees": assignees,
        "requested_reviewers": p.reviewers.iter().map(|u| user(api, u)).collect::<Vec<_>>(),
        "requested_teams": [],
        "labels": m.labels.iter().map(|l| label_json(api, owner, repo, l)).collect::<Vec<_>>(),
        "milestone": if n.is_multiple_of(5) { milestone_json(api, owner, repo) } else { Value::Null }
    });
    let links = json!({
        "draft": p.draft,
        "commits_url": format!("{r}/pulls/{n}/commits"),
        "review_comments_url": format!("{r}/pulls/{n}/comments"),
        "review_comment_url": format!("{r}/pulls/comments{{/number}}"),
        "comments_url": format!("{r}/issues/{n}/comments"),
        "statuses_url": format!("{r}/statuses/{head_sha}"),
        "head": branch_json(api, owner, repo, &p.head, &head_sha),
        "base": branch_json(api, owner, repo, &p.base, &base_sha),
        "_links": {
            "self": { "href": format!("{r}/pulls/{n}") },
            "html": { "href": html },
            "issue": { "href": format!("{r}/issues/{n}") },
            "comments": { "href": format!("{r}/issues/{n}/comments") },
            "review_comments": { "href": format!("{r}/pulls/{n}/comments") },
            "review_comment": { "href": format!("{r}/pulls/comments{{/number}}") },
            "commits": { "href": format!("{r}/pulls/{n}/commits") },
            "statuses": { "href": format!("{r}/statuses/{head_sha}") }
        },
        "author_association": if m.author == owner { "OWNER" } else { "CONTRIBUTOR" },
        "auto_merge": null,
        "active_lock_reason": null
    });
    if let (Value::Object(a), Value::Object(b)) = (&mut v, links) {
        a.extend(b);
    }
    if full {
        if let Value::Object(obj) = &mut v {
            let more = json!({
                "merged": p.merged,
                "mergeable": if m.state == "open" { Value::Bool(!n.is_multiple_of(8)) } else { Value::Null },
                "rebaseable": m.state == "open",
                "mergeable_state": if m.state != "open" { "unknown" } else if n.is_multiple_of(8) { "dirty" } else { "clean" },
                "merged_by": if p.merged { user(api, owner) } else { Value::Null },
                "comments": m.comments + extra_comments,
                "review_comments": n % 4,
                "maintainer_can_modify": false,
                "commits": 1 + n % 5,
                "additions": 10 * n + 3,
                "deletions": 2 * n + 1,
                "changed_files": 1 + n % 7
            });
            if let Value::Object(more) = more {
                obj.extend(more);
            }
        }
    }
    v
}

/// The files of every repository, by path (directories are implied).
pub(crate) fn files(owner: &str, repo: &str, git_ref: &str) -> Vec<(String, Vec<u8>)> {
    let mut png = vec![
        0x89, b'P', b'N', b'G', 0x0d, 0x0a, 0x1a, 0x0a, 0, 0, 0, 0x0d,
    ];
    png.extend((0..500u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8));
    vec![
        (
            "README.md".into(),
            format!(
                "# {repo}\n\nThis is the `{git_ref}` branch of {owner}/{repo}.\n\nIt is served by the keyward fake upstream for tests.\n\n## Usage\n\n```sh\ncargo run -- --help\n```\n"
            )
            .into_bytes(),
        ),
        (
            "Cargo.toml".into(),
            format!("[package]\nname = \"{repo}\"\nversion = \"0.1.0\"\nedition = \"2021\"\n\n[dependencies]\nserde = \"1\"\n").into_bytes(),
        ),
        ("LICENSE".into(), b"Apache License\nVersion 2.0, January 2004\nhttp://www.apache.org/licenses/\n".to_vec()),
        (
            "src/main.rs".into(),
            b"fn main() {\n    println!(\"Hello, world!\");\n}\n".to_vec(),
        ),
        (
            "src/lib.rs".into(),
            b"//! The library.\n\npub mod util;\n\npub fn add(a: i32, b: i32) -> i32 {\n    a + b\n}\n".to_vec(),
        ),
        (
            "src/util/mod.rs".into(),
            b"pub mod strings;\n".to_vec(),
        ),
        (
            "src/util/strings.rs".into(),
            "pub fn shout(s: &str) -> String {\n    s.to_uppercase() + \"!\"\n}\n\n// \u{00e9}t\u{00e9} \u{2014} unicode survives base64.\n".as_bytes().to_vec(),
        ),
        (
            "docs/guide.md".into(),
            "# Guide\n\n".bytes().chain((1..=200).flat_map(|i| format!("Line {i} of a long guide that wraps the base64 output over many lines.\n").into_bytes())).collect(),
        ),
        ("assets/logo.png".into(), png),
    ]
}

/// A file over 1 MB: GitHub answers `encoding: "none"` and an empty `content`.
pub const LARGE_FILE: (&str, u64) = ("data/large.csv", 3_145_728);
