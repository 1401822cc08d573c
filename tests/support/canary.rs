//! Canary greps: every token a test hands keyward carries a canary marker
//! ([`super::CANARY_ACCESS`], [`super::CANARY_REFRESH`]), and these look for it (or for any
//! secret the fake knows) where it must never appear.

use super::home::{Kw, Run};
use super::{FakeUpstream, Provider, CANARY_ACCESS, CANARY_REFRESH};
use serde_json::Value;

pub fn contains_bytes(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// Assert that no canary token appears in `bytes`.
pub fn assert_no_canary(what: &str, bytes: &[u8]) {
    for canary in [CANARY_ACCESS, CANARY_REFRESH] {
        assert!(
            !contains_bytes(bytes, canary.as_bytes()),
            "{what} contains a token"
        );
    }
}

/// Every audit record of the home, as JSON lines (via the real CLI).
pub fn audit_json(kw: &Kw) -> Vec<Value> {
    let run = kw.ok(&["audit", "--json"], "");
    assert_no_canary("the audit log", run.stdout().as_bytes());
    run.stdout()
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// Every secret the fake knows of: client secrets and each token it issued.
pub fn fake_secrets(fake: &FakeUpstream) -> Vec<String> {
    let mut out: Vec<String> = Provider::ALL
        .iter()
        .map(|p| p.client_secret().to_string())
        .collect();
    for p in Provider::ALL {
        for t in fake.issued_tokens(p.name()) {
            out.push(t.access_token.clone());
            out.extend(t.refresh_token.clone());
        }
    }
    out.push(CANARY_ACCESS.into());
    out.push(CANARY_REFRESH.into());
    out
}

/// Assert that no secret appears in a run's output.
pub fn assert_clean(run: &Run, secrets: &[String]) {
    for s in secrets {
        assert!(
            !run.stdout().contains(s.as_str()),
            "stdout leaked a secret: {}",
            run.stdout()
        );
        assert!(
            !run.stderr().contains(s.as_str()),
            "stderr leaked a secret: {}",
            run.stderr()
        );
    }
}

/// Assert that the audit log holds no secret.
pub fn assert_audit_clean(kw: &Kw, secrets: &[String]) -> String {
    let audit = kw.ok(&["audit", "--json"], "").stdout();
    for s in secrets {
        assert!(!audit.contains(s.as_str()), "the audit log leaked a secret");
    }
    audit
}
