//! Fault injection for the crash tests, compiled into debug builds only.
//!
//! `KEYWARD_TEST_PAUSE_AT=<point>` makes the process print `keyward-test-hook: paused at
//! <point>` on stderr when it reaches `<point>` and then wait there until it is killed, so a
//! test can `kill -9` it at exactly that moment. Points: `refresh-response` (the token endpoint
//! answered with new tokens, nothing written yet) and `refresh-saved` (the new record is written
//! and flushed, not yet used). The integration tests run the debug binary; a release build has
//! no such variable (the function is empty there), so it cannot be used to stall a real server.

/// Stop here if the environment asks for it (debug builds only).
#[cfg(debug_assertions)]
pub async fn pause_at(point: &str) {
    if std::env::var("KEYWARD_TEST_PAUSE_AT").ok().as_deref() == Some(point) {
        eprintln!("keyward-test-hook: paused at {point}");
        loop {
            tokio::time::sleep(std::time::Duration::from_secs(3600)).await;
        }
    }
}

/// Release builds: nothing to see.
#[cfg(not(debug_assertions))]
pub async fn pause_at(_point: &str) {}
