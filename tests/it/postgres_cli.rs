//! `keyward` with a PostgreSQL store, through the real binary: every command on a store named by
//! `KEYWARD_STORE_URL`, `store status`, `store copy` between a sled home and PostgreSQL both ways. The shared cluster of
//! `tests/support/postgres.rs`; without PostgreSQL these say so and pass (not under `CI=true`).

use serde_json::Value;

use crate::support::canary::assert_no_canary;
use crate::support::home::{github_grant, home_for, Kw};
use crate::support::postgres::{self, on_store, replica_of, with_password, PG_PASSWORD};
use crate::support::{FakeUpstream, CANARY_ACCESS, CANARY_REFRESH, GITHUB_LOGIN};

fn clean(run: &crate::support::home::Run) {
    run.assert_clean(&[CANARY_ACCESS, CANARY_REFRESH, PG_PASSWORD]);
}

fn store_status(kw: &Kw) -> Value {
    let run = kw.ok(&["store", "status", "--json"], "");
    clean(&run);
    serde_json::from_str(&run.stdout()).unwrap()
}

#[test]
fn store_copy_sled_to_postgres_and_back_is_identical() {
    let Some(pg) = postgres::shared() else { return };
    let url = with_password(&pg.database());
    let a = Kw::new();
    a.import(
        "github",
        "default",
        &format!("{CANARY_ACCESS}.a"),
        &format!("{CANARY_REFRESH}.a"),
    );
    a.import(
        "slack",
        "work",
        &format!("{CANARY_ACCESS}.s"),
        &format!("{CANARY_REFRESH}.s"),
    );
    a.ok(&["disconnect", "slack", "--account", "work", "--force"], "");
    a.ok(&["users", "add", "alice"], "");
    // A token exchange noted on the connection (a hint `status` shows) travels too.
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let vault = a.vault().await;
        let key = keyward::vault::ConnKey::new("default", "github", "default").unwrap();
        let note = keyward::vault::clients::LastExchange {
            time: 1_700_000_000,
            client: "ci-bot".into(),
            outcome: "ok".into(),
        };
        vault.note_exchange(&key, note).await;
        vault.flush().await.unwrap();
    });
    let sled = store_status(&a);
    assert_eq!(sled["backend"], "sled");
    assert_eq!(
        (sled["connections"].as_u64(), sled["users"].as_u64()),
        (Some(1), Some(1))
    );

    // Into PostgreSQL; refused a second time without --force.
    let run = a.ok(&["store", "copy", "--to", &url], "");
    clean(&run);
    assert!(
        run.stdout().contains("copied 1 connection(s), 1 user(s)"),
        "{}",
        run.stdout()
    );
    assert!(
        run.stderr()
            .contains(sled["master_key_id"].as_str().unwrap()),
        "{}",
        run.stderr()
    );
    let again = a.run(&["store", "copy", "--to", &url], "");
    clean(&again);
    assert_eq!(again.code(), Some(2), "{}", again.stderr());
    assert!(again.stderr().contains("--force"), "{}", again.stderr());

    // The copy as a store of its own: same counts, and the server's figures.
    let mut on_pg = Kw::new();
    std::fs::create_dir_all(on_pg.home()).unwrap();
    std::fs::copy(a.home().join("master.key"), on_pg.home().join("master.key")).unwrap();
    on_pg.env.push(("KEYWARD_STORE_URL".into(), url.clone()));
    let status = store_status(&on_pg);
    assert_eq!(status["backend"], "postgres");
    assert_eq!(status["connections"], sled["connections"]);
    assert_eq!(status["users"], sled["users"]);
    assert_eq!(status["audit_entries"], sled["audit_entries"]);
    assert_eq!(status["master_key_id"], sled["master_key_id"]);
    assert!(status["server_version"]
        .as_str()
        .unwrap()
        .starts_with(char::is_numeric));
    assert!(status["round_trip_ms"].as_f64().unwrap() > 0.0);
    assert!(!status["location"].as_str().unwrap().contains(PG_PASSWORD));

    // And back into a fresh sled home, from the PostgreSQL side: the same vault.
    let b = Kw::new();
    let back = b.home();
    let run = on_pg.ok(&["store", "copy", "--to", back.to_str().unwrap()], "");
    clean(&run);
    std::fs::copy(a.home().join("master.key"), b.home().join("master.key")).unwrap();
    let read = |kw: &Kw| {
        let home = keyward::config::Home { dir: kw.home() };
        rt.block_on(keyward::vault::transfer::read(
            &keyward::vault::transfer::Location::Sled(home),
        ))
        .unwrap()
    };
    let original = read(&a);
    assert!(original
        .connections
        .iter()
        .any(|c| c.last_exchange.is_some()));
    assert_eq!(
        original,
        read(&b),
        "sled → PostgreSQL → sled changed the vault"
    );
    // `expires_in_secs` counts down between the two commands; `expires_at` is compared.
    let status = |kw: &Kw| {
        let mut rows: Vec<serde_json::Value> =
            serde_json::from_str(&kw.ok(&["status", "--json"], "").stdout()).unwrap();
        for row in &mut rows {
            row.as_object_mut().unwrap().remove("expires_in_secs");
        }
        rows
    };
    assert_eq!(status(&b), status(&a));

    // --from: this home's store is the target.
    let c = Kw::new();
    let run = c.ok(&["store", "copy", "--from", &url], "");
    clean(&run);
    assert_eq!(read(&c), read(&a));

    let dump = pg.pg_dump(&url.replacen(&format!(":{PG_PASSWORD}"), "", 1));
    assert_no_canary("pg_dump", &dump);
}

