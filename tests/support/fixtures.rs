//! One fixture per tool: `tests/fixtures/<tool>.json` says, for one call of the tool, the
//! arguments, the exact upstream request keyward must send, a sample of the provider's answer and
//! the result the model must get from it (the projection).
//!
//! The integration tests run every fixture through the real binary against the fake upstream,
//! which answers with the fixture's sample (`tests/it/exec.rs`), and fail when a catalog tool
//! has no fixture; the bench calls its tools with the fixtures' arguments and checks that it
//! measures the fixture's request (`benches/e2e/`). Adding a tool to a manifest means adding its
//! fixture file, nothing else.
//!
//! The format (unknown keys are refused, so a misspelled key cannot be silently ignored):
//!
//! ```json
//! {
//!   "about": "what this call shows, in a sentence",
//!   "arguments": {"owner": "octo", "repo": "hello", "number": 2},
//!   "request": {
//!     "method": "GET",
//!     "path": "/repos/octo/hello/issues/2",
//!     "query": {"state": "open"},
//!     "headers": {"authorization": "Bearer {token}", "accept": "application/vnd.github+json"},
//!     "body": {"title": "…"}
//!   },
//!   "response": {"status": 200, "headers": {"link": "…"}, "body": {"number": 2}},
//!   "result": {"number": 2}
//! }
//! ```
//!
//! - `request.path` is relative to the provider's API base and percent-encoded as sent;
//!   `query` is every query parameter, decoded (none when absent); `headers` is every header but
//!   the transport's own (`host`, `content-length`), names lowercase, `{token}` standing for the
//!   connection's access token and `{version}` for keyward's; `body` is the JSON body (none
//!   when absent).
//! - `response.status` defaults to 200; `response.body` absent means an empty body; the
//!   `content-type` is JSON unless `headers` says otherwise, and then a string `body` is sent
//!   as it is (a diff), not as a JSON string.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::Value;

use super::{RecordedRequest, SharedState};

/// Headers the HTTP stack adds on its own; a fixture does not list them.
const TRANSPORT_HEADERS: [&str; 2] = ["host", "content-length"];

/// One tool's fixture.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Fixture {
    /// The tool: the file's name.
    #[serde(skip)]
    pub tool: String,
    /// What the call shows, for a reader of the fixture.
    pub about: String,
    pub arguments: serde_json::Map<String, Value>,
    pub request: ExpectedRequest,
    pub response: SampleResponse,
    /// The tool result (its `structuredContent`).
    pub result: Value,
}

/// The exact request keyward sends for the fixture's arguments.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExpectedRequest {
    pub method: String,
    /// Relative to the provider's API base, percent-encoded as sent.
    pub path: String,
    #[serde(default)]
    pub query: BTreeMap<String, String>,
    /// Lowercase names; in a value `{token}` stands for the access token, `{version}` for
    /// keyward's version.
    pub headers: BTreeMap<String, String>,
    #[serde(default)]
    pub body: Option<Value>,
}

/// What the fake answers for the fixture's request.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SampleResponse {
    #[serde(default = "ok")]
    pub status: u16,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    #[serde(default)]
    pub body: Option<Value>,
}

fn ok() -> u16 {
    200
}

/// `tests/fixtures`.
pub fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

/// Every fixture, by tool name. Panics on a file that does not parse, naming it.
pub fn all() -> Vec<Fixture> {
    let mut fixtures: Vec<Fixture> = std::fs::read_dir(dir())
        .expect("tests/fixtures")
        .map(|entry| entry.expect("a fixture file").path())
        .filter(|path| path.extension().is_some_and(|e| e == "json"))
        .map(|path| read(&path))
        .collect();
    fixtures.sort_by(|a, b| a.tool.cmp(&b.tool));
    fixtures
}

/// The fixture of `tool`.
pub fn load(tool: &str) -> Fixture {
    read(&dir().join(format!("{tool}.json")))
}

fn read(path: &Path) -> Fixture {
    let text =
        std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    let mut fixture: Fixture = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("{}: not a fixture: {e}", path.display()));
    fixture.tool = path
        .file_stem()
        .and_then(|s| s.to_str())
        .expect("a UTF-8 file name")
        .to_string();
    fixture
}

impl Fixture {
    /// The arguments as one JSON value.
    pub fn args(&self) -> Value {
        Value::Object(self.arguments.clone())
    }

    /// Make `fake` answer this fixture's request with its sample response, once. `api_path` is
    /// the path of the provider's API base on the fake (e.g. `/github`).
    pub fn answer_on(&self, fake: &SharedState, api_path: &str) {
        let response = &self.response;
        let mut headers: Vec<(String, String)> = response
            .headers
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let body = match &response.body {
            Some(Value::String(text)) if response.headers.contains_key("content-type") => {
                text.clone().into_bytes()
            }
            Some(body) => {
                if !response.headers.contains_key("content-type") {
                    headers.push((
                        "content-type".into(),
                        "application/json; charset=utf-8".into(),
                    ));
                }
                serde_json::to_vec(body).expect("JSON")
            }
            None => Vec::new(),
        };
        fake.answer_api(
            &self.request.method,
            &format!("{api_path}{}", self.request.path),
            response.status,
            headers,
            body,
        );
    }

    /// How `got` differs from this fixture's request (empty: it is exactly that request).
    /// `api_path` is the path of the provider's API base on the fake; `token` the connection's
    /// access token.
    pub fn request_differences(
        &self,
        got: &RecordedRequest,
        api_path: &str,
        token: &str,
    ) -> Vec<String> {
        let want = &self.request;
        let mut differences = Vec::new();
        let mut differ = |what: &str, want: String, got: String| {
            if want != got {
                differences.push(format!("{what}: expected {want}, got {got}"));
            }
        };
        differ("method", want.method.clone(), got.method.clone());
        differ("path", format!("{api_path}{}", want.path), got.path.clone());
        let mut query: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (k, v) in got.query_pairs() {
            query.entry(k).or_default().push(v);
        }
        let want_query: BTreeMap<String, Vec<String>> = want
            .query
            .iter()
            .map(|(k, v)| (k.clone(), vec![v.clone()]))
            .collect();
        differ("query", format!("{want_query:?}"), format!("{query:?}"));
        let headers: BTreeMap<String, String> = got
            .headers
            .iter()
            .filter(|(name, _)| !TRANSPORT_HEADERS.contains(&name.as_str()))
            .map(|(k, v)| {
                let v = v
                    .replace(token, "{token}")
                    .replace(env!("CARGO_PKG_VERSION"), "{version}");
                (k.clone(), v)
            })
            .collect();
        differ(
            "headers",
            format!("{:?}", want.headers),
            format!("{headers:?}"),
        );
        let body = (!got.body.is_empty()).then(|| {
            got.body_json()
                .unwrap_or_else(|| Value::String(got.body_text()))
        });
        differ("body", format!("{:?}", want.body), format!("{body:?}"));
        differences
    }
}

/// Replace the `result` of `tool`'s fixture (`KEYWARD_UPDATE_SNAPSHOTS=1`: the diff is for a
/// human to review). The rest of the file is kept as it is written.
pub fn write_result(tool: &str, result: &Value) {
    let path = dir().join(format!("{tool}.json"));
    let text = std::fs::read_to_string(&path).expect("the fixture");
    let mut fixture: Value = serde_json::from_str(&text).expect("the fixture is JSON");
    fixture["result"] = result.clone();
    let pretty = serde_json::to_string_pretty(&fixture).expect("JSON") + "\n";
    std::fs::write(&path, pretty).expect("writing the fixture");
}
