//! `keyward` with a PostgreSQL store, through the real binary: `store status`, `store copy`
//! between a sled home and PostgreSQL both ways. The shared cluster of
//! `tests/support/postgres.rs`; without PostgreSQL these say so and pass (not under `CI=true`).

use serde_json::Value;

use crate::support::canary::assert_no_canary;
use crate::support::home::Kw;
use crate::support::postgres;
use crate::support::{CANARY_ACCESS, CANARY_REFRESH};

/// A password that must never be printed (trust authentication ignores it).
const PG_PASSWORD: &str = "kwcanary_pg_password_77";

/// `url` with the canary password in it.
fn with_password(url: &str) -> String {
    url.replacen("postgres@", &format!("postgres:{PG_PASSWORD}@"), 1)
}

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
    let rt = tokio::runtime::Runtime::new().unwrap();
    let read = |kw: &Kw| {
        let home = keyward::config::Home { dir: kw.home() };
        rt.block_on(keyward::vault::transfer::read(
            &keyward::vault::transfer::Location::Sled(home),
        ))
        .unwrap()
    };
    assert_eq!(
        read(&a),
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
