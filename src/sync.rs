//! Locks that outlive a panic.
//!
//! A std `Mutex` or `RwLock` is *poisoned* when a thread panics while holding it, and every later
//! `lock().expect(..)` then panics too: one request that panics (a bug, a failed allocation, a
//! panicking dependency) would turn every later request of the server into a panic. The tables
//! these helpers guard (session owners, open sessions, per-connection bookkeeping, the pool of
//! connections to the vault owner) hold plain maps whose every update is a single insert or
//! remove, so whatever the panicking thread left behind is still a consistent map: we take it
//! and carry on.
//!
//! Locks whose data can be left half-updated by a panic (the keyring while a rotation rewrites
//! it) keep failing loudly instead; they do not use these helpers.

use std::sync::{Mutex, MutexGuard, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

/// Lock `mutex`, even if a panic poisoned it.
pub fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Read-lock `lock`, even if a panic poisoned it.
pub fn read<T>(lock: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(PoisonError::into_inner)
}

/// Write-lock `lock`, even if a panic poisoned it.
pub fn write<T>(lock: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(PoisonError::into_inner)
}
