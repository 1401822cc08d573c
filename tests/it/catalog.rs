//! What MCP clients see of the catalog: a committed snapshot of every tool's name, title,
//! description, input schema, annotations and scopes, taken from the real server's `tools/list`.
//! A change to any manifest shows up here as a diff to review. Regenerate with
//! `KEYWARD_UPDATE_SNAPSHOTS=1 cargo test --test it catalog`.

use std::io::Write;
use std::process::Stdio;

use serde_json::Value;

use crate::support::home::Kw;

const SNAPSHOT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/snapshots/tools.json");

/// `tools/list` of `keyward serve --all-tools`, over stdio with plain JSON-RPC lines.
fn served_tools() -> Value {
    let kw = Kw::new();
    let mut child = kw
        .command(&["serve", "--all-tools"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    for line in [
        r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"snapshot","version":"1"}}}"#,
        r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#,
        r#"{"jsonrpc":"2.0","id":2,"method":"tools/list"}"#,
    ] {
        writeln!(stdin, "{line}").unwrap();
    }
    let mut reader = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut tools = None;
    for _ in 0..10 {
        let mut line = String::new();
        if std::io::BufRead::read_line(&mut reader, &mut line).unwrap() == 0 {
            break;
        }
        let msg: Value = serde_json::from_str(&line).expect("stdout carries only JSON-RPC");
        if msg["id"] == 2 {
            tools = Some(msg["result"]["tools"].clone());
            break;
        }
    }
    drop(stdin); // EOF: the server exits
    assert!(child.wait().unwrap().success());
    tools.expect("a tools/list answer")
}

#[test]
fn tool_definitions_match_the_committed_snapshot() {
    let tools = served_tools();
    let pretty = serde_json::to_string_pretty(&tools).unwrap() + "\n";
    if std::env::var_os("KEYWARD_UPDATE_SNAPSHOTS").is_some() {
        std::fs::write(SNAPSHOT, &pretty).unwrap();
        return;
    }
    let committed = std::fs::read_to_string(SNAPSHOT).unwrap_or_default();
    assert!(
        committed == pretty,
        "the tools the server lists differ from {SNAPSHOT}; review the change and regenerate it with \
         `KEYWARD_UPDATE_SNAPSHOTS=1 cargo test --test it catalog`"
    );
}

#[test]
fn every_tool_is_described_and_marked_for_the_model() {
    let tools = served_tools();
    let list = tools.as_array().unwrap();
    assert!(list.len() >= 21);
    for t in list {
        let name = t["name"].as_str().unwrap();
        assert!(
            t["description"].as_str().unwrap().len() >= 40,
            "{name}: describe when to use it"
        );
        assert!(t["inputSchema"]["type"] == "object", "{name}");
        assert!(
            t["_meta"]["keyward/scopes"].is_array(),
            "{name}: scopes in _meta"
        );
        // A hint left out means the MCP default (readOnly false, destructive true, idempotent
        // false, openWorld true); destructive/idempotent mean something only for a tool that
        // writes. Every tool's effective marking must match its manifest.
        let hint = |h: &str, default: bool| t["annotations"][h].as_bool().unwrap_or(default);
        assert!(hint("openWorldHint", true), "{name}");
        if hint("readOnlyHint", false) {
            assert!(t["annotations"].get("destructiveHint").is_none(), "{name}");
        } else {
            assert!(
                t["annotations"]["destructiveHint"].is_boolean(),
                "{name}: say whether it may delete"
            );
        }
    }
    let del = list
        .iter()
        .find(|t| t["name"] == "calendar_delete_event")
        .unwrap();
    assert_eq!(del["annotations"]["destructiveHint"], true);
    assert!(del["annotations"].get("readOnlyHint").is_none());
    let merge = list
        .iter()
        .find(|t| t["name"] == "github_merge_pull_request")
        .unwrap();
    assert_eq!(merge["annotations"]["destructiveHint"], true);
    // The size budget is `the_catalog_fits_the_context_budget` below.
}

/// Issue 16's context budget, over `tools/list --all-tools`: every session sends all tool
/// definitions to the model, so together they stay within 30 KB and 650 bytes per tool on
/// average (github-mcp-server 0.12.1: 682 B per tool). Measured as compact JSON of what the
/// model reads — name, title, description, input schema, annotations — without `_meta`
/// (`keyward/provider`, `keyward/toolset`, `keyward/scopes`), which is keyward's metadata for
/// the client and not part of a model's tool list (and which github-mcp-server's definitions,
/// the comparison, do not carry). The whole answer is printed too.
#[test]
fn the_catalog_fits_the_context_budget() {
    let tools = served_tools();
    let list = tools.as_array().unwrap();
    let for_model: Vec<Value> = list
        .iter()
        .map(|tool| {
            let mut tool = tool.clone();
            tool.as_object_mut().unwrap().remove("_meta");
            tool
        })
        .collect();
    let bytes = serde_json::to_vec(&for_model).unwrap().len();
    let whole = serde_json::to_vec(&tools).unwrap().len();
    let per_tool = bytes / list.len();
    println!(
        "tools/list --all-tools: {} tools, {bytes} bytes for the model ({per_tool} B/tool), \
         {whole} bytes with _meta",
        list.len()
    );
    assert!(
        bytes <= 30 * 1024,
        "the tool definitions take {bytes} bytes; the budget is 30 KB"
    );
    assert!(
        per_tool <= 650,
        "the tool definitions take {per_tool} bytes per tool on average; the budget is 650"
    );
}
