//! The official MCP conformance suite (`@modelcontextprotocol/conformance`, server scenarios)
//! against the real `keyward serve --http`, through tests/conformance/run.sh: every scenario
//! that does not need the suite's own fixtures passes, and the ones that do are listed in
//! tests/conformance/expected-failures.yml. The suite and the Node 22 it needs are installed
//! with npm under target/conformance on first use. Without npm the test is skipped, except in CI
//! (`CI=true`), where it must run.

use std::path::PathBuf;
use std::process::{Command, Stdio};

use crate::support::canary::assert_no_canary;
use crate::support::home::bin;

pub(crate) fn npm_available() -> bool {
    Command::new("npm")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

#[tokio::test(flavor = "multi_thread")]
async fn the_conformance_suite_passes_every_scenario_that_applies() {
    if !npm_available() {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "npm is required in CI for the conformance suite"
        );
        eprintln!("skipping the conformance suite: npm is not installed");
        return;
    }
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/conformance/run.sh");
    let mut cmd = Command::new("bash");
    cmd.arg(script).arg(bin()).env("RUST_LOG", "debug");
    let output =
        tokio::task::spawn_blocking(move || cmd.output().expect("run the conformance suite"))
            .await
            .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "the conformance suite failed:\n{stdout}\n{stderr}"
    );
    assert!(
        stdout.contains("all failures are expected") || stdout.contains("0 failed"),
        "{stdout}"
    );
    for passing in [
        "server-initialize",
        "tools-list",
        "ping",
        "dns-rebinding-protection",
    ] {
        assert!(
            stdout.contains(&format!("✓ {passing}:")),
            "{passing} passes:\n{stdout}"
        );
    }
    assert_no_canary("the conformance suite's output", &output.stdout);
}
