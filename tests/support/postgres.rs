//! A private PostgreSQL cluster for the tests and benches: `initdb` into a temporary folder,
//! `pg_ctl start` on 127.0.0.1 and a free port, its socket folder inside the temporary folder,
//! stopped and deleted at the end. The binaries are found with `pg_config --bindir`.
//!
//! [`shared`] is the one cluster of a test binary (each test takes its own database from it,
//! [`PgCluster::database`]), started on first use; a small watchdog stops and deletes it when the
//! test process ends, however it ends. [`PgCluster::start`] is a cluster of one's own, for tests
//! that stop and restart PostgreSQL; it is stopped and deleted when dropped.
//!
//! `initdb` refuses to run as root (CI runs as root): then everything runs as the `postgres`
//! user (`runuser -u postgres --`), in a folder it owns. Without PostgreSQL binaries the tests
//! that need them say so and pass — except under `CI=true`, where that is a failure.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;

/// A running PostgreSQL cluster.
pub struct PgCluster {
    /// The temporary folder holding `data/`, the socket and the log.
    base: PathBuf,
    _dir: Option<tempfile::TempDir>,
    bindir: PathBuf,
    pub port: u16,
    as_postgres: bool,
    /// Stop it when dropped (not the shared one: its watchdog does).
    own: bool,
}

/// The cluster shared by every test of this binary, started on first use; `None` (after saying
/// why) when PostgreSQL is not installed and CI does not require it.
pub fn shared() -> Option<&'static PgCluster> {
    static SHARED: OnceLock<Option<PgCluster>> = OnceLock::new();
    SHARED
        .get_or_init(|| {
            let mut cluster = PgCluster::start_inner()?;
            cluster.own = false;
            cluster.watch(std::process::id());
            Some(cluster)
        })
        .as_ref()
}

/// Where the PostgreSQL server binaries are, if installed.
fn bindir() -> Option<PathBuf> {
    let out = Command::new("pg_config").arg("--bindir").output().ok()?;
    let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    (out.status.success() && dir.join("initdb").exists() && dir.join("pg_ctl").exists())
        .then_some(dir)
}

fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

impl PgCluster {
    /// A cluster of one's own, stopped and deleted when dropped; `None` as for [`shared`].
    pub fn start() -> Option<PgCluster> {
        PgCluster::start_inner()
    }

