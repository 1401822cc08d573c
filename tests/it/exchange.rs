//! The RFC 8693 token-exchange endpoint (`POST /oauth/token`, `[exchange] enabled`) through the
//! real binary: `keyward clients add|list|remove`, every success and error case, one user's
//! credential never yielding another's token, a storm of exchanges on an expiring token making
//! one refresh, the rate limit, the audit log and `status`, RFC 8414 metadata, and the example
//! backend in `examples/` run against the fake upstream. Error bodies and the server's log are
//! grepped for tokens (the success body is the one answer meant to carry one).

use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use crate::remote_auth::Remote;
use crate::server_stateless::HttpProcess;
use crate::support::canary::{assert_no_canary, audit_json};
use crate::support::home::{expired_token_json, home_with, status, token, Kw};
use crate::support::FakeUpstream;

pub(crate) const GRANT: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
pub(crate) const ACCESS: &str = "urn:ietf:params:oauth:token-type:access_token";

/// A home with GitHub connections for alice and bob, their API keys, a registered client and
/// `keyward serve --http` with the endpoint on.
struct Setup {
    up: FakeUpstream,
    kw: Kw,
    server: Option<HttpProcess>,
    alice: String,
    bob: String,
    client: Registered,
}

pub(crate) struct Registered {
    id: String,
    secret: String,
}

impl Setup {
    /// With the endpoint on, and `exchange_toml` added to its `[exchange]` table.
    async fn start(exchange_toml: &str) -> Setup {
        Setup::configured(Some(exchange_toml)).await
    }

    /// `None`: no `[exchange]` table, the endpoint off.
    async fn configured(exchange_toml: Option<&str>) -> Setup {
        keyward::server::install_crypto_provider();
        let up = FakeUpstream::start().await;
        let kw = home_with(&up, &[("alice", "default"), ("bob", "default")]);
        if let Some(extra) = exchange_toml {
            enable(&kw, extra);
        }
        let alice = add_user(&kw, "alice");
        let bob = add_user(&kw, "bob");
        let client = add_client(
            &kw,
            &[
                "backend",
                "--providers",
                "github",
                "--scopes",
                "repo read:user",
            ],
        );
        let server = HttpProcess::start(&kw).await;
        Setup {
            up,
            kw,
            server: Some(server),
            alice,
            bob,
            client,
        }
    }

    fn base(&self) -> &str {
        &self.server.as_ref().expect("running").base
    }

    /// An exchange with HTTP Basic client credentials.
    async fn exchange(&self, form: &[(&str, &str)]) -> Answer {
        post(self.base(), Some(&self.client), form).await
    }

    /// The usual request for `subject`'s GitHub token.
    async fn github_for(&self, subject: &str) -> Answer {
        self.exchange(&[
            ("grant_type", GRANT),
            ("subject_token", subject),
            ("subject_token_type", ACCESS),
            ("audience", "github"),
        ])
        .await
    }

    async fn stop(mut self) {
        self.server.take().expect("running").stop().await;
    }
}

/// `[exchange] enabled = true` and `extra` lines in the home's config.toml.
pub(crate) fn enable(kw: &Kw, extra: &str) {
    let path = kw.home().join("config.toml");
    let mut text = std::fs::read_to_string(&path).unwrap_or_default();
    text.push_str("\n[exchange]\nenabled = true\n");
    text.push_str(extra);
    std::fs::write(&path, text).unwrap();
}

fn add_user(kw: &Kw, name: &str) -> String {
    kw.ok(&["users", "add", name], "")
        .stdout()
        .trim()
        .to_string()
}

/// `keyward clients add ARGS…`, its two printed lines.
pub(crate) fn add_client(kw: &Kw, args: &[&str]) -> Registered {
    let mut full = vec!["clients", "add"];
    full.extend_from_slice(args);
    let out = kw.ok(&full, "").stdout();
    let line = |key: &str| {
        out.lines()
            .find_map(|l| l.strip_prefix(&format!("{key}=")))
            .unwrap_or_else(|| panic!("clients add printed no {key}: {out}"))
            .to_string()
    };
    Registered {
        id: line("client_id"),
        secret: line("client_secret"),
    }
}

