//! keyward as an OAuth 2.1 protected resource (MCP authorization) with the test identity
//! provider (tests/support/issuer.rs): RFC 9728 metadata, `WWW-Authenticate` challenges, JWT
//! access tokens validated in full (signature against the JWKS, `iss`, `aud`, `exp`/`nbf`,
//! scopes), key rotation without a restart, the user from the token on every request (2025-era
//! sessions and 2026-07-28 stateless calls), users marked `oidc` and cut off by `users remove`.

use jsonwebtoken::Algorithm;
use serde_json::{json, Value};

use crate::server_stateless::{answer, call_tool, post, request, HttpProcess};
use crate::support::canary::assert_no_canary;
use crate::support::home::{home_for, Kw};
use crate::support::issuer::{self, Issuer};
use crate::support::mcp::*;
use crate::support::{FakeUpstream, CANARY_REFRESH};

/// A `keyward serve --http` with `public_url` and `[server.auth]` trusting a test issuer, the
/// fake providers behind it, and a home with GitHub connections for `users`.
pub(crate) struct Remote {
    pub up: FakeUpstream,
    pub issuer: Issuer,
    pub kw: Kw,
    pub server: HttpProcess,
    /// `public_url`.
    pub base: String,
}

impl Remote {
    /// `auth`: whether to configure `[server.auth]` (else API keys only, with `public_url`).
    pub(crate) async fn start(alg: Algorithm, users: &[&str], auth: bool) -> Remote {
        Remote::start_with(alg, users, auth, &[]).await
    }

    /// [`Remote::start`] with extra environment for keyward (e.g. `RUST_LOG`).
    pub(crate) async fn start_with(
        alg: Algorithm,
        users: &[&str],
        auth: bool,
        env: &[(&str, &str)],
    ) -> Remote {
        Remote::start_configured(alg, users, auth, env, "").await
    }

