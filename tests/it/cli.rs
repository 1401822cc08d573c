//! Helpers to drive the real `keyward` binary in a temporary home folder.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

pub const CANARY_ACCESS: &str = "kwcanary_access_9f8e7d6c5b4a";
pub const CANARY_REFRESH: &str = "kwcanary_refresh_1a2b3c4d5e6f";

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

    pub fn home(&self) -> PathBuf {
        self.dir.path().join("home")
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
        child
            .stdin
            .take()
            .unwrap()
            .write_all(stdin.as_bytes())
            .unwrap();
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
        let json = serde_json::json!({
            "access_token": access, "refresh_token": refresh, "token_type": "bearer",
            "expires_in": 28800, "scope": "repo read:user",
        });
        self.ok(
            &["import", provider, "--account", account],
            &json.to_string(),
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

pub fn contains_bytes(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}