/// An answer of the endpoint.
pub(crate) struct Answer {
    pub(crate) status: u16,
    headers: reqwest::header::HeaderMap,
    pub(crate) body: Value,
    pub(crate) raw: String,
}

impl Answer {
    fn error(&self) -> &str {
        self.body["error"].as_str().unwrap_or("")
    }

    /// A refusal: status, code, and no token anywhere in it.
    fn assert_refused(&self, status: u16, code: &str) {
        assert_eq!((self.status, self.error()), (status, code), "{}", self.raw);
        assert!(
            self.body["error_description"]
                .as_str()
                .is_some_and(|d| !d.is_empty()),
            "{}",
            self.raw
        );
        assert_no_canary("an error answer of the token endpoint", self.raw.as_bytes());
        assert!(self.body.get("access_token").is_none(), "{}", self.raw);
        assert_eq!(self.headers["cache-control"], "no-store");
    }
}

/// POST the form, authenticating with HTTP Basic as `client` (if any).
pub(crate) async fn post(base: &str, client: Option<&Registered>, form: &[(&str, &str)]) -> Answer {
    let mut request = reqwest::Client::new()
        .post(format!("{base}/oauth/token"))
        .form(form);
    if let Some(client) = client {
        request = request.basic_auth(&client.id, Some(&client.secret));
    }
    answer(request.send().await.expect("the endpoint answers")).await
}

async fn answer(response: reqwest::Response) -> Answer {
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let raw = response.text().await.unwrap();
    let body = serde_json::from_str(&raw).unwrap_or(Value::Null);
    Answer {
        status,
        headers,
        body,
        raw,
    }
}

