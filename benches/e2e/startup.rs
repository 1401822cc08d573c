//! Section 4: start-up (spawn → `initialize` answered, with `--version` for scale) and the
//! memory of a stdio server, fresh, idle after 1000 calls, and after row (b).

use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::calls::run_calls;
use crate::procs::{serve_stdio, BenchHome, Logs, Mem, RawStdio};
use crate::report::{lat, ms, progress, Lat, Table};

/// What the goals read of section 4.
pub(crate) struct Startup {
    pub(crate) start: Lat,
    /// The larger idle RSS of the 1- and 8-caller servers, in KiB.
    pub(crate) idle_rss: u64,
}

/// `busy_mem`: row (b)'s server after its calls (section 2).
pub(crate) async fn section(
    table: &mut Table,
    home: &BenchHome,
    logs: &Logs,
    busy_mem: &Mem,
) -> Startup {
    progress("start-up: 20 × spawn → initialize answered");
    let mut starts = Vec::new();
    for _ in 0..20 {
        let t = Instant::now();
        let mut raw = RawStdio::spawn(home, &[], logs);
        raw.initialize().await;
        starts.push(t.elapsed());
        raw.stop().await;
    }
    let mut versions = Vec::new();
    for _ in 0..20 {
        let t = Instant::now();
        let out = home
            .command(&["--version"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .await
            .expect("keyward --version");
        assert!(out.success());
        versions.push(t.elapsed());
    }
    let start = lat(starts);
    let version = lat(versions);

    progress("idle memory: a stdio server after 1000 calls");
    let mut idle = Vec::new();
    for callers in [1, 8] {
        let server = serve_stdio(home, &[], logs).await;
        let fresh = Mem::of(server.pid);
        let calls = run_calls(&server.caller(), callers, 1000, false).await;
        tokio::time::sleep(Duration::from_secs(1)).await;
        idle.push((callers, calls.lat.n, fresh, Mem::of(server.pid)));
        server.stop().await;
    }
    let idle_rss = idle.iter().map(|(_, _, _, m)| m.rss).max().unwrap_or(0);

    table.section(
        "4. Start-up and memory (release binary, existing home)",
        &["measure", "n", "median", "max", "result"],
    );
    table.row(vec![
        "keyward serve: spawn → initialize answered".into(),
        start.n.to_string(),
        ms(start.p50),
        ms(start.max),
        String::new(),
    ]);
    table.row(vec![
        "for scale: keyward --version, spawn → exit".into(),
        version.n.to_string(),
        ms(version.p50),
        ms(version.max),
        String::new(),
    ]);
    for (callers, n, fresh, after) in &idle {
        table.row(vec![
            format!(
                "stdio server, 1 s idle after {n} calls ({callers} caller{})",
                if *callers == 1 { "" } else { "s" }
            ),
            String::new(),
            String::new(),
            String::new(),
            after.describe(),
        ]);
        if *callers == 1 {
            table.row(vec![
                "  the same server before its first call".into(),
                String::new(),
                String::new(),
                String::new(),
                fresh.describe(),
            ]);
        }
    }
    table.row(vec![
        "row (b)'s server after its 6600 calls (up to 64 in flight)".into(),
        String::new(),
        String::new(),
        String::new(),
        busy_mem.describe(),
    ]);
    table.note(
        "file-backed pages are the binary's code and libc, mapped from the page cache and shared \
         by every keyward process; anon is each process's own",
    );

    Startup { start, idle_rss }
}
