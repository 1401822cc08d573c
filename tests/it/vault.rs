//! The vault and its CLI, through the real binary and a real sled folder.

use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::process::Stdio;
use std::sync::Arc;

use keyward::secret::SecretString;
use keyward::vault::{ConnKey, ConnectionStatus, TokenRecord};

use crate::support::canary::contains_bytes;
use crate::support::home::{files_under, Kw};
use crate::support::{CANARY_ACCESS, CANARY_REFRESH};

fn key(account: &str) -> ConnKey {
    ConnKey::new("default", "github", account).unwrap()
}

#[test]
fn import_then_status_round_trip_without_leaking_tokens() {
    let kw = Kw::new();
    let run = kw.import("github", "work", CANARY_ACCESS, CANARY_REFRESH);
    assert!(
        run.stdout().contains("imported default/github/work"),
        "{}",
        run.stdout()
    );
    assert!(
        run.stderr().contains("created"),
        "first write explains what it created: {}",
        run.stderr()
    );
    run.assert_clean(&[CANARY_ACCESS, CANARY_REFRESH]);

    let table = kw.ok(&["status"], "");
    table.assert_clean(&[CANARY_ACCESS, CANARY_REFRESH]);
    let line = table
        .stdout()
        .lines()
        .find(|l| l.contains("work"))
        .expect("a row for the connection")
        .to_string();
    assert!(
        line.contains("github") && line.contains("active") && line.contains("repo read:user"),
        "{line}"
    );
    assert!(
        line.contains("7h") || line.contains("8h"),
        "expires in ~8h: {line}"
    );

    let json = kw.ok(&["status", "--json"], "");
    json.assert_clean(&[CANARY_ACCESS, CANARY_REFRESH]);
    let rows: serde_json::Value = serde_json::from_str(&json.stdout()).unwrap();
    assert_eq!(rows[0]["provider"], "github");
    assert_eq!(rows[0]["account"], "work");
    assert_eq!(rows[0]["scopes"], serde_json::json!(["repo", "read:user"]));
    assert_eq!(rows[0]["has_refresh_token"], true);
    assert!(rows[0]["expires_in_secs"].as_i64().unwrap() > 28000);

    let audit = kw.ok(&["audit", "--json"], "");
    audit.assert_clean(&[CANARY_ACCESS, CANARY_REFRESH]);
    let first: serde_json::Value =
        serde_json::from_str(audit.stdout().lines().next().unwrap()).unwrap();
    assert_eq!(
        (
            first["event"].as_str(),
            first["provider"].as_str(),
            first["outcome"].as_str()
        ),
        (Some("import"), Some("github"), Some("ok"))
    );

    // Neither token is stored in plaintext anywhere in the home folder.
    for (path, bytes) in files_under(&kw.home()) {
        assert!(
            !contains_bytes(&bytes, CANARY_ACCESS.as_bytes()),
            "{} holds the access token",
            path.display()
        );
        assert!(
            !contains_bytes(&bytes, CANARY_REFRESH.as_bytes()),
            "{} holds the refresh token",
            path.display()
        );
    }
    let mode = |p: std::path::PathBuf| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(kw.home()), 0o700);
    assert_eq!(mode(kw.home().join("master.key")), 0o600);
    assert_eq!(mode(kw.home().join("keyring.json")), 0o600);
    assert_eq!(mode(kw.home().join("vault")), 0o700);
}

