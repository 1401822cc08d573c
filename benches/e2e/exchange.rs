//! Section 8: the token-exchange endpoint (`POST /oauth/token` of `keyward serve --http`, RFC
//! 8693) over loopback: the latency of one exchange when the token is fresh (warm) and when
//! every exchange refreshes it first, exchanges per second with 8 callers, and a storm of 200
//! exchanges on an expired token (one refresh must reach the token endpoint).
//! `cargo bench --bench e2e -- exchange` runs this section alone.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use serde_json::{json, Value};
use tokio::task::JoinSet;

use crate::calls::Run;
use crate::procs::{connect_github, import_expired_github, serve_http, BenchHome, Logs};
use crate::report::{delta_ms, lat, ms, progress, Table};
use crate::support::FakeUpstream;
use crate::{CALLS, GITHUB_SCOPES, ROW_CAP, WARMUP};

const GRANT: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
const ACCESS: &str = "urn:ietf:params:oauth:token-type:access_token";

/// A client, a user's key and the endpoint.
#[derive(Clone)]
struct Exchanger {
    http: reqwest::Client,
    url: String,
    client_id: String,
    secret: String,
    subject: String,
}

impl Exchanger {
    /// A home against `fake` with the endpoint on (no rate limit in the way), a user and a
    /// client.
    fn home(fake: &FakeUpstream) -> (BenchHome, Value) {
        let home = BenchHome::new(fake, &[]);
        let config = home.path().join("config.toml");
        let mut text = std::fs::read_to_string(&config).unwrap_or_default();
        text.push_str(
            "\n[exchange]\nenabled = true\nrate_limit_per_minute = 100000000\nrate_limit_burst = 100000\n",
        );
        std::fs::write(&config, text).expect("write config.toml");
        let registered = home.cli(
            &[
                "clients",
                "add",
                "bench",
                "--providers",
                "github",
                "--scopes",
                GITHUB_SCOPES,
            ],
            "",
        );
        let field = |name: &str| {
            registered
                .lines()
                .find_map(|l| l.strip_prefix(&format!("{name}=")))
                .expect("clients add prints the client")
                .to_string()
        };
        let client = json!({"id": field("client_id"), "secret": field("client_secret")});
        (home, client)
    }

    fn new(base: &str, client: &Value, subject: &str) -> Exchanger {
        Exchanger {
            http: reqwest::Client::new(),
            url: format!("{base}/oauth/token"),
            client_id: client["id"].as_str().unwrap().to_string(),
            secret: client["secret"].as_str().unwrap().to_string(),
            subject: subject.to_string(),
        }
    }

    /// One exchange for the user's GitHub token; the token itself is dropped unread.
    async fn once(&self) -> Result<(), String> {
        let response = self
            .http
            .post(&self.url)
            .basic_auth(&self.client_id, Some(&self.secret))
            .form(&[
                ("grant_type", GRANT),
                ("subject_token", self.subject.as_str()),
                ("subject_token_type", ACCESS),
                ("audience", "github"),
            ])
            .send()
            .await
            .map_err(|e| e.to_string())?;
        let status = response.status();
        let body: Value = response.json().await.map_err(|e| e.to_string())?;
        if status != 200 || body["access_token"].as_str().is_none() {
            return Err(format!("HTTP {status}: {}", body["error"]));
        }
        Ok(())
    }

    /// `n` exchanges over `concurrency` callers, each in a loop.
    async fn run(&self, concurrency: usize, n: usize) -> Run {
        let next = Arc::new(AtomicUsize::new(0));
        let started = Instant::now();
        let deadline = started + ROW_CAP;
        let mut tasks = JoinSet::new();
        for _ in 0..concurrency {
            let (me, next) = (self.clone(), next.clone());
            tasks.spawn(async move {
                let (mut lats, mut errors) = (Vec::new(), Vec::new());
                while next.fetch_add(1, Ordering::Relaxed) < n && Instant::now() < deadline {
                    let t = Instant::now();
                    match me.once().await {
                        Ok(()) => lats.push(t.elapsed()),
                        Err(e) => errors.push(e),
                    }
                }
                (lats, errors)
            });
        }
        let (mut lats, mut errors) = (Vec::new(), Vec::new());
        while let Some(joined) = tasks.join_next().await {
            let (l, e) = joined.expect("an exchanger task");
            lats.extend(l);
            errors.extend(e);
        }
        Run {
            lat: lat(lats),
            wall: started.elapsed(),
            errors: errors.len(),
            first_error: errors.into_iter().next(),
        }
    }
}