    fn start_inner() -> Option<PgCluster> {
        let Some(bindir) = bindir() else {
            if std::env::var("CI").as_deref() == Ok("true") {
                panic!(
                    "PostgreSQL is not installed (no `pg_config --bindir` with initdb and pg_ctl), \
                     and CI runs the PostgreSQL tests: install it (`apt-get install postgresql`)"
                );
            }
            eprintln!(
                "skipped: PostgreSQL is not installed (`pg_config --bindir` finds no initdb)"
            );
            return None;
        };
        let dir = tempfile::Builder::new()
            .prefix("keyward-pg-")
            .tempdir()
            .expect("a temporary folder for PostgreSQL");
        let base = dir.path().to_path_buf();
        let as_postgres = is_root();
        // The postgres user must reach and own the folder (a temporary folder is 0700 root's).
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&base, std::fs::Permissions::from_mode(0o755)).unwrap();
        if as_postgres {
            run(Command::new("chown").arg("postgres:").arg(&base), "chown");
        }
        let mut cluster = PgCluster {
            base,
            _dir: Some(dir),
            bindir,
            port: 0,
            as_postgres,
            own: true,
        };
        let initdb = cluster.tool("initdb");
        run(
            cluster
                .command(&initdb)
                .arg("-D")
                .arg(cluster.data())
                .args(["-A", "trust", "-U", "postgres", "-E", "UTF8", "--locale=C"])
                .arg("--no-sync"),
            "initdb",
        );
        cluster.port = super::mcp::free_port();
        cluster.start_again();
        Some(cluster)
    }

    fn data(&self) -> PathBuf {
        self.base.join("data")
    }

    fn tool(&self, name: &str) -> PathBuf {
        self.bindir.join(name)
    }

    /// A command running `program` as the cluster's owner.
    fn command(&self, program: &Path) -> Command {
        if self.as_postgres {
            let mut cmd = Command::new("runuser");
            cmd.args(["-u", "postgres", "--"]).arg(program);
            cmd
        } else {
            Command::new(program)
        }
    }

    /// Start (again) on the same port and data: the way a restarted server comes back.
    pub fn start_again(&self) {
        let options = format!(
            "-c listen_addresses=127.0.0.1 -p {} -k {} -c fsync=off -c max_connections=400",
            self.port,
            self.base.display()
        );
        let status = self
            .command(&self.tool("pg_ctl"))
            .arg("-D")
            .arg(self.data())
            .arg("-o")
            .arg(options)
            .arg("-l")
            .arg(self.base.join("log"))
            .args(["-w", "-t", "120", "start"])
            .stdout(Stdio::null())
            .status()
            .expect("run pg_ctl start");
        assert!(
            status.success(),
            "PostgreSQL did not start:\n{}",
            std::fs::read_to_string(self.base.join("log")).unwrap_or_default()
        );
    }

    /// Stop the server: `fast` ends every session at once (as a restart does); `immediate`
    /// aborts as a crash would.
    pub fn stop(&self, mode: &str) {
        let _ = self
            .command(&self.tool("pg_ctl"))
            .arg("-D")
            .arg(self.data())
            .args(["-m", mode, "-w", "-t", "120", "stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }

    /// The URL of `database` for keyward (the `postgres` superuser, trusted on loopback).
    pub fn url(&self, database: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{database}", self.port)
    }

    /// A new, empty database; returns its URL.
    pub fn database(&self) -> String {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let name = format!(
            "kw_{}_{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::SeqCst)
        );
        self.psql("postgres", &format!("CREATE DATABASE {name}"));
        self.url(&name)
    }

    /// Run `sql` on `database` with psql; its output (unaligned, tuples only).
    pub fn psql(&self, database: &str, sql: &str) -> String {
        let out = Command::new(self.tool("psql"))
            .args([
                "-X",
                "-q",
                "-A",
                "-t",
                "-v",
                "ON_ERROR_STOP=1",
                "-h",
                "127.0.0.1",
            ])
            .args([
                "-p",
                &self.port.to_string(),
                "-U",
                "postgres",
                "-d",
                database,
                "-c",
                sql,
            ])
            .output()
            .expect("run psql");
        assert!(
            out.status.success(),
            "psql failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `pg_dump` of the database at `url` (plain SQL): what a backup holds.
    pub fn pg_dump(&self, url: &str) -> Vec<u8> {
        let database = db_name(url);
        let out = Command::new(self.tool("pg_dump"))
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-U",
                "postgres",
            ])
            .arg(&database)
            .output()
            .expect("run pg_dump");
        assert!(
            out.status.success(),
            "pg_dump failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    }

    /// Stop and delete the cluster once process `pid` has ended (a watchdog of its own, so a
    /// test binary that panics or is killed leaves nothing behind).
    fn watch(&self, pid: u32) {
        let pg_ctl = self.tool("pg_ctl");
        let stop = if self.as_postgres {
            format!(
                "runuser -u postgres -- {} -D {} -m immediate stop",
                pg_ctl.display(),
                self.data().display()
            )
        } else {
            format!(
                "{} -D {} -m immediate stop",
                pg_ctl.display(),
                self.data().display()
            )
        };
        // Backgrounded by the shell, which then exits: the watchdog outlives this process (in a
        // process group of its own, so a Ctrl-C of the tests does not end it first).
        let script = format!(
            "(while kill -0 {pid} 2>/dev/null; do sleep 1; done; {stop} >/dev/null 2>&1; \
             rm -rf {}) </dev/null >/dev/null 2>&1 &",
            self.base.display()
        );
        use std::os::unix::process::CommandExt;
        let status = Command::new("sh")
            .args(["-c", &script])
            .process_group(0)
            .status()
            .expect("start the PostgreSQL watchdog");
        assert!(status.success(), "the PostgreSQL watchdog did not start");
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        if self.own {
            self.stop("immediate");
        }
    }
}

fn run(cmd: &mut Command, what: &str) {
    let out = cmd.output().unwrap_or_else(|e| panic!("run {what}: {e}"));
    assert!(
        out.status.success(),
        "{what} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Another machine's home on the same store: `first`'s `config.toml`, its master key (each
/// machine is given the key; it never enters the database) and `KEYWARD_STORE_URL`. `first`
/// must be set up already (it holds the master key).
pub fn replica_of(first: &super::home::Kw) -> super::home::Kw {
    let mut kw = super::home::Kw::new();
    std::fs::create_dir_all(kw.home()).unwrap();
    for file in ["config.toml", "master.key"] {
        let from = first.home().join(file);
        if from.exists() {
            std::fs::copy(&from, kw.home().join(file)).unwrap();
        }
    }
    kw.env = first.env.clone();
    kw
}

/// `kw` using the PostgreSQL store at `url` (through `KEYWARD_STORE_URL`). keyward's own debug
/// log stays on; tokio-postgres's (a line per statement) does not: written synchronously into a
/// pipe that a busy test process drains, that much of it stalls a replica under a storm.
pub fn on_store(mut kw: super::home::Kw, url: &str) -> super::home::Kw {
    kw.env.push(("KEYWARD_STORE_URL".into(), url.to_string()));
    kw.env
        .push(("RUST_LOG".into(), "debug,tokio_postgres=info".into()));
    kw
}

/// A password that must never be printed (the clusters' trust authentication ignores it).
pub const PG_PASSWORD: &str = "kwcanary_pg_password_77";

/// `url` with [`PG_PASSWORD`] in it.
pub fn with_password(url: &str) -> String {
    url.replacen("postgres@", &format!("postgres:{PG_PASSWORD}@"), 1)
}

/// The database a URL of [`PgCluster::database`] names.
pub fn db_name(url: &str) -> String {
    url.rsplit('/').next().unwrap().to_string()
}
