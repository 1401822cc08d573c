//! Section 3: a storm of calls on an expired token (exactly one refresh must reach the token
//! endpoint), and the latency of calls that refresh ahead of expiry against calls that do not.

use crate::calls::{run_calls, Run};
use crate::procs::{connect_github, import_expired_github, serve_stdio, BenchHome, Logs};
use crate::report::{delta_ms, ms, progress, Table};
use crate::support::{FakeUpstream, CANARY_ACCESS};

/// What the goals read of section 3.
pub(crate) struct Refresh {
    pub(crate) storm: Run,
    pub(crate) storm_refreshes: u64,
}

/// `plain`: row (b) at 1 caller, the calls that do not refresh.
pub(crate) async fn section(
    table: &mut Table,
    fake: &FakeUpstream,
    logs: &Logs,
    plain: &Run,
) -> Refresh {
    progress("refresh storm: 1000 concurrent calls on an expired token");
    let storm_home = BenchHome::new(fake, &[]);
    import_expired_github(fake, &storm_home, "storm");
    let storm_server = serve_stdio(&storm_home, &[], logs).await;
    let before = fake.refresh_count("github");
    let storm = run_calls(&storm_server.caller(), 1000, 1000, true).await;
    let storm_refreshes = fake.refresh_count("github") - before;
    storm_server.stop().await;

    progress("proactive refresh: calls that refresh ahead of expiry");
    // keyward uses a token a refresh just produced for as long as it lives, so to refresh on
    // every call the fake's token endpoint claims `expires_in: 0` (the tokens still work at the
    // fake) and the imported token is made to fail once.
    let refresh_home = BenchHome::new(fake, &[]);
    connect_github(fake, &refresh_home, "proactive");
    fake.advertise_expires_in("github", Some(serde_json::json!(0)));
    fake.expire_access_token(&format!("{CANARY_ACCESS}.gho_proactive"));
    let refresh_server = serve_stdio(&refresh_home, &[], logs).await;
    let before = fake.successful_refreshes("github");
    let caller = refresh_server.caller();
    run_calls(&caller, 1, 20, true).await;
    let refreshing = run_calls(&caller, 1, 300, false).await;
    let refreshed = fake.successful_refreshes("github") - before;
    refresh_server.stop().await;
    fake.advertise_expires_in("github", None);

    table.section(
        "3. Refresh (stdio server; token endpoint = the fake's, on loopback)",
        &["measure", "n", "p50", "p99", "max", "result"],
    );
    table.row(vec![
        "storm: 1000 concurrent calls on an expired token".into(),
        storm.lat.n.to_string(),
        ms(storm.lat.p50),
        ms(storm.lat.p99),
        ms(storm.lat.max),
        format!(
            "wall {} · {storm_refreshes} refresh(es) at the token endpoint · {} failed",
            ms(storm.wall),
            storm.errors
        ),
    ]);
    table.row(vec![
        "calls that do not refresh (= row (b), 1 caller)".into(),
        plain.lat.n.to_string(),
        ms(plain.lat.p50),
        ms(plain.lat.p99),
        ms(plain.lat.max),
        String::new(),
    ]);
    table.row(vec![
        "calls that refresh ahead of expiry (every call)".into(),
        refreshing.lat.n.to_string(),
        ms(refreshing.lat.p50),
        ms(refreshing.lat.p99),
        ms(refreshing.lat.max),
        format!(
            "{refreshed} refreshes for 320 calls · added p50 {} ms, p99 {} ms",
            delta_ms(refreshing.lat.p50, plain.lat.p50),
            delta_ms(refreshing.lat.p99, plain.lat.p99)
        ),
    ]);
    table.note(
        "a refresh = token endpoint round trip + compare-and-swap write of the sealed record + \
         fsync, before the call proceeds",
    );
    Refresh {
        storm,
        storm_refreshes,
    }
}
