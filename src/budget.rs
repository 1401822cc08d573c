//! Deadlines from time budgets.
//!
//! A tool call has one budget (`call_budget_ms`) that every wait inside it — the upstream
//! request and its retries, a refresh, a lock — must fit in. Budgets come from configuration and
//! from other processes, and waits from providers (`Retry-After`), so any of them may be absurd;
//! turning one into an `Instant` must never overflow the clock (which panics).

use std::time::{Duration, Instant};

/// The instant `budget` from now. Budgets come from configuration and from other processes, so
/// they may be absurd (`call_budget_ms = 18446744073709551615`); a century is as good as
/// forever, and nothing here can overflow the clock.
pub fn deadline_after(budget: Duration) -> Instant {
    const CENTURY: Duration = Duration::from_secs(100 * 365 * 86_400);
    let now = Instant::now();
    now.checked_add(budget.min(CENTURY)).unwrap_or(now)
}