#[test]
fn bad_imports_name_the_problem_and_write_nothing() {
    let kw = Kw::new();
    for (args, input, expect) in [
        (vec!["import", "github"], "{not json", "not valid JSON"),
        (
            vec!["import", "github"],
            r#"{"token_type":"bearer"}"#,
            "no `access_token`",
        ),
        (
            vec!["import", "gitlab"],
            r#"{"access_token":"x"}"#,
            "unknown provider \"gitlab\"",
        ),
        (vec!["import", "github"], "", "no token response on stdin"),
        (
            vec!["import", "github", "--account", "a/b"],
            r#"{"access_token":"x"}"#,
            "invalid account name",
        ),
    ] {
        let run = kw.run(&args, input);
        assert_eq!(run.code(), Some(2), "{args:?}: {}", run.stderr());
        assert!(run.stderr().contains(expect), "{args:?}: {}", run.stderr());
        assert!(
            !kw.home().exists(),
            "a failed import created {}",
            kw.home().display()
        );
    }
    // Once a vault exists, a bad import leaves it as it was.
    kw.import("github", "default", CANARY_ACCESS, CANARY_REFRESH);
    // `expires_in_secs` counts down between the two reads; everything else must be equal.
    let status = || {
        let mut rows: serde_json::Value =
            serde_json::from_str(&kw.ok(&["status", "--json"], "").stdout()).unwrap();
        for row in rows.as_array_mut().unwrap() {
            row.as_object_mut().unwrap().remove("expires_in_secs");
        }
        rows
    };
    let before = status();
    assert_eq!(
        kw.run(&["import", "github"], r#"{"access_token": 5}"#)
            .code(),
        Some(2)
    );
    assert_eq!(status(), before);
}

#[test]
fn slack_user_token_shape_is_imported() {
    let kw = Kw::new();
    let json = r#"{"ok":true,"access_token":"xoxb-bot-canary","authed_user":{"id":"U1","scope":"chat:write,channels:read","access_token":"kwcanary_slack_user","token_type":"user"}}"#;
    kw.ok(&["import", "slack", "--user", "alice"], json);
    let rows: serde_json::Value =
        serde_json::from_str(&kw.ok(&["status", "--json", "--user", "alice"], "").stdout())
            .unwrap();
    assert_eq!(
        rows[0]["scopes"],
        serde_json::json!(["chat:write", "channels:read"])
    );
    assert_eq!(rows[0]["user"], "alice");
}

fn assert_record_rejected(kw: &Kw, account: &str) {
    let run = kw.run(&["status"], "");
    assert_eq!(run.code(), Some(1), "{}", run.stdout());
    assert!(
        run.stderr().contains(&format!(
            "the record default/github/{account} does not open"
        )),
        "{}",
        run.stderr()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_flipped_byte_is_rejected_and_names_the_record() {
    let kw = Kw::new();
    kw.import("github", "a", CANARY_ACCESS, CANARY_REFRESH);
    kw.import("github", "b", "other-token", "other-refresh");
    {
        let vault = kw.vault().await;
        let mut raw = vault.raw_record(&key("a")).unwrap().unwrap();
        let last = raw.len() - 20;
        raw[last] ^= 0x40;
        vault.raw_put_record(&key("a"), &raw).unwrap();
    }
    assert_record_rejected(&kw, "a");
    // The other record still works.
    let run = kw.run(&["status"], "");
    assert!(
        run.stdout()
            .lines()
            .any(|l| l.contains(" b ") && l.contains("active")),
        "{}",
        run.stdout()
    );
    let audit = kw.ok(&["audit"], "").stdout();
    assert!(audit.contains("open-failed"), "{audit}");
}

#[tokio::test(flavor = "multi_thread")]
async fn swapped_blobs_are_both_rejected() {
    let kw = Kw::new();
    kw.import("github", "a", CANARY_ACCESS, CANARY_REFRESH);
    kw.import("github", "b", "other-token", "other-refresh");
    {
        let vault = kw.vault().await;
        let a = vault.raw_record(&key("a")).unwrap().unwrap();
        let b = vault.raw_record(&key("b")).unwrap().unwrap();
        vault.raw_put_record(&key("a"), &b).unwrap();
        vault.raw_put_record(&key("b"), &a).unwrap();
    }
    assert_record_rejected(&kw, "a");
    assert_record_rejected(&kw, "b");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_older_blob_restored_in_place_is_rejected() {
    let kw = Kw::new();
    kw.import("github", "a", CANARY_ACCESS, CANARY_REFRESH);
    let old = kw.vault().await.raw_record(&key("a")).unwrap().unwrap();
    kw.import("github", "a", "newer-token", "newer-refresh");
    kw.vault().await.raw_put_record(&key("a"), &old).unwrap();
    let run = kw.run(&["status"], "");
    assert_eq!(run.code(), Some(1));
    assert!(
        run.stderr().contains("an older copy was put back"),
        "{}",
        run.stderr()
    );
    // A record that does not open cannot be revoked (its token is unreadable): disconnect says
    // so and names `--force`, which removes keyward's copy.
    let refused = kw.run(&["disconnect", "github", "--account", "a"], "");
    assert_eq!(refused.code(), Some(1));
    assert!(refused.stderr().contains("--force"), "{}", refused.stderr());
    // A record removed and added again gets a fresh version, so its old blob cannot come back.
    kw.ok(&["disconnect", "github", "--account", "a", "--force"], "");
    kw.import("github", "a", "third-token", "third-refresh");
    kw.vault().await.raw_put_record(&key("a"), &old).unwrap();
    assert_eq!(kw.run(&["status"], "").code(), Some(1));
}

#[test]
fn a_wrong_master_key_is_a_clear_error_and_changes_no_file() {
    let mut kw = Kw::new();
    kw.import("github", "a", CANARY_ACCESS, CANARY_REFRESH);
    let before = files_under(&kw.home());
    kw.env.push((
        "KEYWARD_MASTER_KEY".into(),
        "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=".into(),
    ));
    for args in [
        vec!["status"],
        vec!["rotate-key"],
        vec!["disconnect", "github", "--account", "a"],
        vec!["audit"],
    ] {
        let run = kw.run(&args, "");
        assert_eq!(run.code(), Some(1), "{args:?}");
        assert!(
            run.stderr()
                .contains("the master key does not open this vault (key id"),
            "{}",
            run.stderr()
        );
        assert!(
            run.stderr()
                .contains("check KEYWARD_MASTER_KEY / master.key"),
            "{}",
            run.stderr()
        );
    }
    let run = kw.run(
        &["import", "github", "--account", "z"],
        r#"{"access_token":"zz"}"#,
    );
    assert_eq!(run.code(), Some(1));
    assert_eq!(
        files_under(&kw.home()),
        before,
        "a failed open rewrote a file"
    );

    kw.env[0].1 = "not base64!".into();
    let run = kw.run(&["status"], "");
    assert_eq!(run.code(), Some(1));
    assert!(
        run.stderr()
            .contains("KEYWARD_MASTER_KEY is not a valid master key"),
        "{}",
        run.stderr()
    );
}

#[test]
fn a_key_file_readable_by_others_is_refused() {
    let kw = Kw::new();
    kw.import("github", "a", CANARY_ACCESS, CANARY_REFRESH);
    let key_file = kw.home().join("master.key");
    std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let run = kw.run(&["status"], "");
    assert_eq!(run.code(), Some(1));
    assert!(run.stderr().contains("has mode 0644"), "{}", run.stderr());
    assert!(
        run.stderr()
            .contains(&format!("chmod 600 {}", key_file.display())),
        "{}",
        run.stderr()
    );
    run.assert_clean(&[CANARY_ACCESS]);
}

#[test]
fn master_key_from_the_environment() {
    let mut kw = Kw::new();
    kw.env.push((
        "KEYWARD_MASTER_KEY".into(),
        "MDEyMzQ1Njc4OTAxMjM0NTY3ODkwMTIzNDU2Nzg5MDE=".into(),
    ));
    kw.import("github", "a", CANARY_ACCESS, CANARY_REFRESH);
    assert!(
        !kw.home().join("master.key").exists(),
        "no key file when the key comes from the environment"
    );
    assert!(kw.ok(&["status"], "").stdout().contains("active"));
    // Without the variable there is no key at all: a clear error.
    kw.env.clear();
    let run = kw.run(&["status"], "");
    assert_eq!(run.code(), Some(1));
    assert!(
        run.stderr().contains("there is no master key"),
        "{}",
        run.stderr()
    );
    // rekey cannot write the environment: it asks for a key file.
    kw.env.push((
        "KEYWARD_MASTER_KEY".into(),
        "MDEyMzQ1Njc4OTAxMjM0NTY3ODkwMTIzNDU2Nzg5MDE=".into(),
    ));
    let run = kw.run(&["rekey"], "");
    assert_eq!(run.code(), Some(2));
    assert!(run.stderr().contains("--new-key-file"), "{}", run.stderr());
}

#[test]
fn rekey_replaces_the_master_key_and_keeps_every_record() {
    let kw = Kw::new();
    kw.import("github", "a", CANARY_ACCESS, CANARY_REFRESH);
    kw.import("slack", "b", "t2", "r2");
    let old_key = std::fs::read_to_string(kw.home().join("master.key")).unwrap();
    let run = kw.ok(&["rekey"], "");
    run.assert_clean(&[old_key.trim()]);
    let new_key = std::fs::read_to_string(kw.home().join("master.key")).unwrap();
    assert_ne!(old_key, new_key);
    assert!(
        !run.stdout().contains(new_key.trim()),
        "rekey printed the key"
    );
    assert_eq!(kw.ok(&["status"], "").stdout().matches("active").count(), 2);
    // The old key no longer opens the vault.
    let mut cmd = kw.command(&["status"]);
    cmd.env("KEYWARD_MASTER_KEY", old_key.trim());
    let out = cmd.output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("does not open this vault"));

    // --new-key-file: the key given becomes the key file.
    let file = kw.dir.path().join("new.key");
    std::fs::write(&file, "MDEyMzQ1Njc4OTAxMjM0NTY3ODkwMTIzNDU2Nzg5MDE=\n").unwrap();
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
    kw.ok(&["rekey", "--new-key-file", file.to_str().unwrap()], "");
    assert_eq!(
        std::fs::read_to_string(kw.home().join("master.key"))
            .unwrap()
            .trim(),
        "MDEyMzQ1Njc4OTAxMjM0NTY3ODkwMTIzNDU2Nzg5MDE="
    );
    assert_eq!(kw.ok(&["status"], "").stdout().matches("active").count(), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn every_vault_administration_command_leaves_its_audit_entry() {
    // The commands only print; the entries are written by the library calls they make. So each
    // command's entry is checked here through the real binary: its user, event and outcome, in
    // order, and nothing for a command that changed nothing.
    let kw = Kw::new();
    kw.import("github", "a", CANARY_ACCESS, CANARY_REFRESH);
    kw.import("github", "b", "other-token", "other-refresh");
    kw.ok(&["users", "add", "alice"], "");
    kw.ok(&["users", "remove", "alice"], "");
    assert_eq!(kw.run(&["users", "remove", "alice"], "").code(), Some(1));
    {
        let vault = kw.vault().await;
        let mut raw = vault.raw_record(&key("a")).unwrap().unwrap();
        let last = raw.len() - 20;
        raw[last] ^= 0x40;
        vault.raw_put_record(&key("a"), &raw).unwrap();
    }
    assert_record_rejected(&kw, "a");
    assert_eq!(kw.run(&["rotate-key"], "").code(), Some(1));
    kw.ok(&["rekey"], "");

    let events: Vec<String> = crate::support::canary::audit_json(&kw)
        .iter()
        .map(|e| {
            let field = |name: &str| e[name].as_str().unwrap_or("").to_string();
            let connection = match (e["provider"].as_str(), e["account"].as_str()) {
                (Some(p), Some(a)) => format!(" {p}/{a}"),
                _ => String::new(),
            };
            format!(
                "{} {}{connection}: {}",
                field("user"),
                field("event"),
                field("outcome")
            )
        })
        .collect();
    assert_eq!(
        events,
        [
            "default import github/a: ok",
            "default import github/b: ok",
            "alice user-add: ok",
            "alice user-remove: ok",
            "default open-failed github/a: error: record does not open",
            "- rotate-key: error: 1 record(s) did not open",
            "- rekey: ok",
        ]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn rotate_key_killed_midway_leaves_everything_readable_and_a_rerun_finishes() {
    let kw = Kw::new();
    for i in 0..30 {
        kw.import(
            "github",
            &format!("acct{i}"),
            &format!("tok{i}"),
            &format!("ref{i}"),
        );
    }
    let mut child = kw
        .command(&["rotate-key"])
        .env("KEYWARD_TEST_ROTATE_PAUSE_MS", "40")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    loop {
        let line = lines
            .next()
            .expect("rotate-key ended before 10 records")
            .unwrap();
        if line.contains("re-sealed 10/30") {
            break;
        }
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();

    // Every record still opens: some under the new key, the rest under the old one.
    {
        let vault = kw.vault().await;
        let rows = vault.list(None).await.unwrap();
        assert_eq!(rows.len(), 30);
        assert!(rows.iter().all(|r| r.is_ok()));
    }
    let run = kw.ok(&["rotate-key"], "");
    assert!(
        run.stdout().contains("data key 2 is now current"),
        "the rerun resumes the same rotation: {}",
        run.stdout()
    );
    let vault = kw.vault().await;
    assert_eq!(
        vault
            .list(None)
            .await
            .unwrap()
            .iter()
            .filter(|r| r.is_ok())
            .count(),
        30
    );
    assert_eq!(vault.current_key_id().await, 2);
    let conn = vault.get(&key("acct7")).await.unwrap().unwrap();
    assert_eq!(conn.record.access_token.expose(), "tok7");
}

#[tokio::test(flavor = "multi_thread")]
async fn kill_9_while_importing_loses_no_acknowledged_write() {
    let kw = Kw::new();
    kw.import("github", "seed", "seed", "seed"); // create the vault once
    let mut acknowledged = Vec::new();
    for round in 0..20u64 {
        // A few imports that finish (acknowledged), then one killed with SIGKILL at a moment
        // that varies from round to round: before, during or after its write.
        for n in 0..3 {
            let account = format!("r{round}n{n}");
            let run = kw.run(
                &["import", "github", "--account", &account],
                r#"{"access_token":"t"}"#,
            );
            if run.0.status.success() {
                acknowledged.push(account);
            }
        }
        let mut child = kw
            .command(&["import", "github", "--account", &format!("r{round}killed")])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(br#"{"access_token":"t"}"#)
            .unwrap();
        // Not a wait for a condition: this pause is what varies the moment of the kill.
        std::thread::sleep(std::time::Duration::from_millis((round * 3) % 30));
        let _ = child.kill(); // SIGKILL
        if child.wait().unwrap().success() {
            acknowledged.push(format!("r{round}killed"));
        }
        // The vault opens after every kill.
        drop(kw.vault().await);
    }
    let vault = kw.vault().await;
    let present: std::collections::HashSet<String> = vault
        .list(None)
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.expect("every record opens").0.key.account)
        .collect();
    for account in &acknowledged {
        assert!(
            present.contains(account),
            "acknowledged import {account} is missing"
        );
    }
    assert!(acknowledged.len() >= 60);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_vault_handle_serves_64_concurrent_tasks() {
    let kw = Kw::new();
    kw.import("github", "shared", "v0", "r0");
    let vault = Arc::new(kw.vault().await);
    let mut tasks = Vec::new();
    for t in 0..64 {
        let vault = vault.clone();
        tasks.push(tokio::spawn(async move {
            let own = ConnKey::new("default", "slack", &format!("task{t}")).unwrap();
            for i in 0..20 {
                let record = TokenRecord {
                    access_token: SecretString::new(format!("task{t}-{i}")),
                    refresh_token: None,
                    token_type: "bearer".into(),
                    expires_at: None,
                    scopes: vec![],
                    obtained_at: 0,
                    status: ConnectionStatus::Active,
                };
                vault.put(&own, None, &record).await.unwrap();
                assert_eq!(
                    vault
                        .get(&own)
                        .await
                        .unwrap()
                        .unwrap()
                        .record
                        .access_token
                        .expose(),
                    format!("task{t}-{i}")
                );
                // Everyone increments the shared record's counter with compare-and-swap.
                loop {
                    let conn = vault.get(&key("shared")).await.unwrap().unwrap();
                    let n: u64 = conn.record.access_token.expose()[1..].parse().unwrap();
                    let mut next = conn.record.clone();
                    next.access_token = SecretString::new(format!("v{}", n + 1));
                    match vault.put(&key("shared"), Some(conn.version), &next).await {
                        Ok(_) => break,
                        Err(keyward::error::Error::Conflict(_)) => continue,
                        Err(e) => panic!("{e}"),
                    }
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let shared = vault.get(&key("shared")).await.unwrap().unwrap();
    assert_eq!(
        shared.record.access_token.expose(),
        format!("v{}", 64 * 20),
        "a CAS increment was lost"
    );
    assert_eq!(vault.list(None).await.unwrap().len(), 65);
}

#[test]
fn disconnect_removes_and_a_missing_connection_is_a_clear_error() {
    let kw = Kw::new();
    kw.import("github", "a", CANARY_ACCESS, CANARY_REFRESH);
    // No OAuth app is configured here, so the grant cannot be revoked at GitHub: `--force`
    // removes keyward's copy anyway (revocation itself is tested in `oauth`).
    kw.ok(&["disconnect", "github", "--account", "a", "--force"], "");
    assert!(kw.ok(&["status"], "").stdout().contains("no connections"));
    let run = kw.run(&["disconnect", "github", "--account", "a", "--force"], "");
    assert_eq!(run.code(), Some(1));
    assert!(
        run.stderr()
            .contains("there is no connection default/github/a"),
        "{}",
        run.stderr()
    );
    let audit = kw.ok(&["audit", "--limit", "1"], "").stdout();
    assert_eq!(audit.lines().count(), 1);
    assert!(audit.contains("disconnect"), "{audit}");
}

#[test]
fn usage_errors_exit_2() {
    let kw = Kw::new();
    assert_eq!(kw.run(&["no-such-command"], "").code(), Some(2));
    assert_eq!(kw.run(&["import"], "").code(), Some(2));
}

#[test]
fn a_command_that_exits_without_reading_stdin_is_judged_by_its_exit_code() {
    // More input than a pipe holds: the write cannot finish before the command exits, so the
    // test sees the closed pipe every time (as it sometimes did under load with small inputs).
    let kw = Kw::new();
    let big = "x".repeat(1 << 20);
    assert_eq!(kw.run(&["no-such-command"], &big).code(), Some(2));
}

fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

fn chmod(path: &std::path::Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// A refused command: exit 1, and stderr names `path` and the command that fixes it.
fn assert_refused(run: &crate::support::home::Run, path: &std::path::Path, fix: &str) {
    assert_eq!(run.code(), Some(1), "not refused: {}", run.stdout());
    let stderr = run.stderr();
    assert!(
        stderr.contains(&path.display().to_string()) && stderr.contains(fix),
        "the error should name {} and `{fix}`: {stderr}",
        path.display()
    );
}

/// Invariant 13: a home folder, `vault/`, `config.toml`, tools folder or manifest that group or
/// others can write to is refused, with the chmod that fixes it; fixed, everything works again.
#[test]
fn paths_others_can_write_to_are_refused_with_the_fix() {
    let kw = Kw::new();
    kw.import("github", "a", CANARY_ACCESS, CANARY_REFRESH);
    let home = kw.home();

    chmod(&home, 0o770);
    assert_refused(
        &kw.run(&["status"], ""),
        &home,
        &format!("chmod 700 {}", home.display()),
    );
    let import = kw.run(
        &["import", "github", "--account", "b"],
        &crate::support::home::token_json("x", "y"),
    );
    assert_refused(&import, &home, "chmod 700");
    chmod(&home, 0o700);

    let vault_dir = home.join("vault");
    chmod(&vault_dir, 0o777);
    let fix = format!("chmod 700 {}", vault_dir.display());
    assert_refused(&kw.run(&["status"], ""), &vault_dir, &fix);
    chmod(&vault_dir, 0o700);

    let config = home.join("config.toml");
    std::fs::write(&config, "").unwrap();
    chmod(&config, 0o666);
    let fix = format!("chmod go-w {}", config.display());
    assert_refused(&kw.run(&["tools"], ""), &config, &fix);
    chmod(&config, 0o644);

    let tools = kw.dir.path().join("tools");
    std::fs::create_dir(&tools).unwrap();
    chmod(&tools, 0o777);
    let mut kw = kw;
    kw.env
        .push(("KEYWARD_TOOLS_DIR".into(), tools.display().to_string()));
    let fix = format!("chmod go-w {}", tools.display());
    assert_refused(&kw.run(&["tools"], ""), &tools, &fix);
    chmod(&tools, 0o755);
    let manifest = tools.join("extra.toml");
    std::fs::write(&manifest, "").unwrap();
    chmod(&manifest, 0o646);
    let fix = format!("chmod go-w {}", manifest.display());
    assert_refused(&kw.run(&["tools"], ""), &manifest, &fix);
    std::fs::remove_file(&manifest).unwrap();

    assert!(kw.ok(&["status"], "").stdout().contains("github"));
}

/// Invariant 13: a home folder owned by another uid is refused (it could hold another user's
/// socket, which would receive every imported token), naming the chown that fixes it.
#[test]
fn a_home_owned_by_another_user_is_refused() {
    if !is_root() {
        eprintln!("skipped: needs root to give a folder to another uid");
        return;
    }
    let kw = Kw::new();
    kw.import("github", "a", CANARY_ACCESS, CANARY_REFRESH);
    let home = kw.home();
    std::os::unix::fs::chown(&home, Some(65534), Some(65534)).unwrap();
    let fix = format!("chown -R 0 {}", home.display());
    assert_refused(&kw.run(&["status"], ""), &home, &fix);
    let import = kw.run(
        &["import", "github", "--account", "b"],
        &crate::support::home::token_json("x", "y"),
    );
    assert_refused(&import, &home, &fix);
    std::os::unix::fs::chown(&home, Some(0), Some(0)).unwrap();
    assert!(kw.ok(&["status"], "").stdout().contains("github"));
}

/// An owner that is exiting removes its socket before its database is closed. A command that
/// starts in between waits for the lock and takes over instead of failing. Here the test plays
/// that owner: it holds the owner lock and the database, with no socket, and lets go a moment
/// after the command started.
#[test]
fn a_command_racing_an_exiting_owner_waits_and_takes_over() {
    let kw = Kw::new();
    kw.import("github", "a", CANARY_ACCESS, CANARY_REFRESH);
    let lock = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(kw.home().join("keyward.lock"))
        .unwrap();
    rustix::fs::flock(&lock, rustix::fs::FlockOperation::NonBlockingLockExclusive).unwrap();
    let db = sled::open(kw.home().join("vault")).unwrap();
    assert!(!kw.home().join("keyward.sock").exists());

    let tried = on_close_write(&kw.home().join("keyward.lock"));
    let status = kw
        .command(&["status", "--json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Let go once the command has tried the lock (it opens the lock file, finds it taken and
    // closes it): it must then wait and end up owning the vault.
    tried
        .recv_timeout(std::time::Duration::from_secs(60))
        .expect("keyward status tried the owner lock within 60 s");
    drop(db);
    drop(lock);
    let out = status.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "status failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("\"github\""));
}

/// Fires once a process closes `path` after opening it for writing: how a test sees that a
/// command tried the owner lock (the test must hold the file open itself, or it would fire too).
fn on_close_write(path: &std::path::Path) -> std::sync::mpsc::Receiver<()> {
    use rustix::fs::inotify;
    let watch = inotify::init(inotify::CreateFlags::CLOEXEC).unwrap();
    inotify::add_watch(&watch, path, inotify::WatchFlags::CLOSE_WRITE).unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    // A blocking read: the thread ends with the first event (or with the test binary).
    std::thread::spawn(move || {
        let mut buf = [std::mem::MaybeUninit::uninit(); 1024];
        if inotify::Reader::new(&watch, &mut buf).next().is_ok() {
            let _ = tx.send(());
        }
    });
    rx
}
