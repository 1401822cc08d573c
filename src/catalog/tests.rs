use std::collections::BTreeMap;
use std::path::PathBuf;

use super::*;

const MINIMAL_PROVIDER: &str = r#"
[provider]
name = "acme"
title = "Acme"
authorize_url = "https://acme.test/oauth/authorize"
token_url = "https://acme.test/oauth/token"
api_base = "https://api.acme.test/v2"
allowed_hosts = ["api.acme.test"]
"#;

const ACME_TOOL: &str = r#"
[[tools]]
name = "acme_get_widget"
title = "Get a widget"
description = "Get one widget by id."
toolset = "widgets"
read_only = true
scopes = ["widgets:read"]

[[tools.params]]
name = "id"
type = "string"
required = true
description = "Widget id."
pattern = "^[a-z0-9]+$"

[tools.request]
method = "GET"
path = "/widgets/{id}"

[tools.response]
fields = ["id", "name"]
"#;

fn dir_with(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for (name, text) in files {
        std::fs::write(dir.path().join(name), text).unwrap();
    }
    dir
}

fn load_dir(files: &[(&str, &str)]) -> (tempfile::TempDir, Result<Catalog>) {
    let dir = dir_with(files);
    let result = Catalog::load(&[dir.path().to_path_buf()], &BTreeMap::new());
    (dir, result)
}