/// `GET /user` at the fake GitHub with `token`: the login it belongs to.
async fn github_login(up: &FakeUpstream, token: &str) -> Value {
    let response = reqwest::Client::new()
        .get(format!("{}/user", up.github_api_base()))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    response.json::<Value>().await.unwrap()["login"].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_exchanges_a_users_api_key_for_their_github_token() {
    let s = Setup::start("").await;
    let ok = s.github_for(&s.alice).await;
    assert_eq!(ok.status, 200, "{}", ok.raw);
    assert_eq!(ok.body["access_token"], token("alice", "default"));
    assert_eq!(ok.body["issued_token_type"], ACCESS);
    assert_eq!(ok.body["token_type"], "Bearer");
    assert_eq!(ok.body["scope"], "repo read:user");
    // The imported token lives 8 hours; the default cap is an hour.
    let expires_in = ok.body["expires_in"].as_u64().unwrap();
    assert!((3500..=3600).contains(&expires_in), "{expires_in}");
    assert_eq!(ok.headers["cache-control"], "no-store");
    assert_eq!(ok.headers["pragma"], "no-cache");
    let access = ok.body["access_token"].as_str().unwrap();
    assert_eq!(github_login(&s.up, access).await, "alice-default");

    // client_secret_post, `resource` instead of `audience`, the scope asked for, the account.
    let resource = s.up.github_api_base();
    let posted = post(
        s.base(),
        None,
        &[
            ("grant_type", GRANT),
            ("client_id", &s.client.id),
            ("client_secret", &s.client.secret),
            ("subject_token", &s.bob),
            ("subject_token_type", ACCESS),
            ("resource", &resource),
            ("scope", "read:user"),
            ("account", "default"),
            ("requested_token_type", ACCESS),
        ],
    )
    .await;
    assert_eq!(posted.status, 200, "{}", posted.raw);
    assert_eq!(posted.body["access_token"], token("bob", "default"));
    // What the token can actually do: the whole grant, which covers what was asked.
    assert_eq!(posted.body["scope"], "repo read:user");

    // Audited with client, user, provider, account and scopes; `status` shows the last one.
    let audit = audit_json(&s.kw);
    let exchanges: Vec<&Value> = audit
        .iter()
        .filter(|e| e["event"] == "token-exchange")
        .collect();
    assert_eq!(exchanges.len(), 2, "{audit:?}");
    for (entry, user) in exchanges.iter().zip(["alice", "bob"]) {
        assert_eq!(entry["client"], "backend");
        assert_eq!(entry["user"], user);
        assert_eq!(entry["provider"], "github");
        assert_eq!(entry["account"], "default");
        assert_eq!(entry["scopes"], serde_json::json!(["repo", "read:user"]));
        assert_eq!(entry["outcome"], "ok");
    }
    let rows = status(&s.kw);
    for row in &rows {
        assert_eq!(row["last_exchange"]["client"], "backend", "{row}");
        assert_eq!(row["last_exchange"]["outcome"], "ok", "{row}");
    }
    let table = s.kw.ok(&["status"], "").stdout();
    assert!(table.contains("LAST EXCHANGE"), "{table}");
    assert!(table.contains("backend"), "{table}");
    assert_no_canary("keyward status", table.as_bytes());
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_refusal_has_its_error_code_and_no_token() {
    let s = Setup::start("").await;
    let alice = s.alice.clone();
    let base: Vec<(&str, &str)> = vec![
        ("grant_type", GRANT),
        ("subject_token", &alice),
        ("subject_token_type", ACCESS),
        ("audience", "github"),
    ];
    let with = |changes: &[(&'static str, Option<&'static str>)]| {
        let mut form: Vec<(&str, &str)> = base
            .iter()
            .filter(|(k, _)| !changes.iter().any(|(c, _)| c == k))
            .copied()
            .collect();
        for (k, v) in changes {
            if let Some(v) = v {
                form.push((k, v));
            }
        }
        form
    };

    // The client: none, a wrong secret, an unknown id, a bearer instead of Basic.
    let none = post(s.base(), None, &base).await;
    none.assert_refused(401, "invalid_client");
    assert!(none.headers["www-authenticate"]
        .to_str()
        .unwrap()
        .starts_with("Basic"));
    let wrong = Registered {
        id: s.client.id.clone(),
        secret: "kwcs_not-the-secret".into(),
    };
    post(s.base(), Some(&wrong), &base)
        .await
        .assert_refused(401, "invalid_client");
    let unknown = Registered {
        id: "kwc_unknown".into(),
        secret: s.client.secret.clone(),
    };
    post(s.base(), Some(&unknown), &base)
        .await
        .assert_refused(401, "invalid_client");
    let bearer = reqwest::Client::new()
        .post(format!("{}/oauth/token", s.base()))
        .bearer_auth(&s.alice)
        .form(&base)
        .send()
        .await
        .unwrap();
    answer(bearer).await.assert_refused(401, "invalid_client");
    // Two ways of authenticating at once.
    let mut twice = base.clone();
    twice.push(("client_secret", &s.client.secret));
    s.exchange(&twice)
        .await
        .assert_refused(400, "invalid_request");

    // The request itself.
    s.exchange(&with(&[("grant_type", Some("client_credentials"))]))
        .await
        .assert_refused(400, "unsupported_grant_type");
    s.exchange(&with(&[("grant_type", None)]))
        .await
        .assert_refused(400, "invalid_request");
    s.exchange(&with(&[("subject_token", None)]))
        .await
        .assert_refused(400, "invalid_request");
    s.exchange(&with(&[("subject_token_type", None)]))
        .await
        .assert_refused(400, "invalid_request");
    let mut repeated = base.clone();
    repeated.push(("grant_type", GRANT));
    s.exchange(&repeated)
        .await
        .assert_refused(400, "invalid_request");
    s.exchange(&with(&[(
        "requested_token_type",
        Some("urn:ietf:params:oauth:token-type:refresh_token"),
    )]))
    .await
    .assert_refused(400, "invalid_request");
    s.exchange(&with(&[("actor_token", Some("someone"))]))
        .await
        .assert_refused(400, "invalid_request");
    s.exchange(&with(&[("audience", None)]))
        .await
        .assert_refused(400, "invalid_request");
    let json_body = reqwest::Client::new()
        .post(format!("{}/oauth/token", s.base()))
        .basic_auth(&s.client.id, Some(&s.client.secret))
        .json(&serde_json::json!({"grant_type": GRANT}))
        .send()
        .await
        .unwrap();
    answer(json_body)
        .await
        .assert_refused(400, "invalid_request");

    // The subject.
    s.exchange(&with(&[(
        "subject_token_type",
        Some("urn:ietf:params:oauth:token-type:saml2"),
    )]))
    .await
    .assert_refused(400, "unsupported_token_type");
    s.exchange(&with(&[(
        "subject_token_type",
        Some("urn:ietf:params:oauth:token-type:jwt"),
    )]))
    .await
    .assert_refused(400, "unsupported_token_type");
    s.exchange(&with(&[("subject_token", Some("kw_not-a-key"))]))
        .await
        .assert_refused(400, "invalid_grant");

    // The target.
    s.exchange(&with(&[("audience", Some("dropbox"))]))
        .await
        .assert_refused(400, "invalid_target");
    s.exchange(&with(&[
        ("audience", None),
        ("resource", Some("https://api.evil.example")),
    ]))
    .await
    .assert_refused(400, "invalid_target");
    let two_targets = {
        let mut form = base.clone();
        form.push(("audience", "slack"));
        form
    };
    s.exchange(&two_targets)
        .await
        .assert_refused(400, "invalid_target");
    s.exchange(&with(&[("account", Some("work"))]))
        .await
        .assert_refused(400, "invalid_target");
    s.exchange(&with(&[("audience", Some("slack"))]))
        .await
        .assert_refused(400, "unauthorized_client");

    // The scopes: beyond the client's allowance, beyond the grant.
    s.exchange(&with(&[("scope", Some("admin:org"))]))
        .await
        .assert_refused(400, "invalid_scope");
    let wide = add_client(
        &s.kw,
        &[
            "wide",
            "--providers",
            "github",
            "--scopes",
            "repo read:user admin:org",
        ],
    );
    post(
        s.base(),
        Some(&wide),
        &with(&[("scope", Some("admin:org"))]),
    )
    .await
    .assert_refused(400, "invalid_scope");
    // A client allowed less than the grant gets nothing: a token cannot be narrowed.
    let narrow = add_client(
        &s.kw,
        &["narrow", "--providers", "github", "--scopes", "read:user"],
    );
    let refused = post(s.base(), Some(&narrow), &base).await;
    refused.assert_refused(400, "invalid_scope");
    assert!(refused.raw.contains("repo"), "{}", refused.raw);
    // One allowed only another account.
    let work_only = add_client(
        &s.kw,
        &[
            "work-only",
            "--providers",
            "github",
            "--scopes",
            "repo read:user",
            "--accounts",
            "work",
        ],
    );
    post(s.base(), Some(&work_only), &base)
        .await
        .assert_refused(400, "unauthorized_client");

    // Every refusal of an authenticated client is audited with its code; none with a token.
    let audit = audit_json(&s.kw);
    let refusals: Vec<&Value> = audit
        .iter()
        .filter(|e| e["event"] == "token-exchange")
        .collect();
    // All but the unauthenticated requests and the forms refused before authentication (the
    // repeated parameter, two ways of authenticating, a JSON body).
    assert_eq!(refusals.len(), 19, "{refusals:?}");
    assert!(refusals
        .iter()
        .all(|e| e["outcome"].as_str().unwrap().starts_with("error: ")));
    assert!(refusals.iter().any(|e| e["outcome"]
        .as_str()
        .unwrap()
        .starts_with("error: invalid_scope")
        && e["client"] == "narrow"));
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_users_credential_never_yields_another_users_token() {
    let s = Setup::start("").await;
    // carol has a key but no connection; alice's and bob's keys give their own tokens only.
    let carol = add_user(&s.kw, "carol");
    s.github_for(&carol)
        .await
        .assert_refused(400, "invalid_target");
    for _ in 0..3 {
        let a = s.github_for(&s.alice).await;
        let b = s.github_for(&s.bob).await;
        assert_eq!(a.body["access_token"], token("alice", "default"));
        assert_eq!(b.body["access_token"], token("bob", "default"));
    }
    // A removed user's key stops at once.
    s.kw.ok(&["users", "remove", "bob"], "");
    s.github_for(&s.bob)
        .await
        .assert_refused(400, "invalid_grant");
    // So does a removed client.
    s.kw.ok(&["clients", "remove", "backend"], "");
    s.github_for(&s.alice)
        .await
        .assert_refused(401, "invalid_client");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_exchanges_on_an_expiring_token_make_one_refresh() {
    keyward::server::install_crypto_provider();
    let up = FakeUpstream::start().await;
    up.set_recording(false);
    let kw = crate::support::home::home_for(&up, &[]);
    enable(&kw, "rate_limit_burst = 1000\n");
    let (access, refresh) = (
        format!("{}_xch_storm", crate::support::CANARY_ACCESS),
        format!("{}_xch_storm", crate::support::CANARY_REFRESH),
    );
    up.grant_with_refresh(
        "github",
        &access,
        &refresh,
        &["repo", "read:user"],
        Some(Duration::from_secs(3600)),
    );
    kw.ok(
        &["import", "github"],
        &expired_token_json(&access, &refresh, "repo read:user"),
    );
    up.expire_access_token(&access);
    // The refresh stays in flight while every exchange piles up behind it.
    up.token_endpoint_delay("github", Duration::from_millis(300));
    let key = add_user(&kw, "default");
    let client = add_client(
        &kw,
        &[
            "storm",
            "--providers",
            "github",
            "--scopes",
            "repo read:user",
        ],
    );
    let server = HttpProcess::start(&kw).await;
    let base = server.base.clone();
    let http = reqwest::Client::new();
    let mut calls = tokio::task::JoinSet::new();
    for _ in 0..200 {
        let (http, base, key) = (http.clone(), base.clone(), key.clone());
        let (id, secret) = (client.id.clone(), client.secret.clone());
        calls.spawn(async move {
            let response = http
                .post(format!("{base}/oauth/token"))
                .basic_auth(id, Some(secret))
                .form(&[
                    ("grant_type", GRANT),
                    ("subject_token", key.as_str()),
                    ("subject_token_type", ACCESS),
                    ("audience", "github"),
                ])
                .send()
                .await
                .unwrap();
            answer(response).await
        });
    }
    let mut tokens = std::collections::BTreeSet::new();
    while let Some(done) = calls.join_next().await {
        let done = done.unwrap();
        assert_eq!(done.status, 200, "{}", done.raw);
        tokens.insert(done.body["access_token"].as_str().unwrap().to_string());
    }
    assert_eq!(up.refresh_count("github"), 1, "exactly one refresh");
    assert!(!up.family_revoked("github"));
    let issued = up.issued_tokens("github");
    assert_eq!(tokens.len(), 1, "every exchange got the refreshed token");
    assert!(tokens.contains(&issued[0].access_token));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_over_its_rate_limit_gets_429_with_retry_after() {
    let s = Setup::start("rate_limit_per_minute = 1\nrate_limit_burst = 2\n").await;
    for _ in 0..2 {
        assert_eq!(s.github_for(&s.alice).await.status, 200);
    }
    let limited = s.github_for(&s.alice).await;
    limited.assert_refused(429, "temporarily_unavailable");
    let retry: u64 = limited.headers["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry), "{retry}");
    // Another client has its own bucket.
    let other = add_client(
        &s.kw,
        &[
            "other",
            "--providers",
            "github",
            "--scopes",
            "repo read:user",
        ],
    );
    let ok = post(
        s.base(),
        Some(&other),
        &[
            ("grant_type", GRANT),
            ("subject_token", &s.alice),
            ("subject_token_type", ACCESS),
            ("audience", "github"),
        ],
    )
    .await;
    assert_eq!(ok.status, 200, "{}", ok.raw);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metadata_names_the_endpoint_and_the_grant_and_foreign_hosts_are_refused() {
    let s = Setup::start("").await;
    let response = reqwest::get(format!(
        "{}/.well-known/oauth-authorization-server",
        s.base()
    ))
    .await
    .unwrap();
    assert_eq!(response.status(), 200);
    let metadata: Value = response.json().await.unwrap();
    assert_eq!(metadata["issuer"], s.base());
    assert_eq!(
        metadata["token_endpoint"],
        format!("{}/oauth/token", s.base())
    );
    assert_eq!(
        metadata["grant_types_supported"],
        serde_json::json!([GRANT])
    );
    assert_eq!(
        metadata["token_endpoint_auth_methods_supported"],
        serde_json::json!(["client_secret_basic", "client_secret_post"])
    );
    // Host and Origin are checked as on every route (DNS rebinding, browsers).
    for (name, value) in [("host", "evil.example"), ("origin", "https://evil.example")] {
        let refused = reqwest::Client::new()
            .post(format!("{}/oauth/token", s.base()))
            .header(name, value)
            .basic_auth(&s.client.id, Some(&s.client.secret))
            .form(&[("grant_type", GRANT)])
            .send()
            .await
            .unwrap();
        assert_eq!(refused.status(), 403, "{name}");
    }
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_endpoint_is_off_unless_enabled() {
    let s = Setup::configured(None).await;
    let refused = s
        .exchange(&[
            ("grant_type", GRANT),
            ("subject_token", &s.alice),
            ("subject_token_type", ACCESS),
            ("audience", "github"),
        ])
        .await;
    assert_ne!(refused.status, 200, "{}", refused.raw);
    assert_no_canary("the answer of a disabled endpoint", refused.raw.as_bytes());
    let metadata = reqwest::get(format!(
        "{}/.well-known/oauth-authorization-server",
        s.base()
    ))
    .await
    .unwrap();
    assert_ne!(metadata.status(), 200);
    s.stop().await;
}

#[test]
fn clients_add_list_remove_through_the_cli() {
    let kw = Kw::new();
    let registered = add_client(
        &kw,
        &[
            "ci-bot",
            "--providers",
            "github,google",
            "--scopes",
            "repo, read:user",
            "--accounts",
            "work",
        ],
    );
    assert!(registered.id.starts_with("kwc_"));
    assert!(registered.secret.starts_with("kwcs_"));
    let listed: Value =
        serde_json::from_str(&kw.ok(&["clients", "list", "--json"], "").stdout()).unwrap();
    assert_eq!(listed[0]["name"], "ci-bot");
    assert_eq!(listed[0]["client_id"], registered.id);
    assert_eq!(
        listed[0]["providers"],
        serde_json::json!(["github", "google"])
    );
    assert_eq!(
        listed[0]["scopes"],
        serde_json::json!(["repo", "read:user"])
    );
    assert_eq!(listed[0]["accounts"], serde_json::json!(["work"]));
    let table = kw.ok(&["clients", "list"], "").stdout();
    assert!(
        table.contains("ci-bot") && !table.contains(&registered.secret),
        "{table}"
    );
    assert!(!kw
        .ok(&["clients", "list", "--json"], "")
        .stdout()
        .contains(&registered.secret));

    // Refusals name the fix and change nothing.
    let taken = kw.run(
        &[
            "clients",
            "add",
            "ci-bot",
            "--providers",
            "github",
            "--scopes",
            "repo",
        ],
        "",
    );
    assert_eq!(taken.code(), Some(2), "{}", taken.stderr());
    assert!(
        taken.stderr().contains("keyward clients remove ci-bot"),
        "{}",
        taken.stderr()
    );
    let unknown = kw.run(
        &[
            "clients",
            "add",
            "x",
            "--providers",
            "dropbox",
            "--scopes",
            "a",
        ],
        "",
    );
    assert_eq!(unknown.code(), Some(2));
    assert!(
        unknown.stderr().contains("unknown provider"),
        "{}",
        unknown.stderr()
    );
    let no_scopes = kw.run(&["clients", "add", "x", "--providers", "github"], "");
    assert_eq!(no_scopes.code(), Some(2));

    kw.ok(&["clients", "remove", "ci-bot"], "");
    let gone = kw.run(&["clients", "remove", "ci-bot"], "");
    assert_eq!(gone.code(), Some(1));
    assert!(
        gone.stderr().contains("keyward clients list"),
        "{}",
        gone.stderr()
    );
    let events: Vec<String> = audit_json(&kw)
        .iter()
        .filter(|e| e["client"] == "ci-bot")
        .map(|e| e["event"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(events, ["client-add", "client-remove"]);
}

/// The example backend (`examples/exchange_backend.py`, Python with httpx in a venv under
/// target/) exchanges alice's API key for her GitHub token and calls the fake API with it.
/// Without python3 the test is skipped, except in CI (`CI=true`), where it must run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_example_backend_exchanges_and_calls_github() {
    let python = Command::new("python3")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !python {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "python3 is required in CI for the example backend's test"
        );
        eprintln!("skipping the example backend's test: python3 is not installed");
        return;
    }
    let s = Setup::start("").await;
    let script = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("examples/run_exchange_backend.sh");
    let mut cmd = Command::new("bash");
    cmd.arg(script)
        .env("KEYWARD_URL", s.base())
        .env("KEYWARD_CLIENT_ID", &s.client.id)
        .env("KEYWARD_CLIENT_SECRET", &s.client.secret)
        .env("USER_API_KEY", &s.alice)
        .env("GITHUB_API", s.up.github_api_base());
    let output = tokio::task::spawn_blocking(move || cmd.output().expect("run the example"))
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(
        output.status.success(),
        "the example failed:\n{stdout}\n{stderr}"
    );
    assert!(
        stdout.contains("signed in to GitHub as alice-default"),
        "{stdout}"
    );
    // The example prints what it did, never the token.
    assert_no_canary("the example's output", &output.stdout);
    assert_no_canary("the example's stderr", &output.stderr);
    // A refusal is reported with its error code.
    let mut refused = Command::new("bash");
    refused
        .arg(
            std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("examples/run_exchange_backend.sh"),
        )
        .env("KEYWARD_URL", s.base())
        .env("KEYWARD_CLIENT_ID", &s.client.id)
        .env("KEYWARD_CLIENT_SECRET", &s.client.secret)
        .env("USER_API_KEY", "kw_not-a-key")
        .env("GITHUB_API", s.up.github_api_base());
    let output = tokio::task::spawn_blocking(move || refused.output().unwrap())
        .await
        .unwrap();
    assert!(!output.status.success());
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("invalid_grant"),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    s.stop().await;
}

/// With an identity provider (`[server.auth]`), the subject may be its access token (JWT):
/// validated exactly as an MCP bearer is, it names the user whose token the client gets.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_identity_providers_token_as_subject_names_the_user() {
    let remote = Remote::start_configured(
        jsonwebtoken::Algorithm::RS256,
        &["alice", "bob"],
        true,
        &[],
        "\n[exchange]\nenabled = true\n",
    )
    .await;
    let client = add_client(
        &remote.kw,
        &[
            "backend",
            "--providers",
            "github",
            "--scopes",
            "repo read:user",
        ],
    );
    let exchange = |subject: String, kind: &'static str| {
        let (base, client) = (remote.base.clone(), &client);
        async move {
            post(
                &base,
                Some(client),
                &[
                    ("grant_type", GRANT),
                    ("subject_token", subject.as_str()),
                    ("subject_token_type", kind),
                    ("audience", "github"),
                ],
            )
            .await
        }
    };
    const JWT: &str = "urn:ietf:params:oauth:token-type:jwt";
    for (user, kind) in [("alice", JWT), ("bob", ACCESS)] {
        let ok = exchange(remote.token(user), kind).await;
        assert_eq!(ok.status, 200, "{}", ok.raw);
        assert_eq!(ok.body["access_token"], token(user, "default"));
    }
    // A token for another audience, or signed by a key the issuer never published: no user.
    let wrong_audience = remote
        .issuer
        .token("alice", "https://elsewhere.example/mcp", "keyward");
    exchange(wrong_audience, JWT)
        .await
        .assert_refused(400, "invalid_grant");
    let forged = remote.issuer.sign(
        &remote
            .issuer
            .unpublished_key(jsonwebtoken::Algorithm::RS256),
        &remote
            .issuer
            .claims("bob", &format!("{}/mcp", remote.base), "keyward"),
    );
    exchange(forged, JWT)
        .await
        .assert_refused(400, "invalid_grant");
    let audit = audit_json(&remote.kw);
    let users: Vec<&str> = audit
        .iter()
        .filter(|e| e["event"] == "token-exchange" && e["outcome"] == "ok")
        .map(|e| e["user"].as_str().unwrap())
        .collect();
    assert_eq!(users, ["alice", "bob"]);
    remote.server.stop().await;
}