pub(crate) async fn section(table: &mut Table, fake: &FakeUpstream, logs: &Logs) {
    progress("token exchange: warm, 1 and 8 callers");
    let (home, client) = Exchanger::home(fake);
    connect_github(fake, &home, "exchange");
    let key = home
        .cli(&["users", "add", "default"], "")
        .trim()
        .to_string();
    let server = serve_http(&home, logs).await;
    let exchanger = Exchanger::new(&server.base, &client, &key);
    exchanger.run(1, WARMUP).await;
    let warm = exchanger.run(1, CALLS).await;
    let busy = exchanger.run(8, CALLS).await;
    server.stop().await;

    progress("token exchange: every exchange refreshes first");
    // The imported token has expired, and the fake's token endpoint claims `expires_in: 0` for
    // every new one (its tokens still work): every exchange finds a token to refresh.
    let (home, client) = Exchanger::home(fake);
    import_expired_github(fake, &home, "exchange_refresh");
    fake.advertise_expires_in("github", Some(json!(0)));
    let key = home
        .cli(&["users", "add", "default"], "")
        .trim()
        .to_string();
    let server = serve_http(&home, logs).await;
    let exchanger = Exchanger::new(&server.base, &client, &key);
    let before = fake.successful_refreshes("github");
    exchanger.run(1, 20).await;
    let refreshing = exchanger.run(1, 300).await;
    let refreshed = fake.successful_refreshes("github") - before;
    server.stop().await;
    fake.advertise_expires_in("github", None);

    progress("token exchange: 200 at once on an expired token");
    let (home, client) = Exchanger::home(fake);
    import_expired_github(fake, &home, "exchange_storm");
    let key = home
        .cli(&["users", "add", "default"], "")
        .trim()
        .to_string();
    let server = serve_http(&home, logs).await;
    let exchanger = Exchanger::new(&server.base, &client, &key);
    let before = fake.refresh_count("github");
    let storm = exchanger.run(200, 200).await;
    let storm_refreshes = fake.refresh_count("github") - before;
    server.stop().await;

    table.section(
        "8. Token exchange (POST /oauth/token, keyward serve --http, HTTP/1.1 keep-alive on loopback)",
        &["measure", "n", "p50", "p99", "max", "result"],
    );
    let failed = |run: &Run| match &run.first_error {
        Some(e) => format!(" · {} failed, first: {e}", run.errors),
        None => String::new(),
    };
    table.row(vec![
        "warm: 1 caller".into(),
        warm.lat.n.to_string(),
        ms(warm.lat.p50),
        ms(warm.lat.p99),
        ms(warm.lat.max),
        format!("{:.0} exchanges/s{}", warm.throughput(), failed(&warm)),
    ]);
    table.row(vec![
        "warm: 8 callers".into(),
        busy.lat.n.to_string(),
        ms(busy.lat.p50),
        ms(busy.lat.p99),
        ms(busy.lat.max),
        format!("{:.0} exchanges/s{}", busy.throughput(), failed(&busy)),
    ]);
    table.row(vec![
        "with a refresh (every exchange), 1 caller".into(),
        refreshing.lat.n.to_string(),
        ms(refreshing.lat.p50),
        ms(refreshing.lat.p99),
        ms(refreshing.lat.max),
        format!(
            "{refreshed} refreshes for 320 exchanges · added p50 {} ms{}",
            delta_ms(refreshing.lat.p50, warm.lat.p50),
            failed(&refreshing)
        ),
    ]);
    table.row(vec![
        "storm: 200 at once on an expired token".into(),
        storm.lat.n.to_string(),
        ms(storm.lat.p50),
        ms(storm.lat.p99),
        ms(storm.lat.max),
        format!(
            "wall {} · {storm_refreshes} refresh(es) at the token endpoint{}",
            ms(storm.wall),
            failed(&storm)
        ),
    ]);
    table.note(
        "an exchange = client authentication (SHA-256 + two users-tree reads) + API-key lookup \
         (cached) + connection read + scope checks + audit append; with a refresh also the token \
         endpoint round trip and the flushed compare-and-swap write",
    );
}