/// Every command of the issue honours `KEYWARD_STORE_URL`: the vault is in PostgreSQL (the
/// home keeps only its config and master key), and a second machine's home with the same
/// master key sees and changes the same vault.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_command_uses_the_store_the_url_names() {
    let Some(pg) = postgres::shared() else { return };
    let url = with_password(&pg.database());
    let fake = FakeUpstream::start().await;
    let kw = on_store(home_for(&fake, &[]), &url);

    let empty = kw.ok(&["status"], "");
    clean(&empty);
    assert!(
        empty
            .stdout()
            .contains("no vault in postgres://postgres@127.0.0.1"),
        "{}",
        empty.stdout()
    );
    let init = kw.ok(&["init"], "");
    clean(&init);
    assert!(
        init.stdout()
            .contains("keyring in postgres://postgres@127.0.0.1")
            && init.stdout().contains("vault:  postgres://"),
        "{}",
        init.stdout()
    );
    let (access, refresh) = github_grant(&fake, "pgcli");
    clean(&kw.import("github", "default", &access, &refresh));
    let me = |kw: &Kw| {
        let run = kw.ok(&["call", "github_get_me"], "");
        clean(&run);
        let me: Value = serde_json::from_str(&run.stdout()).unwrap();
        assert_eq!(me["login"], GITHUB_LOGIN, "{me}");
    };
    me(&kw);
    let key = kw
        .ok(&["users", "add", "alice"], "")
        .stdout()
        .trim()
        .to_string();
    assert!(key.starts_with("kw_"), "{key}");
    assert!(kw.ok(&["users", "list"], "").stdout().contains("alice"));
    let client = kw.ok(
        &[
            "clients",
            "add",
            "ci-bot",
            "--providers",
            "github",
            "--scopes",
            "repo read:user",
        ],
        "",
    );
    let client_secret = client
        .stdout()
        .lines()
        .find_map(|l| l.strip_prefix("client_secret="))
        .expect("clients add prints the secret")
        .to_string();

    let rotated = kw.ok(&["rotate-key"], "");
    clean(&rotated);
    assert!(
        rotated
            .stdout()
            .contains("data key 2 is now current; re-sealed 1 of 1"),
        "{}",
        rotated.stdout()
    );
    me(&kw);
    let old_key = std::fs::read(kw.home().join("master.key")).unwrap();
    clean(&kw.ok(&["rekey"], ""));
    assert_ne!(
        std::fs::read(kw.home().join("master.key")).unwrap(),
        old_key
    );
    me(&kw);

    // Another machine: the same config, the (new) master key, the same URL.
    let other = replica_of(&kw);
    me(&other);
    let rows: Vec<Value> =
        serde_json::from_str(&other.ok(&["status", "--json"], "").stdout()).unwrap();
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0]["status"], "active", "{rows:?}");
    assert!(
        rows[0]["last_used"].is_i64(),
        "the calls noted the use: {rows:?}"
    );
    let status = store_status(&other);
    assert_eq!(status["backend"], "postgres");
    assert_eq!(status["schema"], keyward::vault::postgres::SCHEMA_VERSION);
    assert_eq!(
        (status["connections"].as_u64(), status["users"].as_u64()),
        (Some(1), Some(1))
    );

    assert!(other
        .ok(&["clients", "list"], "")
        .stdout()
        .contains("ci-bot"));
    other.ok(&["disconnect", "github", "--force"], "");
    let rows: Vec<Value> =
        serde_json::from_str(&kw.ok(&["status", "--json"], "").stdout()).unwrap();
    assert!(
        rows.is_empty(),
        "disconnected on the other machine: {rows:?}"
    );
    other.ok(&["users", "remove", "alice"], "");
    assert!(!kw.ok(&["users", "list"], "").stdout().contains("alice"));

    let audit = crate::support::canary::audit_json(&kw);
    let events: Vec<&str> = audit.iter().filter_map(|e| e["event"].as_str()).collect();
    for event in ["tool-call", "rotate-key", "rekey"] {
        assert!(events.contains(&event), "no {event} in {events:?}");
    }
    assert_eq!(
        audit.iter().filter(|e| e["event"] == "tool-call").count(),
        4,
        "every call, on either machine, in the one log: {audit:?}"
    );
    // Nothing of the vault in either home: no sled database, keyring or owner socket.
    for home in [kw.home(), other.home()] {
        for file in ["vault", "keyring.json", "keyward.sock"] {
            assert!(!home.join(file).exists(), "{} has {file}", home.display());
        }
    }
    let dump = pg.pg_dump(&url.replacen(&format!(":{PG_PASSWORD}"), "", 1));
    assert_no_canary("pg_dump", &dump);
    for secret in [&key, &client_secret] {
        assert!(!crate::support::canary::contains_bytes(
            &dump,
            secret.as_bytes()
        ));
    }
}
