//! The host policy behind invariant 2: a token only travels to a host its provider declares,
//! over https, or over plain http to a loopback address (tests and local mocks). Loading a
//! manifest and rendering a request both ask these questions, so the answers live in one place.

use std::net::{Ipv4Addr, Ipv6Addr};

use url::{Host, Url};

/// Whether the URL points at this machine: 127.0.0.0/8, ::1 or `localhost`.
pub fn is_loopback(url: &Url) -> bool {
    match url.host() {
        Some(Host::Ipv4(ip)) => ip.is_loopback(),
        Some(Host::Ipv6(ip)) => ip.is_loopback(),
        Some(Host::Domain(name)) => name.eq_ignore_ascii_case("localhost"),
        None => false,
    }
}

/// Whether the URL's host is one of `allowed` (names compare case-insensitively, addresses by
/// value, so `[::1]` and `::1` are the same entry).
pub fn host_allowed(allowed: &[String], url: &Url) -> bool {
    let Some(host) = url.host() else {
        return false;
    };
    allowed.iter().any(|entry| {
        let entry = entry.trim();
        match host {
            Host::Domain(name) => name.eq_ignore_ascii_case(entry),
            Host::Ipv4(ip) => entry.parse::<Ipv4Addr>() == Ok(ip),
            Host::Ipv6(ip) => {
                entry
                    .trim_start_matches('[')
                    .trim_end_matches(']')
                    .parse::<Ipv6Addr>()
                    == Ok(ip)
            }
        }
    })
}

/// Parse an endpoint URL and require https, or http to a loopback host. Returns the reason
/// when the URL is refused.
pub fn parse_endpoint(text: &str) -> Result<Url, String> {
    let url = Url::parse(text).map_err(|e| format!("`{text}` is not a valid URL ({e})"))?;
    match url.scheme() {
        "https" => {}
        "http" if is_loopback(&url) => {}
        "http" => {
            return Err(format!(
                "`{text}` uses plain http to a non-loopback host; tokens are only sent over https \
                 (http is accepted for 127.0.0.1, ::1 and localhost)"
            ))
        }
        other => return Err(format!("`{text}` uses the scheme `{other}`; use https")),
    }
    if url.host().is_none() {
        return Err(format!("`{text}` has no host"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(format!("`{text}` must not carry credentials"));
    }
    Ok(url)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(text: &str) -> Url {
        Url::parse(text).unwrap()
    }

    #[test]
    fn loopback_covers_the_whole_127_block_ipv6_and_localhost() {
        assert!(is_loopback(&url("http://127.0.0.1:8080/")));
        assert!(is_loopback(&url("http://127.4.5.6/")));
        assert!(is_loopback(&url("http://[::1]:9/")));
        assert!(is_loopback(&url("http://LOCALHOST/")));
        assert!(!is_loopback(&url("http://10.0.0.1/")));
        assert!(!is_loopback(&url("http://localhost.example.com/")));
    }

    #[test]
    fn allowed_hosts_match_names_and_addresses() {
        let allowed = vec![
            "api.github.com".to_string(),
            "[::1]".to_string(),
            "127.0.0.1".into(),
        ];
        assert!(host_allowed(&allowed, &url("https://API.GitHub.com/x")));
        assert!(host_allowed(&allowed, &url("http://[::1]:4000/")));
        assert!(host_allowed(&allowed, &url("http://127.0.0.1:4000/")));
        assert!(!host_allowed(
            &allowed,
            &url("https://api.github.com.evil.test/")
        ));
        assert!(!host_allowed(&allowed, &url("https://github.com/")));
    }

    #[test]
    fn endpoints_need_https_unless_loopback() {
        assert!(parse_endpoint("https://api.github.com").is_ok());
        assert!(parse_endpoint("http://127.0.0.1:3000/api").is_ok());
        assert!(parse_endpoint("http://localhost/x").is_ok());
        let refused = parse_endpoint("http://api.github.com").unwrap_err();
        assert!(refused.contains("plain http"), "{refused}");
        assert!(parse_endpoint("ftp://example.com")
            .unwrap_err()
            .contains("scheme"));
        assert!(parse_endpoint("https://user:pw@example.com").is_err());
        assert!(parse_endpoint("not a url").is_err());
    }
}
