//! A temporary home folder and the real `keyward` binary run against it: commands to
//! completion ([`Kw::run`]), a child whose stderr is read while it runs ([`Running`]), a vault
//! owner ([`Kw::spawn_owner`]), the vault opened in the test itself ([`Kw::vault`]), and homes
//! wired to the fake upstream ([`home_for`]).

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::{FakeUpstream, CANARY_ACCESS, CANARY_REFRESH};

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_keyward")
}

/// A temporary home folder and a way to run commands against it.
pub struct Kw {
    pub dir: tempfile::TempDir,
    pub env: Vec<(String, String)>,
}

impl Kw {
    pub fn new() -> Kw {
        Kw {
            dir: tempfile::tempdir().expect("tempdir"),
            env: Vec::new(),
        }
    }

    /// A home whose `config.toml` names one extra tools folder, `NAME` beside the home (created,
    /// empty); `extra` is appended to the config. Returns the folder.
    pub fn with_tools_dir(&self, name: &str, extra: &str) -> PathBuf {
        let tools = self.dir.path().join(name);
        std::fs::create_dir_all(self.home()).unwrap();
        std::fs::create_dir_all(&tools).unwrap();
        std::fs::write(
            self.home().join("config.toml"),
            format!("tools_dirs = [{:?}]\n{extra}", tools.display().to_string()),
        )
        .unwrap();
        tools
    }

    pub fn home(&self) -> PathBuf {
        self.dir.path().join("home")
    }

    /// The home's vault, opened in the test (the owner, unless another process is). While it
    /// owns the vault it serves the CLI's commands on the test's runtime: tests that run
    /// commands meanwhile use a multi-threaded runtime, whose workers serve while the test's
    /// own thread waits for the command.
    pub async fn vault(&self) -> keyward::vault::Vault {
        let home = keyward::config::Home { dir: self.home() };
        keyward::vault::Vault::open(&home, keyward::vault::OpenMode::Existing)
            .await
            .expect("open vault")
    }

    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(bin());
        cmd.arg("--home").arg(self.home()).args(args);
        cmd.env_remove("KEYWARD_MASTER_KEY")
            .env_remove("KEYWARD_HOME")
            .env_remove("KEYWARD_TOOLS_DIR");
        cmd.env("RUST_LOG", "debug");
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        cmd
    }

    /// Run to completion with `stdin` as input.
    pub fn run(&self, args: &[&str], stdin: &str) -> Run {
        let mut child = self
            .command(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn keyward");
        // A command that fails before it reads its input (a refused home folder) may exit
        // before the write: its output says why, so a closed pipe is not the test's failure.
        match child.stdin.take().unwrap().write_all(stdin.as_bytes()) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {}
            Err(e) => panic!("writing keyward's stdin: {e}"),
        }
        Run(child.wait_with_output().expect("wait keyward"))
    }

    pub fn ok(&self, args: &[&str], stdin: &str) -> Run {
        let run = self.run(args, stdin);
        assert!(
            run.0.status.success(),
            "keyward {args:?} failed: {}",
            run.stderr()
        );
        run
    }

    /// Import a GitHub-style token response for `account`.
    pub fn import(&self, provider: &str, account: &str, access: &str, refresh: &str) -> Run {
        self.ok(
            &["import", provider, "--account", account],
            &token_json(access, refresh),
        )
    }
}

pub struct Run(pub Output);

impl Run {
    pub fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.0.stdout).into_owned()
    }
    pub fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.0.stderr).into_owned()
    }
    pub fn code(&self) -> Option<i32> {
        self.0.status.code()
    }
    /// Assert that neither output stream holds any of `secrets`.
    pub fn assert_clean(&self, secrets: &[&str]) {
        for s in secrets {
            assert!(!self.stdout().contains(s), "stdout leaked a secret");
            assert!(!self.stderr().contains(s), "stderr leaked a secret");
        }
    }
}

/// Every regular file under `dir` with its bytes.
pub fn files_under(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap().flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else {
                out.push((path.clone(), std::fs::read(&path).unwrap_or_default()));
            }
        }
    }
    out.sort();
    out
}