    /// [`Remote::start_with`] with `extra_toml` appended to config.toml (e.g. `[exchange]`).
    pub(crate) async fn start_configured(
        alg: Algorithm,
        users: &[&str],
        auth: bool,
        env: &[(&str, &str)],
        extra_toml: &str,
    ) -> Remote {
        keyward::server::install_crypto_provider();
        let up = FakeUpstream::start().await;
        let issuer = Issuer::start(alg).await;
        let kw = home_for(&up, &[]);
        for user in users {
            import_github(&up, &kw, user);
        }
        let addr = format!("127.0.0.1:{}", free_port());
        let base = format!("http://{addr}");
        *issuer.default_audience.lock().unwrap() = format!("{base}/mcp");
        let mut config = std::fs::read_to_string(kw.home().join("config.toml")).unwrap();
        config.push_str(&format!("\n[server]\npublic_url = \"{base}\"\n"));
        if auth {
            config.push_str(&format!(
                "\n[server.auth]\nissuer = \"{}\"\nscopes = [\"keyward\"]\nclient_id = \"{}\"\n",
                issuer.issuer(),
                issuer::CLIENT_ID
            ));
        }
        config.push_str(extra_toml);
        std::fs::write(kw.home().join("config.toml"), config).unwrap();
        let mut kw = kw;
        kw.env.push((
            "KEYWARD_AUTH_CLIENT_SECRET".into(),
            issuer::CLIENT_SECRET.into(),
        ));
        kw.env
            .extend(env.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        let server = HttpProcess::start_at(&kw, &addr).await;
        Remote {
            up,
            issuer,
            kw,
            server,
            base,
        }
    }

    /// A valid access token for `user`.
    pub(crate) fn token(&self, user: &str) -> String {
        self.issuer
            .token(user, &format!("{}/mcp", self.base), "keyward")
    }
}

/// `user`'s GitHub connection, granted at the fake as login `<user>-gh`.
pub(crate) fn import_github(up: &FakeUpstream, kw: &Kw, user: &str) {
    let access = crate::support::home::token(user, "default");
    up.grant_github_as(&access, &format!("{user}-gh"));
    let response = json!({
        "access_token": access, "refresh_token": format!("{CANARY_REFRESH}_{user}"),
        "token_type": "bearer", "expires_in": 28800, "scope": "repo read:user",
    });
    kw.ok(&["import", "github", "--user", user], &response.to_string());
}

/// A 2026-07-28 `github_get_me` with `credential`: the HTTP status and the JSON-RPC answer (or
/// the challenge header and body text when refused).
pub(crate) async fn get_me(base: &str, credential: &str) -> (u16, Value, Option<String>) {
    let response = post(base, credential, &call_tool(1, "github_get_me", json!({})))
        .send()
        .await
        .unwrap();
    let challenge = response
        .headers()
        .get("www-authenticate")
        .map(|v| v.to_str().unwrap().to_string());
    if response.status().is_success() {
        let (status, body) = answer(response).await;
        (status, body, challenge)
    } else {
        let status = response.status().as_u16();
        let text = response.text().await.unwrap();
        assert_no_canary("a refusal", text.as_bytes());
        (status, json!(text), challenge)
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn metadata_and_the_challenge_lead_a_client_to_the_identity_provider() {
    let remote = Remote::start(Algorithm::ES256, &[], true).await;
    let base = &remote.base;
    let http = reqwest::Client::new();
    for path in [
        "/.well-known/oauth-protected-resource/mcp",
        "/.well-known/oauth-protected-resource",
    ] {
        let response = http.get(format!("{base}{path}")).send().await.unwrap();
        assert_eq!(response.status(), 200, "{path}");
        let document: Value = response.json().await.unwrap();
        assert_eq!(
            document,
            json!({
                "resource": format!("{base}/mcp"),
                "authorization_servers": [remote.issuer.issuer()],
                "scopes_supported": ["keyward"],
                "bearer_methods_supported": ["header"],
                "resource_name": "keyward",
            }),
            "{path}"
        );
    }
    let metadata = format!("{base}/.well-known/oauth-protected-resource/mcp");
    // No credential: 401 with where to look and what to ask for.
    let response = http
        .post(format!("{base}/mcp"))
        .header("content-type", "application/json")
        .body(request(1, "tools/list", json!({})).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    assert_eq!(
        response.headers()["www-authenticate"],
        format!("Bearer resource_metadata=\"{metadata}\", scope=\"keyward\"").as_str()
    );
    // A token without the required scope: 403, the whole scope set in the one challenge.
    let unscoped = remote
        .issuer
        .token("alice", &format!("{base}/mcp"), "openid");
    let (status, _, challenge) = get_me(base, &unscoped).await;
    assert_eq!(status, 403);
    assert_eq!(
        challenge.unwrap(),
        format!(
            "Bearer resource_metadata=\"{metadata}\", scope=\"keyward\", error=\"insufficient_scope\""
        )
    );
    remote.server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_valid_token_calls_as_its_user_who_appears_marked_oidc_and_sees_only_their_own() {
    let remote = Remote::start(Algorithm::RS256, &["alice", "bob"], true).await;
    let base = &remote.base;
    // Stateless 2026-07-28: the user comes from the token on every request.
    let (status, me, _) = get_me(base, &remote.token("alice")).await;
    assert_eq!(status, 200, "{me}");
    assert_eq!(
        me["result"]["structuredContent"]["login"], "alice-gh",
        "{me}"
    );
    let (_, me, _) = get_me(base, &remote.token("bob")).await;
    assert_eq!(me["result"]["structuredContent"]["login"], "bob-gh", "{me}");
    // carol has no connection: her call never reaches another user's.
    let (_, carol, _) = get_me(base, &remote.token("carol")).await;
    assert_eq!(carol["result"]["isError"], true, "{carol}");
    assert!(carol.to_string().contains("carol"), "{carol}");

    // A 2025-era session, through rmcp's client, with the token as its bearer.
    let client = crate::server_http::mcp_client(base, &remote.token("alice")).await;
    let result = call(&client, "github_get_me", json!({})).await;
    assert_eq!(ok_value(&result)["login"], "alice-gh");
    client.cancel().await.unwrap();

    // The users appeared at first use, marked oidc.
    let listed = remote.kw.ok(&["users", "list"], "").stdout();
    for user in ["alice", "bob", "carol"] {
        let line = listed
            .lines()
            .find(|l| l.starts_with(user))
            .unwrap_or_else(|| panic!("{user} is listed: {listed}"));
        assert!(line.contains("oidc"), "{line}");
    }
    // API keys keep working beside the identity provider.
    let key = remote.kw.ok(&["users", "add", "dave"], "").stdout();
    import_github(&remote.up, &remote.kw, "dave");
    let (status, me, _) = get_me(base, key.trim()).await;
    assert_eq!(status, 200, "{me}");
    assert_eq!(me["result"]["structuredContent"]["login"], "dave-gh");
    remote.server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn every_wrong_token_is_refused_with_the_right_challenge() {
    let remote = Remote::start(Algorithm::RS256, &["alice"], true).await;
    let base = &remote.base;
    let issuer = &remote.issuer;
    let audience = format!("{base}/mcp");
    let key = issuer.current_key();
    let now = chrono::Utc::now().timestamp();
    let with = |change: &dyn Fn(&mut Value)| {
        let mut claims = issuer.claims("alice", &audience, "keyward");
        change(&mut claims);
        claims
    };
    let cases: Vec<(&str, String)> = vec![
        (
            "another audience",
            issuer.sign(
                &key,
                &with(&|c| c["aud"] = json!("https://other.example/mcp")),
            ),
        ),
        (
            "another issuer",
            issuer.sign(&key, &with(&|c| c["iss"] = json!("https://evil.example"))),
        ),
        (
            "expired",
            issuer.sign(&key, &with(&|c| c["exp"] = json!(now - 600))),
        ),
        (
            "not yet valid",
            issuer.sign(&key, &with(&|c| c["nbf"] = json!(now + 600))),
        ),
        (
            "an unknown key",
            issuer.sign(&issuer.unpublished_key(Algorithm::ES256), &with(&|_| {})),
        ),
        ("alg none", issuer::unsigned(&with(&|_| {}), &key.kid)),
        (
            "HMAC with the public key",
            issuer::hmac_signed(&with(&|_| {}), &key.kid, &key.public_der),
        ),
        (
            "no exp",
            issuer.sign(
                &key,
                &with(&|c| {
                    c.as_object_mut().unwrap().remove("exp");
                }),
            ),
        ),
        ("not a JWT", "not-a-jwt".to_string()),
    ];
    let metadata = format!("{base}/.well-known/oauth-protected-resource/mcp");
    for (what, token) in &cases {
        let (status, body, challenge) = get_me(base, token).await;
        assert_eq!(status, 401, "{what}: {body}");
        let challenge = challenge.unwrap_or_default();
        assert!(
            challenge.starts_with(&format!(
                "Bearer resource_metadata=\"{metadata}\", scope=\"keyward\", error=\"invalid_token\", error_description=\""
            )),
            "{what}: {challenge}"
        );
    }
    // The good token still works: nothing above poisoned anything.
    let (status, me, _) = get_me(base, &remote.token("alice")).await;
    assert_eq!(status, 200, "{me}");
    remote.server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_key_rotation_at_the_issuer_is_picked_up_without_a_restart() {
    let remote = Remote::start(Algorithm::ES256, &["alice"], true).await;
    let base = &remote.base;
    let old = remote.token("alice");
    let (status, _, _) = get_me(base, &old).await;
    assert_eq!(status, 200);
    // The issuer signs with a new key (of another type) and retires the old one.
    remote.issuer.rotate("key-2", Algorithm::EdDSA, true);
    let new = remote.token("alice");
    let (status, me, _) = get_me(base, &new).await;
    assert_eq!(status, 200, "{me}");
    assert_eq!(me["result"]["structuredContent"]["login"], "alice-gh");
    // The retired key is gone from what keyward trusts.
    let (status, _, _) = get_me(base, &old).await;
    assert_eq!(status, 401);
    // A stream of made-up key ids does not make keyward fetch the JWKS each time.
    let fetched = remote
        .issuer
        .jwks_fetches
        .load(std::sync::atomic::Ordering::SeqCst);
    let stranger = remote.issuer.unpublished_key(Algorithm::ES256);
    for _ in 0..5 {
        let token = remote.issuer.sign(
            &stranger,
            &remote
                .issuer
                .claims("alice", &format!("{base}/mcp"), "keyward"),
        );
        assert_eq!(get_me(base, &token).await.0, 401);
    }
    let after = remote
        .issuer
        .jwks_fetches
        .load(std::sync::atomic::Ordering::SeqCst);
    assert!(
        after <= fetched + 1,
        "fetched the JWKS {} times",
        after - fetched
    );
    remote.server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn users_remove_cuts_an_identity_provider_user_off_and_add_oidc_lets_them_back() {
    let remote = Remote::start(Algorithm::ES256, &["alice"], true).await;
    let base = &remote.base;
    let token = remote.token("alice");
    assert_eq!(get_me(base, &token).await.0, 200);
    remote.kw.ok(&["users", "remove", "alice"], "");
    // The same valid token is refused from the next request on.
    let (status, body, challenge) = get_me(base, &token).await;
    assert_eq!(status, 401, "{body}");
    assert!(challenge.unwrap().contains("invalid_token"));
    assert!(body.to_string().contains("removed"), "{body}");
    remote.kw.ok(&["users", "add", "alice", "--oidc"], "");
    let (status, body, _) = get_me(base, &token).await;
    assert_eq!(status, 200, "{body}");
    remote.server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_python_sdks_oauth_client_finds_the_identity_provider_and_calls() {
    if !crate::server_interop::python_available() {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "python3 is required in CI for the interop test"
        );
        eprintln!("skipping the OAuth interop test: python3 is not installed");
        return;
    }
    let remote = Remote::start(Algorithm::ES256, &["alice"], true).await;
    remote.issuer.sign_in_browser_as("alice");
    crate::server_interop::python_env(
        &remote.kw,
        vec![
            "sdk2".into(),
            "oauth".into(),
            "2026-07-28".into(),
            format!("{}/mcp", remote.base),
            issuer::MCP_CLIENT_ID.into(),
        ],
        "alice-gh",
        &[],
    )
    .await;
    // The SDK went the whole way: 401 → metadata → the identity provider → a token for keyward.
    let asked = remote.issuer.authorize_requests.lock().unwrap().clone();
    assert_eq!(asked.len(), 1, "{asked:?}");
    assert_eq!(asked[0]["client_id"], issuer::MCP_CLIENT_ID);
    assert_eq!(asked[0]["resource"], format!("{}/mcp", remote.base));
    assert_eq!(asked[0]["scope"], "keyward");
    remote.server.stop().await;
}
