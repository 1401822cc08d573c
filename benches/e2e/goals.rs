//! Section 6: the goals of issues 7 and 11, each met or not (nothing here fails anything).

use std::time::Duration;

use crate::context::Context;
use crate::end_to_end::EndToEnd;
use crate::in_process::InProcess;
use crate::refresh::Refresh;
use crate::report::{kib, ms, us, Table};
use crate::startup::Startup;

pub(crate) fn section(
    table: &mut Table,
    inproc: &InProcess,
    e2e: &EndToEnd,
    refresh: &Refresh,
    startup: &Startup,
    context: &Context,
) {
    let EndToEnd {
        rows: e2e,
        issue_stdio,
        ..
    } = e2e;
    let Refresh {
        storm,
        storm_refreshes,
    } = refresh;
    let storm_refreshes = *storm_refreshes;
    let Startup { start, idle_rss } = startup;
    let idle_rss = *idle_rss;
    let tools_list_bytes = context.tools_list;
    let worst_list = context.worst_list();
    let overhead = |k: char| {
        let (x, a) = (&e2e[&(k, 1)], &e2e[&('a', 1)]);
        (
            x.lat.p50.saturating_sub(a.lat.p50),
            x.lat.p99.saturating_sub(a.lat.p99),
        )
    };
    let (stdio50, stdio99) = overhead('b');
    let (http50, _) = overhead('c');
    let relay50 = e2e[&('e', 1)]
        .lat
        .p50
        .saturating_sub(e2e[&('b', 1)].lat.p50);
    let met = |ok: bool| if ok { "met" } else { "NOT MET" }.to_string();
    table.section(
        "6. Goals (issues 7 and 11; overheads at 1 caller)",
        &["goal", "target", "measured", ""],
    );
    let goals: Vec<(&str, String, String, bool)> = vec![
        (
            "token read p99",
            "≤ 20 µs".into(),
            us(inproc.token_read.p99),
            inproc.token_read.p99 <= Duration::from_micros(20),
        ),
        (
            "stdio overhead p50",
            "≤ 0.15 ms".into(),
            ms(stdio50),
            stdio50 <= Duration::from_micros(150),
        ),
        (
            "stdio overhead p99",
            "≤ 0.5 ms".into(),
            ms(stdio99),
            stdio99 <= Duration::from_micros(500),
        ),
        (
            "Streamable HTTP overhead p50",
            "≤ 0.3 ms".into(),
            ms(http50),
            http50 <= Duration::from_micros(300),
        ),
        (
            "relay overhead p50 ((e) − (b))",
            "≤ 50 µs".into(),
            us(relay50),
            relay50 <= Duration::from_micros(50),
        ),
        (
            "storm: refreshes for 1000 calls",
            "exactly 1".into(),
            format!("{storm_refreshes} ({} failed calls)", storm.errors),
            storm_refreshes == 1 && storm.errors == 0,
        ),
        (
            "cold start (median)",
            "≤ 20 ms".into(),
            ms(start.p50),
            start.p50 <= Duration::from_millis(20),
        ),
        (
            "issue 11: cold start (median; Go github-mcp-server 2.9 ms)",
            "≤ 5 ms".into(),
            ms(start.p50),
            start.p50 <= Duration::from_millis(5),
        ),
        (
            "issue 11: github_get_issue over stdio p50 (Go: 0.53 ms)",
            "≤ 0.424 ms (1.25×)".into(),
            ms(issue_stdio.lat.p50),
            issue_stdio.lat.p50 <= Duration::from_micros(424),
        ),
        (
            "idle RSS after 1000 calls (worse of 1 and 8 callers)",
            "≤ 20 MiB".into(),
            format!("{:.1} MiB", idle_rss as f64 / 1024.0),
            idle_rss <= 20 * 1024,
        ),
        (
            "tools/list (--all-tools)",
            "≤ 32 KiB".into(),
            kib(tools_list_bytes.0),
            tools_list_bytes.0 <= 32 * 1024,
        ),
        (
            "list results vs raw (worst list tool)",
            "≤ 15%".into(),
            format!("{:.1}%", worst_list * 100.0),
            worst_list <= 0.15,
        ),
    ];
    let (total, missed) = (goals.len(), goals.iter().filter(|g| !g.3).count());
    for (goal, target, measured, ok) in goals {
        table.row(vec![goal.into(), target, measured, met(ok)]);
    }
    table.note(format!(
        "{} of {total} goals met; anchors: a secrets-manager sidecar costs 10–30 ms per call, a \
         hosted token exchange 50–100 ms; issue 11's Go figures are from the issue (no Go \
         toolchain here)",
        total - missed
    ));
}
