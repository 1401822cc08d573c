//! Section 5: context economy: the size of `tools/list`, and raw upstream bytes against what
//! the model gets back for each list/read tool. Measured first (its probes record the request
//! row (a) replays), written to the table after section 4.

use std::collections::HashMap;

use serde_json::{json, Value};

use crate::calls::{mcp_call, Replay};
use crate::procs::{serve_stdio, BenchHome, Logs, RawStdio};
use crate::report::{kib, progress, Table};
use crate::support::{fixtures, FakeUpstream, RecordedRequest};
use crate::{CANARY, TOOL};

// ---- 5. context economy probes ------------------------------------------------------------------

pub(crate) struct Probe {
    pub(crate) tool: &'static str,
    pub(crate) list: bool,
    pub(crate) raw: usize,
    pub(crate) projected: usize,
}

/// Call each list/read tool once through a stdio server with its fixture's arguments, check
/// that keyward sent the fixture's request, replay that request, and compare sizes. Returns the
/// probes and, per tool, the upstream request keyward sent (to replay) with the upstream's
/// answer.
pub(crate) async fn probes(
    fake: &FakeUpstream,
    home: &BenchHome,
    logs: &Logs,
) -> (Vec<Probe>, HashMap<&'static str, (Replay, Vec<u8>)>) {
    // (tool, whether it is a list tool)
    let cases: [(&'static str, bool); 9] = [
        (TOOL, true),
        ("github_list_issues", true),
        ("github_get_pull_request", false),
        ("github_get_issue", false),
        ("slack_list_channels", true),
        ("slack_read_channel", true),
        ("calendar_list_calendars", true),
        ("calendar_list_events", true),
        ("github_get_me", false),
    ];
    let catalog = keyward::catalog::Catalog::embedded();
    let server = serve_stdio(home, &[], logs).await;
    let peer = server.client.peer().clone();
    let http = reqwest::Client::new();
    let mut out = Vec::new();
    let mut replays = HashMap::new();
    fake.set_recording(true);
    for (tool, list) in cases {
        let fixture = fixtures::load(tool);
        fake.clear_requests();
        let text = mcp_call(&peer, tool, &fixture.args())
            .await
            .unwrap_or_else(|e| panic!("probe {tool}: {e}"));
        assert!(!text.contains(CANARY), "a token appeared in a tool result");
        let recorded: Vec<RecordedRequest> = fake
            .requests()
            .into_iter()
            .filter(|r| !r.path.contains("token") && !r.path.contains("oauth"))
            .collect();
        assert_eq!(recorded.len(), 1, "{tool}: one upstream request");
        // The call measured is the one the integration tests pin down (the token aside: the
        // bench's own).
        let (provider, _) = catalog.tool(tool).expect("a catalog tool");
        let api_path = url::Url::parse(&fake.api_base(&provider.name))
            .expect("a URL")
            .path()
            .to_string();
        let token = recorded[0].bearer_token().unwrap_or_default().to_string();
        let differences = fixture.request_differences(&recorded[0], &api_path, &token);
        assert!(
            differences.is_empty(),
            "{tool}: not the request of tests/fixtures/{tool}.json: {differences:?}"
        );
        let replay = Replay::from_recorded(&fake.base_url(), &recorded[0]);
        let raw = replay
            .send(&http)
            .await
            .unwrap_or_else(|e| panic!("replaying {tool}: {e}"));
        out.push(Probe {
            tool,
            list,
            raw: raw.len(),
            projected: text.len(),
        });
        replays.insert(tool, (replay, raw));
    }
    fake.clear_requests();
    fake.set_recording(false);
    server.stop().await;
    (out, replays)
}

/// What section 5 measured.
pub(crate) struct Context {
    probes: Vec<Probe>,
    /// Per tool, the upstream request keyward sent (to replay) with the upstream's answer.
    pub(crate) replays: HashMap<&'static str, (Replay, Vec<u8>)>,
    /// `tools/list` with `--all-tools`: (bytes of the result, number of tools).
    pub(crate) tools_list: (usize, usize),
}

impl Context {
    /// The largest projected/raw ratio of the list tools.
    pub(crate) fn worst_list(&self) -> f64 {
        self.probes
            .iter()
            .filter(|p| p.list)
            .map(|p| p.projected as f64 / p.raw as f64)
            .fold(0f64, f64::max)
    }
}

pub(crate) async fn measure(fake: &FakeUpstream, home: &BenchHome, logs: &Logs) -> Context {
    progress("context economy: one call of each list/read tool, replayed upstream");
    let (probes, replays) = probes(fake, home, logs).await;
    let tools_list = {
        let mut raw = RawStdio::spawn(home, &["--all-tools"], logs);
        raw.initialize().await;
        raw.send(&json!({"jsonrpc": "2.0", "method": "notifications/initialized"}))
            .await;
        let line = raw.request(2, "tools/list", None).await;
        raw.stop().await;
        let answer: Value = serde_json::from_str(&line).expect("tools/list answer");
        let tools = answer["result"]["tools"].as_array().map_or(0, Vec::len);
        (serde_json::to_vec(&answer["result"]).unwrap().len(), tools)
    };
    Context {
        probes,
        replays,
        tools_list,
    }
}

pub(crate) fn report(table: &mut Table, context: &Context) {
    let Context {
        probes,
        tools_list: tools_list_bytes,
        ..
    } = context;
    table.section(
        "5. Context economy (what the model reads)",
        &[
            "tool",
            "upstream (raw)",
            "to the model",
            "ratio",
            "est. tokens (bytes/4)",
        ],
    );
    table.row(vec![
        format!("tools/list, --all-tools ({} tools)", tools_list_bytes.1),
        String::new(),
        kib(tools_list_bytes.0),
        String::new(),
        format!("{}", tools_list_bytes.0 / 4),
    ]);
    let (mut raw_sum, mut proj_sum) = (0usize, 0usize);
    for p in probes {
        let ratio = p.projected as f64 / p.raw as f64;
        if p.list {
            raw_sum += p.raw;
            proj_sum += p.projected;
        }
        table.row(vec![
            format!("{}{}", p.tool, if p.list { " (list)" } else { "" }),
            kib(p.raw),
            kib(p.projected),
            format!("{:.1}%", ratio * 100.0),
            format!("{} → {}", p.raw / 4, p.projected / 4),
        ]);
    }
    table.row(vec![
        "all list tools together".into(),
        kib(raw_sum),
        kib(proj_sum),
        format!("{:.1}%", proj_sum as f64 / raw_sum as f64 * 100.0),
        format!("{} → {}", raw_sum / 4, proj_sum / 4),
    ]);
    table.note(
        "raw = the upstream's body for the exact request keyward sent (replayed); to the model = \
         the tool result's text (structuredContent carries the same JSON)",
    );
}