fn load_error(files: &[(&str, &str)]) -> String {
    match load_dir(files).1 {
        Ok(_) => panic!("the manifest should be refused"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn embedded_catalog_has_the_fixed_tools() {
    let catalog = Catalog::embedded();
    let providers: Vec<&str> = catalog.providers().map(|p| p.name.as_str()).collect();
    assert_eq!(providers, ["github", "slack", "google"]);
    let names: Vec<&str> = catalog.tools().map(|(_, t)| t.name.as_str()).collect();
    for expected in [
        "github_get_me",
        "github_list_pull_requests",
        "github_get_pull_request",
        "github_list_issues",
        "github_get_issue",
        "github_search_issues",
        "github_create_issue",
        "github_add_issue_comment",
        "github_get_file_contents",
        "slack_list_channels",
        "slack_read_channel",
        "slack_read_thread",
        "slack_post_message",
        "slack_search_messages",
        "slack_get_user",
        "calendar_list_calendars",
        "calendar_list_events",
        "calendar_get_event",
        "calendar_create_event",
        "calendar_delete_event",
        "calendar_find_free_busy",
    ] {
        assert!(names.contains(&expected), "{expected} is missing");
    }
    let (provider, tool) = catalog.tool("slack_post_message").unwrap();
    assert_eq!(provider.name, "slack");
    assert_eq!(provider.error_convention, ErrorConvention::SlackOk);
    assert_eq!(provider.scope_separator, ",");
    assert_eq!(tool.scopes, ["chat:write"]);
    assert!(!tool.read_only && !tool.destructive && !tool.is_idempotent());

    let (_, delete) = catalog.tool("calendar_delete_event").unwrap();
    assert!(delete.destructive && delete.is_idempotent());
    let github = catalog.provider("github").unwrap();
    assert_eq!(github.revoke_style, Some(RevokeStyle::GithubGrant));
    assert_eq!(github.refresh_margin_secs, 300);
    assert_eq!(github.headers["X-GitHub-Api-Version"], "2022-11-28");
    assert!(catalog.tool("nope").is_none());
}

#[test]
fn query_parameters_keep_manifest_order() {
    let catalog = Catalog::embedded();
    let (_, tool) = catalog.tool("calendar_list_events").unwrap();
    let keys: Vec<&str> = tool.request.query.iter().map(|(k, _)| k).collect();
    assert_eq!(
        keys,
        [
            "timeMin",
            "timeMax",
            "q",
            "maxResults",
            "pageToken",
            "singleEvents",
            "orderBy"
        ]
    );
}

#[test]
fn every_manifest_starts_with_a_schema_hint_and_cites_docs_for_scopes() {
    for (file, text) in EMBEDDED {
        assert!(
            text.starts_with("#:schema ./manifest.schema.json\n"),
            "{file}"
        );
        let manifest: Manifest = toml::from_str(text).unwrap();
        for tool in manifest.tools.iter().filter(|t| !t.scopes.is_empty()) {
            // The comment block right above `scopes = …` must cite the provider's docs.
            let start = text.find(&format!("name = \"{}\"", tool.name)).unwrap();
            let scopes_at = start + text[start..].find("\nscopes = ").unwrap();
            let comment_block: Vec<&str> = text[..scopes_at]
                .lines()
                .rev()
                .take_while(|line| line.starts_with('#'))
                .collect();
            assert!(
                comment_block.iter().any(|line| line.contains("https://")),
                "{file}: the scopes of {} need a comment citing the docs",
                tool.name
            );
        }
    }
}

#[test]
fn extra_folders_add_providers_and_replace_embedded_ones() {
    let replacement = r#"
[provider]
name = "github"
title = "GitHub Enterprise"
authorize_url = "https://ghe.example.com/login/oauth/authorize"
token_url = "https://ghe.example.com/login/oauth/access_token"
api_base = "https://ghe.example.com/api/v3"
allowed_hosts = ["ghe.example.com"]

[[tools]]
name = "github_get_me"
title = "Me"
description = "Who am I on GitHub Enterprise."
toolset = "users"
read_only = true
request = { method = "GET", path = "/user" }
response = { fields = ["login"] }
"#;
    let acme = format!("{MINIMAL_PROVIDER}{ACME_TOOL}");
    let (_dir, catalog) = load_dir(&[
        ("a-acme.toml", &acme),
        ("github.toml", replacement),
        ("notes.txt", "ignored"),
    ]);
    let catalog = catalog.unwrap();
    let providers: Vec<&str> = catalog.providers().map(|p| p.name.as_str()).collect();
    assert_eq!(providers, ["github", "slack", "google", "acme"]);
    assert_eq!(
        catalog.provider("github").unwrap().title,
        "GitHub Enterprise"
    );
    assert!(
        catalog.tool("github_list_issues").is_none(),
        "the replaced manifest's tools are gone"
    );
    let (provider, tool) = catalog.tool("acme_get_widget").unwrap();
    assert_eq!(provider.name, "acme");
    assert_eq!(tool.toolset, "widgets");
    assert_eq!(catalog.toolset_names().last().unwrap(), "acme:widgets");
}

#[test]
fn a_missing_tools_folder_is_an_error() {
    let error = Catalog::load(
        &[PathBuf::from("/nonexistent/keyward-tools")],
        &BTreeMap::new(),
    )
    .unwrap_err();
    assert!(
        error.to_string().contains("/nonexistent/keyward-tools"),
        "{error}"
    );
}

#[test]
fn syntax_errors_report_file_and_line() {
    let broken = "[provider]\nname = \"acme\"\ntitle = \"Acme\"\napi_base = https://nope\n";
    let message = load_error(&[("acme.toml", broken)]);
    assert!(message.contains("acme.toml:4:"), "{message}");

    let unknown_field = format!("{MINIMAL_PROVIDER}colour = \"red\"\n");
    let message = load_error(&[("acme.toml", &unknown_field)]);
    let line = unknown_field
        .lines()
        .position(|l| l.starts_with("colour"))
        .unwrap()
        + 1;
    assert!(message.contains(&format!("acme.toml:{line}:")), "{message}");
    assert!(message.contains("colour"), "{message}");
}

#[test]
fn api_base_off_the_allowed_hosts_is_refused() {
    let text = MINIMAL_PROVIDER.replace("https://api.acme.test/v2", "https://evil.example.net/v2");
    let message = load_error(&[("acme.toml", &text)]);
    let line = text
        .lines()
        .position(|l| l.starts_with("api_base"))
        .unwrap()
        + 1;
    assert!(message.contains(&format!("acme.toml:{line}:")), "{message}");
    assert!(message.contains("evil.example.net"), "{message}");
    assert!(message.contains("not in `allowed_hosts`"), "{message}");
}

#[test]
fn api_base_over_plain_http_is_refused_unless_loopback() {
    let remote = MINIMAL_PROVIDER.replace("https://api.acme.test/v2", "http://api.acme.test/v2");
    assert!(load_error(&[("acme.toml", &remote)]).contains("plain http"));

    let loopback = MINIMAL_PROVIDER
        .replace("https://api.acme.test/v2", "http://127.0.0.1:9999/v2")
        .replace("[\"api.acme.test\"]", "[\"127.0.0.1\"]");
    load_dir(&[("acme.toml", &loopback)]).1.unwrap();
}

#[test]
fn tool_mistakes_are_refused_with_the_tool_line_and_reason() {
    let cases: Vec<(String, &str)> = vec![
        (ACME_TOOL.replace("/widgets/{id}", "/widgets/{wid}"), "`{wid}` is not a declared parameter"),
        (ACME_TOOL.replace("required = true\n", ""), "must be `required` or have a `default`"),
        (ACME_TOOL.replace("^[a-z0-9]+$", "^[a-z0-9+$"), "pattern does not compile"),
        (ACME_TOOL.replace("/widgets/{id}", "/widgets/x{id}"), "must be a whole `{param}`"),
        (ACME_TOOL.replace("/widgets/{id}", "/widgets/../{id}"), "must be a whole `{param}`"),
        (ACME_TOOL.replace("path = \"/widgets/{id}\"", "path = \"/widgets/{id}\"\nquery = { q = \"{query}\" }"),
         "`{query}` is not a declared parameter"),
        (ACME_TOOL.replace("path = \"/widgets/{id}\"", "path = \"/widgets/{id}\"\nquery = { q = \"id:{id}\" }"),
         "a placeholder must be the whole string"),
        (ACME_TOOL.replace("path = \"/widgets/{id}\"", "path = \"/widgets/{id}\"\nbody = { a = \"{id}\" }"),
         "a GET request cannot have a body"),
        (ACME_TOOL.replace("path = \"/widgets/{id}\"", "path = \"/widgets/{id}\"\nheaders = { Authorization = \"x\" }"),
         "may not set the `Authorization` header"),
        (ACME_TOOL.replace("read_only = true", "read_only = true\ndestructive = true"), "both `read_only` and `destructive`"),
        (ACME_TOOL.replace("[tools.request]", "[[tools.params]]\nname = \"extra\"\ntype = \"string\"\ndescription = \"Unused.\"\n\n[tools.request]"),
         "`extra` is declared but not used"),
        (ACME_TOOL.replace("[tools.request]", "[[tools.params]]\nname = \"n\"\ntype = \"integer\"\ndescription = \"N.\"\nmin = 5\nmax = 1\n\n[tools.request]"),
         "`min` 5 is above `max` 1"),
        (ACME_TOOL.replace("[tools.request]", "[[tools.params]]\nname = \"n\"\ntype = \"integer\"\ndescription = \"N.\"\ndefault = \"x\"\n\n[tools.request]"),
         "`default` is invalid"),
        (ACME_TOOL.replace("fields = [\"id\", \"name\"]", "fields = [\"id\", \"a = b | \"]"), "is not a path"),
        (ACME_TOOL.replace("fields = [\"id\", \"name\"]", "fields = [\"id\", \"id\"]"), "listed twice"),
        (ACME_TOOL.replace("fields = [\"id\", \"name\"]", "fields = [\"id\"]\nitems_at = \"/x\""), "`items_at` applies to"),
        (ACME_TOOL.replace("acme_get_widget", "acme get widget"), "must be 1 to 64 letters"),
        (ACME_TOOL.replace("fields = [\"id\", \"name\"]", "fields = [\"id\"]\ncap_text = [\"name\"]"),
         "`cap_text` names `name`, which `fields` does not keep"),
        (ACME_TOOL.replace("fields = [\"id\", \"name\"]", "fields = [\"id\"]\ntext_body = \"diff\""),
         "`text_body` takes no"),
        (ACME_TOOL.replace("fields = [\"id\", \"name\"]", "text_body = \"a-b\""),
         "`text_body` `a-b` must be letters"),
    ];
    for (tool, reason) in cases {
        let text = format!("{MINIMAL_PROVIDER}{tool}");
        let message = load_error(&[("acme.toml", &text)]);
        assert!(
            message.contains(reason),
            "expected …{reason}…, got: {message}"
        );
        let name_line = text
            .lines()
            .position(|l| l.starts_with("name = \"acme_"))
            .map(|i| i + 1);
        if let Some(line) = name_line {
            assert!(message.contains(&format!("acme.toml:{line}:")), "{message}");
        }
    }
}

#[test]
fn tool_names_are_unique_across_providers() {
    let clash = format!(
        "{MINIMAL_PROVIDER}{}",
        ACME_TOOL.replace("acme_get_widget", "slack_get_user")
    );
    let message = load_error(&[("acme.toml", &clash)]);
    assert!(
        message.contains("`slack_get_user` is defined by both the `slack` and the `acme` provider"),
        "{message}"
    );
}

#[test]
fn one_manifest_per_provider_among_extra_files() {
    let acme = format!("{MINIMAL_PROVIDER}{ACME_TOOL}");
    let message = load_error(&[("a.toml", &acme), ("b.toml", MINIMAL_PROVIDER)]);
    assert!(
        message.contains("b.toml") && message.contains("already defined in"),
        "{message}"
    );
}

#[test]
fn overrides_replace_endpoints_and_pin_the_new_api_host() {
    let mut overrides = BTreeMap::new();
    overrides.insert(
        "github".to_string(),
        ProviderConfig {
            api_base: Some("http://127.0.0.1:4010/gh".into()),
            token_url: Some("http://127.0.0.1:4010/login/oauth/access_token".into()),
            device_authorization_url: Some("http://127.0.0.1:4010/login/device/code".into()),
            refresh_margin_secs: Some(60),
            ..Default::default()
        },
    );
    let catalog = Catalog::load(&[], &overrides).unwrap();
    let github = catalog.provider("github").unwrap();
    assert_eq!(github.api_base, "http://127.0.0.1:4010/gh");
    assert_eq!(github.allowed_hosts, ["api.github.com", "127.0.0.1"]);
    assert_eq!(
        github.token_url,
        "http://127.0.0.1:4010/login/oauth/access_token"
    );
    assert_eq!(
        github.device_authorization_url.as_deref(),
        Some("http://127.0.0.1:4010/login/device/code")
    );
    assert_eq!(
        github.authorize_url,
        "https://github.com/login/oauth/authorize"
    );
    assert_eq!(github.refresh_margin_secs, 60);

    let (provider, tool) = catalog.tool("github_get_issue").unwrap();
    let args = serde_json::json!({ "owner": "o", "repo": "r", "number": 3 });
    let valid = crate::exec::render::validate_args(tool, args.as_object().unwrap()).unwrap();
    let request = crate::exec::render::render(provider, tool, &valid).unwrap();
    assert_eq!(
        request.url.as_str(),
        "http://127.0.0.1:4010/gh/repos/o/r/issues/3"
    );
}

#[test]
fn bad_overrides_are_refused() {
    let refused = |name: &str, config: ProviderConfig| {
        let mut overrides = BTreeMap::new();
        overrides.insert(name.to_string(), config);
        Catalog::load(&[], &overrides).unwrap_err().to_string()
    };
    let message = refused(
        "github",
        ProviderConfig {
            api_base: Some("http://ghe.example.com/api/v3".into()),
            ..Default::default()
        },
    );
    assert!(
        message.contains("[providers.github]") && message.contains("plain http"),
        "{message}"
    );
    let message = refused("gihub", ProviderConfig::default());
    assert!(
        message.contains("[providers.gihub]") && message.contains("github, slack, google"),
        "{message}"
    );
    let message = refused(
        "slack",
        ProviderConfig {
            token_url: Some("ftp://x".into()),
            ..Default::default()
        },
    );
    assert!(message.contains("token_url"), "{message}");
}

#[test]
fn required_scopes_follow_the_filter_and_drop_implied_ones() {
    let catalog = Catalog::embedded();
    assert_eq!(
        catalog.required_scopes("github", &ToolFilter::default()),
        ["repo"]
    );
    let read_only = ToolFilter {
        read_only: true,
        ..Default::default()
    };
    assert_eq!(
        catalog.required_scopes("google", &read_only),
        ["https://www.googleapis.com/auth/calendar.readonly",]
    );
    let chat = ToolFilter {
        toolsets: vec!["slack:chat".into()],
        ..Default::default()
    };
    assert_eq!(
        catalog.required_scopes("slack", &chat),
        ["chat:write", "reactions:write", "im:write"]
    );
}
