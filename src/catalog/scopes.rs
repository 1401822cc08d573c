//! Scope sets: does a grant cover a tool, and what to ask for when connecting.
//!
//! Providers name scopes in hierarchies (GitHub `repo` includes `public_repo`; Google
//! `calendar` includes `calendar.readonly`), so a plain set comparison would send users to
//! reconnect for scopes they already hold. Each manifest declares its implications and these
//! functions apply them transitively.

use std::collections::BTreeSet;

use super::manifest::ProviderSpec;

/// Split a scope string as providers return it. Both `,` and whitespace separate, whatever the
/// provider's own separator: GitHub's `X-OAuth-Scopes` header says `repo, user`, its token
/// response says `repo,user`, Google uses spaces. Duplicates are dropped, order is kept.
pub fn parse_scopes(_provider: &ProviderSpec, text: &str) -> Vec<String> {
    split_scopes(text)
}

/// [`parse_scopes`] where no provider is at hand (a token-exchange client's allowance spans
/// several).
pub fn split_scopes(text: &str) -> Vec<String> {
    let mut scopes: Vec<String> = Vec::new();
    for scope in text.split(|c: char| c == ',' || c.is_whitespace()) {
        if !scope.is_empty() && !scopes.iter().any(|s| s == scope) {
            scopes.push(scope.to_string());
        }
    }
    scopes
}

/// Join scopes for an authorization request with the provider's separator.
pub fn join_scopes(provider: &ProviderSpec, scopes: &[String]) -> String {
    scopes.join(&provider.scope_separator)
}

/// Every scope the granted ones stand for, following implications transitively.
pub fn expand_scopes<'a>(provider: &'a ProviderSpec, granted: &'a [String]) -> BTreeSet<&'a str> {
    let mut covered: BTreeSet<&str> = BTreeSet::new();
    let mut pending: Vec<&str> = granted.iter().map(String::as_str).collect();
    while let Some(scope) = pending.pop() {
        if covered.insert(scope) {
            if let Some(implied) = provider.scope_implications.get(scope) {
                pending.extend(implied.iter().map(String::as_str));
            }
        }
    }
    covered
}

/// The required scopes that the granted ones do not cover, in the order they were required.
pub fn missing_scopes(
    provider: &ProviderSpec,
    granted: &[String],
    required: &[String],
) -> Vec<String> {
    if required.is_empty() {
        return Vec::new();
    }
    let covered = expand_scopes(provider, granted);
    required
        .iter()
        .filter(|scope| !covered.contains(scope.as_str()))
        .cloned()
        .collect()
}

/// The smallest list that covers `scopes`: duplicates and scopes implied by another one in the
/// list are dropped (asking for `repo` and `public_repo` is asking for `repo`).
pub fn minimize_scopes(provider: &ProviderSpec, scopes: &[String]) -> Vec<String> {
    let mut unique: Vec<String> = Vec::new();
    for scope in scopes {
        if !unique.contains(scope) {
            unique.push(scope.clone());
        }
    }
    unique
        .iter()
        .filter(|scope| {
            !unique.iter().any(|other| {
                other != *scope
                    && expand_scopes(provider, std::slice::from_ref(other)).contains(scope.as_str())
            })
        })
        .cloned()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::Catalog;

    fn strings(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    const CAL: &str = "https://www.googleapis.com/auth/calendar";

    #[test]
    fn implications_cover_required_scopes_transitively() {
        let catalog = Catalog::embedded();
        let github = catalog.provider("github").unwrap();
        assert!(missing_scopes(github, &strings(&["repo"]), &strings(&["public_repo"])).is_empty());
        assert!(missing_scopes(github, &strings(&["user"]), &strings(&["read:user"])).is_empty());
        assert_eq!(
            missing_scopes(github, &strings(&["public_repo"]), &strings(&["repo"])),
            strings(&["repo"])
        );
        assert_eq!(
            missing_scopes(github, &[], &strings(&["repo", "user:email"])),
            strings(&["repo", "user:email"])
        );
        assert!(missing_scopes(github, &[], &[]).is_empty());

        // calendar ⊇ calendar.readonly ⊇ calendar.events.readonly: two hops.
        let google = catalog.provider("google").unwrap();
        let events_readonly = format!("{CAL}.events.readonly");
        assert!(missing_scopes(
            google,
            &strings(&[CAL]),
            std::slice::from_ref(&events_readonly)
        )
        .is_empty());
        assert!(
            missing_scopes(google, &[format!("{CAL}.readonly")], &[events_readonly]).is_empty()
        );
        assert_eq!(
            missing_scopes(
                google,
                &[format!("{CAL}.readonly")],
                &[format!("{CAL}.events")]
            ),
            vec![format!("{CAL}.events")]
        );
    }

    #[test]
    fn implication_cycles_terminate() {
        let mut provider = Catalog::embedded()
            .provider("github")
            .unwrap()
            .spec()
            .clone();
        provider
            .scope_implications
            .insert("a".into(), strings(&["b"]));
        provider
            .scope_implications
            .insert("b".into(), strings(&["a", "c"]));
        assert!(missing_scopes(&provider, &strings(&["a"]), &strings(&["c"])).is_empty());
        assert_eq!(
            missing_scopes(&provider, &strings(&["a"]), &strings(&["d"])),
            strings(&["d"])
        );
    }

    #[test]
    fn parsing_accepts_commas_and_spaces() {
        let catalog = Catalog::embedded();
        let github = catalog.provider("github").unwrap();
        assert_eq!(
            parse_scopes(github, "repo, read:user,repo"),
            strings(&["repo", "read:user"])
        );
        assert_eq!(parse_scopes(github, "  "), Vec::<String>::new());
        let slack = catalog.provider("slack").unwrap();
        assert_eq!(
            parse_scopes(slack, "channels:read,chat:write search:read"),
            strings(&["channels:read", "chat:write", "search:read"])
        );
        assert_eq!(join_scopes(slack, &strings(&["a", "b"])), "a,b");
        assert_eq!(join_scopes(github, &strings(&["a", "b"])), "a b");
    }

    #[test]
    fn minimizing_drops_implied_scopes() {
        let catalog = Catalog::embedded();
        let github = catalog.provider("github").unwrap();
        assert_eq!(
            minimize_scopes(
                github,
                &strings(&["public_repo", "repo", "read:user", "repo"])
            ),
            strings(&["repo", "read:user"])
        );
    }
}
