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
        // A command may exit without reading its input (a usage error, a refused home): that
        // is its answer, judged by its exit code, not a failure to feed it.
        match child.stdin.take().unwrap().write_all(stdin.as_bytes()) {
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {}
            written => written.unwrap(),
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

pub fn contains_bytes(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// A `keyward serve` (stdio) child that owns the vault of a home while it runs. It ends when
/// dropped: its stdin closes, which ends a stdio server.
pub struct Owner {
    pub child: std::process::Child,
}

impl Kw {
    /// Start `keyward serve` with `env` and wait (bounded) until it listens on the owner socket.
    pub fn spawn_owner(&self, env: &[(&str, &str)]) -> Owner {
        let mut cmd = self.command(&["serve"]);
        cmd.envs(env.iter().copied())
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let mut owner = Owner {
            child: cmd.spawn().expect("spawn keyward serve"),
        };
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