/// A `keyward serve` (stdio) child that owns the vault of a home while it runs. It ends when
/// dropped: its stdin closes, which ends a stdio server.
pub struct Owner {
    pub child: std::process::Child,
}

impl Kw {
    /// Start `keyward serve` with `env`, initialize it like a client (a stdio server opens the
    /// vault once it has answered `initialize`), and wait (bounded) until it listens on the
    /// owner socket.
    pub fn spawn_owner(&self, env: &[(&str, &str)]) -> Owner {
        let mut cmd = self.command(&["serve"]);
        cmd.envs(env.iter().copied())
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let mut owner = Owner {
            child: cmd.spawn().expect("spawn keyward serve"),
        };
        let stdin = owner.child.stdin.as_mut().expect("stdin is piped");
        writeln!(stdin, "{}", super::mcp::initialize_line(0)).expect("write initialize");
        let socket = self.home().join("keyward.sock");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while std::os::unix::net::UnixStream::connect(&socket).is_err() {
            if let Some(status) = owner.child.try_wait().expect("poll keyward serve") {
                panic!("keyward serve exited with {status} before listening");
            }
            assert!(
                std::time::Instant::now() < deadline,
                "keyward serve did not listen on {} within 60 s",
                socket.display()
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        owner
    }
}

impl Drop for Owner {
    fn drop(&mut self) {
        drop(self.child.stdin.take());
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while matches!(self.child.try_wait(), Ok(None)) && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A GitHub-style token response for `keyward import`.
pub fn token_json(access: &str, refresh: &str) -> String {
    serde_json::json!({
        "access_token": access, "refresh_token": refresh, "token_type": "bearer",
        "expires_in": 28800, "scope": "repo read:user",
    })
    .to_string()
}

/// Tokens tagged `tag` that the fake's GitHub accepts for the next hour (login
/// [`super::GITHUB_LOGIN`]), carrying the canary markers.
pub fn github_grant(fake: &FakeUpstream, tag: &str) -> (String, String) {
    let (access, refresh) = (
        format!("{CANARY_ACCESS}.gho_{tag}"),
        format!("{CANARY_REFRESH}.ghr_{tag}"),
    );
    fake.grant_with_refresh(
        "github",
        &access,
        &refresh,
        &["repo", "read:user"],
        Some(Duration::from_secs(3600)),
    );
    (access, refresh)
}

/// Move a stored record's `obtained_at` `secs` into the past, as if the token had been issued
/// then (an import stamps the import time, which makes its lifetime look shorter).
pub async fn backdate_obtained_at(kw: &Kw, provider: &str, secs: i64) {
    let vault = kw.vault().await;
    let key = keyward::vault::ConnKey::new("default", provider, "default").unwrap();
    let mut conn = vault.get(&key).await.unwrap().unwrap();
    conn.record.obtained_at -= secs;
    vault
        .put(&key, Some(conn.version), &conn.record)
        .await
        .unwrap();
}

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

/// A token response for `keyward import` whose access token expired `ago` seconds ago.
pub fn expired_token_json(access: &str, refresh: &str, scope: &str) -> String {
    serde_json::json!({
        "access_token": access, "refresh_token": refresh, "token_type": "bearer",
        "expires_at": chrono::Utc::now().timestamp() - 60, "scope": scope,
    })
    .to_string()
}

/// The access token of a test connection: starts with the canary, so any leak is caught.
pub fn token(user: &str, account: &str) -> String {
    format!("{CANARY_ACCESS}_{user}_{account}")
}

/// A home folder wired to `fake`, with one GitHub connection per (user, account), imported with
/// the real CLI and granted at the fake as login `<user>-<account>`.
pub fn home_with(fake: &FakeUpstream, connections: &[(&str, &str)]) -> Kw {
    let kw = home_for(fake, &[]);
    for (user, account) in connections {
        let access = token(user, account);
        fake.grant_github_as(&access, &format!("{user}-{account}"));
        let response = json!({
            "access_token": access, "refresh_token": format!("{CANARY_REFRESH}_{user}_{account}"),
            "token_type": "bearer", "expires_in": 28800, "scope": "repo read:user",
        });
        kw.ok(
            &["import", "github", "--user", user, "--account", account],
            &response.to_string(),
        );
    }
    kw
}
