//! Fault injection for the crash and race tests, compiled into debug builds only.
//!
//! `KEYWARD_TEST_PAUSE_AT=<point>` makes the process print `keyward-test-hook: paused at
//! <point>` on stderr when it reaches `<point>` and then wait there, so a test can `kill -9` it
//! at exactly that moment, or change the world around it (kill another process) and then let
//! it go on: with `KEYWARD_TEST_RESUME_FILE=<path>` the pause ends once that file exists (and a
//! point reached after that does not pause at all). Points: `refresh-response` (the token
//! endpoint answered with new tokens, nothing written yet), `refresh-saved` (the new record is
//! written and flushed, not yet used) and `refresh-remote` (a process that does not own the
//! vault holds its refresh lock and is about to ask the owner to refresh). The integration tests
//! run the debug binary; a release build has no such variables (the function is empty there),
//! so they cannot be used to stall a real server.

/// Stop here if the environment asks for it (debug builds only).
#[cfg(debug_assertions)]
pub async fn pause_at(point: &str) {
    if std::env::var("KEYWARD_TEST_PAUSE_AT").ok().as_deref() != Some(point) {
        return;
    }
    let resume = std::env::var_os("KEYWARD_TEST_RESUME_FILE").map(std::path::PathBuf::from);
    if resume.as_ref().is_some_and(|file| file.exists()) {
        return;
    }
    eprintln!("keyward-test-hook: paused at {point}");
    loop {
        // Polling is fine here: this is test-only code, and the test waits for this line and
        // for the outcome, never for an amount of time.
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        if resume.as_ref().is_some_and(|file| file.exists()) {
            eprintln!("keyward-test-hook: resumed at {point}");
            return;
        }
    }
}

/// Release builds: nothing to see.
#[cfg(not(debug_assertions))]
pub async fn pause_at(_point: &str) {}
