//! In-process hot path: what a tool call costs keyward before and after the network.
//!
//! `cargo bench --bench hot_path` — seal, open, a token read (get + open + expiry check), and
//! argument validation + request rendering + parsing + projection for
//! `github_list_pull_requests`. `cargo bench --bench e2e` has the end-to-end figures.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use keyward::catalog::Catalog;
use keyward::config::Home;
use keyward::exec::{project, render};
use keyward::secret::{SecretKey, SecretString};
use keyward::vault::{crypto, ConnKey, ConnectionStatus, OpenMode, TokenRecord, Vault};

fn record() -> TokenRecord {
    TokenRecord {
        access_token: SecretString::new("gho_".to_string() + &"x".repeat(36)),
        refresh_token: Some(SecretString::new("ghr_".to_string() + &"y".repeat(72))),
        token_type: "bearer".into(),
        expires_at: Some(chrono::Utc::now().timestamp() + 28_800),
        scopes: vec!["repo".into(), "read:user".into()],
        obtained_at: chrono::Utc::now().timestamp(),
        status: ConnectionStatus::Active,
    }
}

fn vault_benches(c: &mut Criterion) {
    let key = SecretKey::generate();
    let plaintext = serde_json::to_vec(&record()).unwrap();
    let ctx: [&[u8]; 4] = [b"default", b"github", b"default", &7u64.to_be_bytes()];
    c.bench_function("seal (record, XChaCha20-Poly1305)", |b| {
        b.iter(|| crypto::seal(black_box(&key), 1, &ctx, black_box(&plaintext)))
    });
    let blob = crypto::seal(&key, 1, &ctx, &plaintext);
    c.bench_function("open (record)", |b| {
        b.iter(|| crypto::open(black_box(&blob), &ctx, |_| Some(&key)).unwrap())
    });

    let dir = tempfile::tempdir().unwrap();
    let home = Home {
        dir: dir.path().join("home"),
    };
    // The vault serves other processes on the runtime that opened it.
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let vault = runtime
        .block_on(Vault::open(&home, OpenMode::Create))
        .unwrap();
    let conn = ConnKey::new("default", "github", "default").unwrap();
    runtime.block_on(vault.put(&conn, None, &record())).unwrap();
    c.bench_function("token read (get + open + expiry check)", |b| {
        b.iter(|| {
            let now = chrono::Utc::now().timestamp();
            // The owner reads in place: the future is ready when first polled, so the
            // smallest executor measures the read itself.
            let c = futures::executor::block_on(vault.get(black_box(&conn)))
                .unwrap()
                .unwrap();
            black_box(c.record.needs_refresh(now, 300));
            black_box(c.record.access_token.expose().len())
        })
    });
}

fn exec_benches(c: &mut Criterion) {
    let catalog = Catalog::embedded();
    let (provider, tool) = catalog.tool("github_list_pull_requests").unwrap();
    let args: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(r#"{"owner":"rust-lang","repo":"rust","state":"open","per_page":10}"#)
            .unwrap();
    c.bench_function("validate + render github_list_pull_requests", |b| {
        b.iter(|| {
            let valid = render::validate_args(tool, black_box(&args)).unwrap();
            render::render(provider, tool, &valid).unwrap()
        })
    });
    let body = pull_requests(10);
    let headers = http::HeaderMap::new();
    let bytes = serde_json::to_vec(&body).unwrap();
    let reads = project::Reads::of(tool, &[]);
    c.bench_function(
        "parse 10 pull requests, only what the projection reads",
        |b| b.iter(|| project::parse(&reads, black_box(&bytes)).unwrap()),
    );
    c.bench_function("parse 10 pull requests whole (for comparison)", |b| {
        b.iter(|| serde_json::from_slice::<serde_json::Value>(black_box(&bytes)).unwrap())
    });
    c.bench_function("project 10 pull requests", |b| {
        b.iter(|| project::project(tool, &headers, black_box(body.clone())))
    });
}

/// Pull requests shaped like GitHub's (user and repo objects with their URL fields).
fn pull_requests(n: usize) -> serde_json::Value {
    let user = |login: &str| {
        let mut u = serde_json::Map::new();
        u.insert("login".into(), login.into());
        u.insert("id".into(), 1234.into());
        for f in [
            "avatar_url",
            "url",
            "html_url",
            "followers_url",
            "following_url",
            "gists_url",
            "starred_url",
            "subscriptions_url",
            "organizations_url",
            "repos_url",
            "events_url",
            "received_events_url",
        ] {
            u.insert(
                f.into(),
                format!("https://api.github.com/users/{login}/{f}").into(),
            );
        }
        serde_json::Value::Object(u)
    };
    let repo = |name: &str| {
        let mut r = serde_json::Map::new();
        r.insert("full_name".into(), name.into());
        r.insert("owner".into(), user("rust-lang"));
        for i in 0..40 {
            r.insert(
                format!("field_{i}_url"),
                format!("https://api.github.com/repos/{name}/thing{i}").into(),
            );
        }
        serde_json::Value::Object(r)
    };
    serde_json::Value::Array(
        (0..n)
            .map(|i| {
                serde_json::json!({
                    "number": i, "title": format!("Fix the thing #{i}"), "state": "open", "draft": false,
                    "user": user("octocat"), "labels": [{"name": "bug", "color": "f00", "description": "A bug"}],
                    "head": {"ref": "fix", "sha": "abc", "repo": repo("octocat/rust"), "user": user("octocat")},
                    "base": {"ref": "main", "sha": "def", "repo": repo("rust-lang/rust"), "user": user("rust-lang")},
                    "created_at": "2026-01-01T00:00:00Z", "updated_at": "2026-01-02T00:00:00Z",
                    "closed_at": null, "merged_at": null, "html_url": format!("https://github.com/rust-lang/rust/pull/{i}"),
                    "body": "x".repeat(2000),
                })
            })
            .collect(),
    )
}

criterion_group!(benches, vault_benches, exec_benches);
criterion_main!(benches);
