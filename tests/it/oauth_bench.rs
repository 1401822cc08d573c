//! Numbers for the OAuth lifecycle, printed rather than asserted (they depend on the machine):
//!
//! ```sh
//! cargo test --release --test it oauth_bench -- --ignored --nocapture --test-threads 1
//! ```
//!
//! - the latency of a tool call when a refresh happens ahead of expiry (token endpoint round
//!   trip + compare-and-swap write + fsync) against one that needs none;
//! - the wall time of 1000 concurrent calls on an expired token (one refresh, 999 waiters).
//!
//! Both drive one in-process `Executor` (as `keyward serve` does) against the fake upstream on
//! loopback, so the provider's own latency is ~0 and what is measured is keyward's.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::oauth_fake_ext::*;
use keyward::catalog::Catalog;
use keyward::config::{Config, Home};
use keyward::exec::{CallContext, CallOutcome, Executor};
use keyward::vault::{OpenMode, Vault};

fn executor(kw: &crate::cli::Kw) -> Arc<Executor> {
    let home = Home { dir: kw.home() };
    let config = Config::load(&home).unwrap();
    let catalog = Catalog::load(&config.tools_dirs, &config.providers).unwrap();
    let vault = Vault::open(&home, OpenMode::Existing).unwrap();
    Arc::new(Executor::new(Arc::new(catalog), Arc::new(vault), &config).unwrap())
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

fn summary(name: &str, mut samples: Vec<Duration>) {
    samples.sort();
    println!(
        "{name:<34} n={:<4} p50={:>8.2?} p90={:>8.2?} p99={:>8.2?} max={:>8.2?}",
        samples.len(),
        percentile(&samples, 0.50),
        percentile(&samples, 0.90),
        percentile(&samples, 0.99),
        samples[samples.len() - 1]
    );
}

async fn sequential_calls(exec: &Executor, n: usize) -> Vec<Duration> {
    let mut samples = Vec::with_capacity(n);
    for _ in 0..n {
        let started = Instant::now();
        match exec
            .call(
                &CallContext::new("default"),
                "github_get_me",
                serde_json::Map::new(),
            )
            .await
        {
            CallOutcome::Ok(_) => samples.push(started.elapsed()),
            CallOutcome::Err(e) => panic!("call failed: {e}"),
        }
    }
    samples
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark: run with --ignored --nocapture"]
async fn oauth_bench_refresh_latency_and_storm() {
    let fake = FakeUpstream::start().await;
    fake.set_recording(false);
    let json = |access: &str, refresh: &str| {
        serde_json::json!({"access_token": access, "refresh_token": refresh, "expires_in": 28800, "scope": "repo read:user"}).to_string()
    };

    // No refresh needed: a token with hours to live.
    let kw = home_for(&fake, &[]);
    fake.grant_with_refresh(
        "github",
        "gho_bench_plain",
        "ghr_bench_plain",
        &["repo", "read:user"],
        None,
    );
    kw.ok(
        &["import", "github"],
        &json("gho_bench_plain", "ghr_bench_plain"),
    );
    let exec = executor(&kw);
    sequential_calls(&exec, 20).await; // warm up connections
    let plain = sequential_calls(&exec, 300).await;
    drop(exec);

    // A refresh ahead of expiry on every call: the margin covers the token's whole life.
    let kw = home_for(&fake, &[("github", "refresh_margin_secs = 1000000000")]);
    fake.grant_with_refresh(
        "github",
        "gho_bench_refresh",
        "ghr_bench_refresh",
        &["repo", "read:user"],
        None,
    );
    kw.ok(
        &["import", "github"],
        &json("gho_bench_refresh", "ghr_bench_refresh"),
    );
    let exec = executor(&kw);
    let before = fake.successful_refreshes("github");
    let refreshing = sequential_calls(&exec, 300).await;
    assert_eq!(
        fake.successful_refreshes("github") - before,
        300,
        "every call refreshed"
    );
    drop(exec);

    println!("tool call latency (github_get_me, in-process executor, fake upstream on loopback):");
    summary("  no refresh needed", plain);
    summary("  refresh ahead of expiry", refreshing);

    // The storm: 1000 concurrent calls on an expired token, five rounds.
    let mut walls = Vec::new();
    for round in 0..5 {
        let kw = home_for(&fake, &[]);
        let (access, refresh) = (format!("gho_storm_{round}"), format!("ghr_storm_{round}"));
        fake.grant_with_refresh("github", &access, &refresh, &["repo", "read:user"], None);
        kw.ok(
            &["import", "github"],
            &expired_token_json(&access, &refresh, "repo,read:user"),
        );
        fake.expire_access_token(&access);
        let exec = executor(&kw);
        let before = fake.refresh_count("github");
        let started = Instant::now();
        let tasks: Vec<_> = (0..1000)
            .map(|_| {
                let exec = exec.clone();
                tokio::spawn(async move {
                    exec.call(
                        &CallContext::new("default"),
                        "github_get_me",
                        serde_json::Map::new(),
                    )
                    .await
                })
            })
            .collect();
        for task in tasks {
            assert!(!task.await.unwrap().is_error());
        }
        walls.push(started.elapsed());
        assert_eq!(fake.refresh_count("github") - before, 1);
    }
    summary("1000-call storm, wall time", walls);
}
