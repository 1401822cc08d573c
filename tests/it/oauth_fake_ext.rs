//! What the OAuth tests need around the fake upstream (`tests/support`): a home
//! folder wired to it, a `keyward` child process whose stderr can be read while it runs, and a
//! headless "browser" that follows the authorize redirect to keyward's loopback callback.

use std::io::{BufRead, BufReader};
use std::process::{Child, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::cli::{Kw, Run};

pub use crate::support::{FakeUpstream, Provider};

/// A home folder whose config points every provider at `fake`, plus `extra` config lines per
/// provider section (e.g. `refresh_margin_secs = …`).
pub fn home_for(fake: &FakeUpstream, extra: &[(&str, &str)]) -> Kw {
    let kw = Kw::new();
    std::fs::create_dir_all(kw.home()).unwrap();
    let mut config = fake.config_toml();
    for (provider, line) in extra {
        let header = format!("[providers.{provider}]\n");
        config = config.replace(&header, &format!("{header}{line}\n"));
    }
    std::fs::write(kw.home().join("config.toml"), config).unwrap();
    kw
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
    out.push(crate::cli::CANARY_ACCESS.into());
    out.push(crate::cli::CANARY_REFRESH.into());
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

/// `keyward status --json` as JSON.
pub fn status(kw: &Kw) -> Vec<Value> {
    let out = kw.ok(&["status", "--json"], "").stdout();
    serde_json::from_str(&out).expect("status --json is JSON")
}

/// The status row of `provider` (account `default`), if any.
pub fn status_of(kw: &Kw, provider: &str) -> Option<Value> {
    status(kw)
        .into_iter()
        .find(|row| row["provider"] == provider)
}

/// A running `keyward` whose stderr lines arrive on a channel as they are printed.
pub struct Running {
    pub child: Child,
    lines: mpsc::Receiver<String>,
    pub stderr: Vec<String>,
}

impl Running {
    pub fn spawn(kw: &Kw, args: &[&str], env: &[(&str, &str)]) -> Running {
        let mut cmd = kw.command(args);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn keyward");
        let stderr = child.stderr.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Running {
            child,
            lines,
            stderr: Vec::new(),
        }
    }

    /// The first stderr line (from now) for which `pick` returns something.
    pub fn wait_for<T>(&mut self, timeout: Duration, mut pick: impl FnMut(&str) -> Option<T>) -> T {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    let found = pick(&line);
                    self.stderr.push(line);
                    if let Some(found) = found {
                        return found;
                    }
                }
                Err(_) => panic!(
                    "keyward did not print what the test waits for; stderr so far:\n{}",
                    self.stderr.join("\n")
                ),
            }
        }
    }

    /// The authorize URL keyward printed.
    pub fn authorize_url(&mut self) -> url::Url {
        self.wait_for(Duration::from_secs(30), |line| {
            line.trim()
                .starts_with("http")
                .then(|| url::Url::parse(line.trim()).expect("a URL"))
        })
    }

    /// Wait for the process to end; returns its output with all of stderr.
    pub fn finish(mut self, timeout: Duration) -> Run {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(_status) = self.child.try_wait().unwrap() {
                break;
            }
            if Instant::now() >= deadline {
                let _ = self.child.kill();
                panic!(
                    "keyward did not finish in time; stderr:\n{}",
                    self.stderr.join("\n")
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        // The reader thread ends with the pipe; collect what is left.
        while let Ok(line) = self.lines.recv_timeout(Duration::from_secs(2)) {
            self.stderr.push(line);
        }
        let mut output = self.child.wait_with_output().unwrap();
        output.stderr = self.stderr.join("\n").into_bytes();
        Run(output)
    }

    /// SIGKILL (kill -9) and reap.
    pub fn kill9(mut self) {
        self.child.kill().expect("kill -9");
        let _ = self.child.wait();
    }
}

/// A client that follows no redirects: the test looks at each hop itself.
pub fn browser() -> reqwest::Client {
    keyward::exec::client::install_crypto_provider();
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

/// Play the browser: GET the authorize URL, take the 302 to keyward's loopback callback,
/// optionally tamper with it, GET it. Returns the callback page's status and HTML.
pub async fn play_browser(
    authorize: &url::Url,
    tamper: impl FnOnce(url::Url) -> url::Url,
) -> (u16, String) {
    let client = browser();
    let resp = client
        .get(authorize.clone())
        .send()
        .await
        .expect("the authorize endpoint answers");
    assert_eq!(
        resp.status().as_u16(),
        302,
        "the authorize endpoint redirects: {:?}",
        resp.text().await
    );
    let location = resp.headers()["location"].to_str().unwrap().to_string();
    let callback = tamper(url::Url::parse(&location).unwrap());
    assert_eq!(callback.host_str(), Some("127.0.0.1"));
    assert_eq!(callback.path(), "/callback");
    let page = client
        .get(callback)
        .send()
        .await
        .expect("keyward's callback answers");
    let status = page.status().as_u16();
    (status, page.text().await.unwrap())
}

/// A query parameter of `url`.
pub fn query(url: &url::Url, name: &str) -> Option<String> {
    url.query_pairs()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

/// A token response for `keyward import` whose access token expired `ago` seconds ago.
pub fn expired_token_json(access: &str, refresh: &str, scope: &str) -> String {
    serde_json::json!({
        "access_token": access, "refresh_token": refresh, "token_type": "bearer",
        "expires_at": chrono::Utc::now().timestamp() - 60, "scope": scope,
    })
    .to_string()
}
