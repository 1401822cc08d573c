//! One vault, many processes: the CLI and servers reach the vault through whichever process
//! owns it (tests of invariant 10 that need no MCP server; the server ones live in server tests).

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;

use keyward::config::Home;
use keyward::vault::{share, ConnKey, OpenMode, Vault};

use crate::support::home::Kw;
use crate::support::{CANARY_ACCESS, CANARY_REFRESH};

fn frame(stream: &mut UnixStream, value: &serde_json::Value) -> serde_json::Value {
    let bytes = serde_json::to_vec(value).unwrap();
    stream
        .write_all(&(bytes.len() as u32).to_be_bytes())
        .unwrap();
    stream.write_all(&bytes).unwrap();
    let mut len = [0u8; 4];
    stream.read_exact(&mut len).unwrap();
    let mut buf = vec![0u8; u32::from_be_bytes(len) as usize];
    stream.read_exact(&mut buf).unwrap();
    serde_json::from_slice(&buf).unwrap()
}

// The tests that hold the vault in this process while commands or raw peers talk to it run on
// a multi-threaded runtime: its workers serve them while the test's own thread waits.
#[tokio::test(flavor = "multi_thread")]
async fn every_cli_command_works_through_an_owner_with_identical_output() {
    let alone = Kw::new();
    let shared = Kw::new();
    // The same master key in both homes, so the outputs can be compared byte for byte.
    for kw in [&alone, &shared] {
        kw.import("github", "work", CANARY_ACCESS, CANARY_REFRESH);
        kw.import("slack", "default", "slack-token-1", "slack-refresh-1");
    }
    let owner = shared.vault().await;
    assert!(owner.is_owner());
    let socket = share::socket_path(owner.home());
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&socket).unwrap().permissions())
            & 0o777;
    assert_eq!(mode, 0o600, "the socket is readable only by the user");

    let strip = |s: String| {
        s.lines()
            .map(|l| {
                l.split_whitespace()
                    .filter(|w| !w.ends_with('m') && !w.ends_with('h'))
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .collect::<Vec<_>>()
            .join("\n")
    };
    for args in [vec!["status"], vec!["tools", "--provider", "slack"]] {
        let a = alone.ok(&args, "").stdout();
        let b = shared.ok(&args, "").stdout();
        assert_eq!(
            strip(a),
            strip(b),
            "{args:?} differs when another process owns the vault"
        );
    }
    // Writes through the owner land in the owner's database, flushed.
    let run = shared.import("google", "default", "g-token-123456", "g-refresh-123456");
    run.assert_clean(&[CANARY_ACCESS, "g-token-123456"]);
    let key = ConnKey::new("default", "google", "default").unwrap();
    assert_eq!(
        owner
            .get(&key)
            .await
            .unwrap()
            .unwrap()
            .record
            .access_token
            .expose(),
        "g-token-123456"
    );
    // No OAuth app is configured (revocation is tested in `oauth`): remove the copy only.
    shared.ok(&["disconnect", "slack", "--force"], "");
    assert!(owner
        .get(&ConnKey::new("default", "slack", "default").unwrap())
        .await
        .unwrap()
        .is_none());
    let audit = shared.ok(&["audit", "--json"], "");
    audit.assert_clean(&[CANARY_ACCESS, CANARY_REFRESH]);
    assert!(
        audit.stdout().contains("\"disconnect\""),
        "{}",
        audit.stdout()
    );
    let rotate = shared.ok(&["rotate-key"], "");
    assert!(
        rotate.stdout().contains("data key 2 is now current"),
        "{}",
        rotate.stdout()
    );
    assert_eq!(owner.current_key_id().await, 2);
    // A wrong key is refused by the non-owner itself, before it talks to the owner.
    let mut cmd = shared.command(&["status"]);
    cmd.env(
        "KEYWARD_MASTER_KEY",
        "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
    );
    let out = cmd.output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("the master key does not open this vault")
    );
    // When the owner goes away, the next process simply opens the database itself.
    drop(owner);
    assert!(!socket.exists(), "an orderly owner removes its socket");
    assert!(shared.ok(&["status"], "").stdout().contains("google"));
}

#[test]
fn a_stale_socket_from_a_dead_owner_does_not_block_the_next_start() {
    let kw = Kw::new();
    kw.import("github", "a", CANARY_ACCESS, CANARY_REFRESH);
    // A socket file nobody listens on, as a killed owner leaves behind.
    let path = kw.home().join("keyward.sock");
    drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
    assert!(path.exists());
    let run = kw.ok(&["status"], "");
    assert!(run.stdout().contains("github"), "{}", run.stdout());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_peer_speaking_another_protocol_gets_a_clear_error_not_a_hang() {
    let kw = Kw::new();
    kw.import("github", "a", CANARY_ACCESS, CANARY_REFRESH);
    let owner = kw.vault().await;
    let mut stream = UnixStream::connect(share::socket_path(owner.home())).unwrap();
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(5)))
        .unwrap();
    let answer = frame(
        &mut stream,
        &serde_json::json!({"op": "hello", "protocol": 999, "pid": 1}),
    );
    let message = answer["Err"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("protocol mismatch"), "{answer}");
    assert!(message.contains("v999"), "{answer}");
    // A peer that skips the hello is dropped, not served.
    let mut stream = UnixStream::connect(share::socket_path(owner.home())).unwrap();
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(5)))
        .unwrap();
    let bytes = serde_json::to_vec(&serde_json::json!({"op": "keys"})).unwrap();
    stream
        .write_all(&(bytes.len() as u32).to_be_bytes())
        .unwrap();
    stream.write_all(&bytes).unwrap();
    let mut buf = [0u8; 4];
    assert!(
        stream.read_exact(&mut buf).is_err(),
        "a peer without hello got an answer"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_process_of_another_user_is_refused() {
    let is_root = std::process::Command::new("id")
        .arg("-u")
        .output()
        .map(|o| o.stdout == b"0\n")
        .unwrap_or(false);
    let setpriv = std::path::Path::new("/usr/bin/setpriv").exists();
    // The system interpreter: a per-user one (pyenv) is not readable by the other uid.
    let python = std::path::Path::new("/usr/bin/python3");
    if !(is_root && setpriv && python.exists()) {
        eprintln!("skipped: needs root, setpriv and /usr/bin/python3 to run a peer as another uid");
        return;
    }
    let kw = Kw::new();
    kw.import("github", "a", CANARY_ACCESS, CANARY_REFRESH);
    let owner = kw.vault().await;
    let socket = share::socket_path(owner.home());
    // Open the folder and socket to everyone so that only the peer-credential check stands in
    // the way (keyward itself never does this).
    use std::os::unix::fs::PermissionsExt;
    for p in [kw.dir.path().to_path_buf(), kw.home(), socket.clone()] {
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o777)).unwrap();
    }
    let script = r#"
import json, socket, struct, sys
s = socket.socket(socket.AF_UNIX); s.settimeout(5); s.connect(sys.argv[1])
b = json.dumps({"op": "hello", "protocol": 1, "pid": 1}).encode()
s.sendall(struct.pack(">I", len(b)) + b)
n = struct.unpack(">I", s.recv(4))[0]; data = b""
while len(data) < n: data += s.recv(n - len(data))
print(data.decode())
"#;
    let out = std::process::Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "/usr/bin/python3",
            "-c",
            script,
        ])
        .arg(&socket)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("belongs to another user"),
        "stdout: {text} stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!text.contains(CANARY_ACCESS));
}

fn write_raw(stream: &mut UnixStream, value: &serde_json::Value) -> std::io::Result<()> {
    let bytes = serde_json::to_vec(value).unwrap();
    stream.write_all(&(bytes.len() as u32).to_be_bytes())?;
    stream.write_all(&bytes)
}

fn read_raw(stream: &mut UnixStream) -> std::io::Result<serde_json::Value> {
    let mut len = [0u8; 4];
    stream.read_exact(&mut len)?;
    let mut buf = vec![0u8; u32::from_be_bytes(len) as usize];
    stream.read_exact(&mut buf)?;
    Ok(serde_json::from_slice(&buf).unwrap())
}

/// A request as the owner reads it: after the hello, every frame starts with the 8-byte id of
/// the request it belongs to.
fn read_request(stream: &mut UnixStream) -> std::io::Result<(u64, serde_json::Value)> {
    let mut len = [0u8; 4];
    stream.read_exact(&mut len)?;
    let mut buf = vec![0u8; u32::from_be_bytes(len) as usize];
    stream.read_exact(&mut buf)?;
    let id = u64::from_be_bytes(buf[..8].try_into().unwrap());
    Ok((id, serde_json::from_slice(&buf[8..]).unwrap()))
}

/// The owner's answer to request `id`.
fn write_answer(
    stream: &mut UnixStream,
    id: u64,
    value: &serde_json::Value,
) -> std::io::Result<()> {
    let mut bytes = id.to_be_bytes().to_vec();
    bytes.extend(serde_json::to_vec(value).unwrap());
    stream.write_all(&(bytes.len() as u32).to_be_bytes())?;
    stream.write_all(&bytes)
}

/// A raw connection to the owner of `kw`'s vault that has said hello; the owner's answer.
fn hello(kw: &Kw) -> (UnixStream, serde_json::Value) {
    let mut stream = UnixStream::connect(kw.home().join("keyward.sock")).unwrap();
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(30)))
        .unwrap();
    let answer = frame(
        &mut stream,
        &serde_json::json!({"op": "hello", "protocol": share::PROTOCOL_VERSION, "pid": 1}),
    );
    (stream, answer)
}

/// True once the owner has closed `stream` (bounded: a read timeout fails the test).
fn closed_by_owner(stream: &mut UnixStream) -> bool {
    let mut byte = [0u8; 1];
    match stream.read(&mut byte) {
        Ok(n) => n == 0,
        Err(e) => e.kind() == std::io::ErrorKind::ConnectionReset,
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_owner_socket_others_can_write_to_is_refused() {
    let kw = Kw::new();
    kw.import("github", "a", CANARY_ACCESS, CANARY_REFRESH);
    let owner = kw.vault().await;
    let socket = share::socket_path(owner.home());
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o666)).unwrap();
    let run = kw.run(
        &["import", "slack"],
        &crate::support::home::token_json("xoxp-1", "r"),
    );
    assert_eq!(run.code(), Some(1), "{}", run.stdout());
    assert!(
        run.stderr()
            .contains(&format!("chmod go-w {}", socket.display())),
        "{}",
        run.stderr()
    );
    assert!(owner
        .get(&ConnKey::new("default", "slack", "default").unwrap())
        .await
        .unwrap()
        .is_none());
}

/// The client side of the socket checks the listener's uid (SO_PEERCRED) before sending
/// anything: a socket planted by another user, even one that looks like ours, gets no token.
#[tokio::test(flavor = "multi_thread")]
async fn a_client_sends_nothing_to_an_owner_socket_of_another_user() {
    let python = std::path::Path::new("/usr/bin/python3");
    if !(rustix::process::geteuid().is_root() && python.exists()) {
        eprintln!("skipped: needs root and /usr/bin/python3 to listen as another uid");
        return;
    }
    let kw = Kw::new();
    kw.import("github", "a", CANARY_ACCESS, CANARY_REFRESH);
    // The real owner holds the vault, so a command goes to the socket; then the socket file is
    // swapped for one that a process of uid 65534 listens on, owned by us like the real one.
    let owner = kw.vault().await;
    let planted = tempfile::tempdir().unwrap();
    std::os::unix::fs::chown(planted.path(), Some(65534), Some(65534)).unwrap();
    let fake_path = planted.path().join("s");
    let script = r#"
import json, socket, struct, sys
l = socket.socket(socket.AF_UNIX); l.bind(sys.argv[1]); l.listen(8); l.settimeout(60)
print("ready", flush=True)
got = b""
try:
    while True:
        c, _ = l.accept(); c.settimeout(10)
        try:
            while True:
                h = c.recv(4)
                if len(h) < 4: break
                n = struct.unpack(">I", h)[0]; data = b""
                while len(data) < n:
                    part = c.recv(n - len(data))
                    if not part: break
                    data += part
                got += data + b"\n"
                ans = json.dumps({"Ok": {"protocol": 2, "pid": 1, "idle_ms": 60000}}).encode()
                c.sendall(struct.pack(">I", len(ans)) + ans)
        except Exception:
            pass
        sys.stdout.write(got.decode(errors="replace")); sys.stdout.flush()
except Exception:
    pass
"#;
    use std::os::unix::process::CommandExt;
    let mut fake = std::process::Command::new(python)
        .args(["-c", script])
        .arg(&fake_path)
        .uid(65534)
        .gid(65534)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = std::io::BufReader::new(fake.stdout.take().unwrap());
    let mut line = String::new();
    std::io::BufRead::read_line(&mut out, &mut line).unwrap();
    assert_eq!(line.trim(), "ready");
    let socket = share::socket_path(owner.home());
    std::fs::rename(&fake_path, &socket).unwrap();
    std::os::unix::fs::chown(&socket, Some(0), Some(0)).unwrap();

    let run = kw.run(
        &["import", "github", "--account", "b"],
        &crate::support::home::token_json(CANARY_ACCESS, CANARY_REFRESH),
    );
    let _ = fake.kill();
    let _ = fake.wait();
    let mut heard = String::new();
    let _ = out.read_to_string(&mut heard);
    assert!(
        !heard.contains(CANARY_ACCESS) && !heard.contains("\"put\""),
        "the planted socket received: {heard}"
    );
    assert_eq!(run.code(), Some(1), "{}", run.stdout());
    assert!(
        run.stderr().contains("runs as uid 65534"),
        "{}",
        run.stderr()
    );
    drop(owner);
}

/// The owner cuts off a peer that stalls inside a frame (it announced 16 MiB and sent a few
/// bytes) and peers idle longer than its idle timeout; a relaying process whose pooled
/// connections were closed that way reopens them without noticing.
#[tokio::test(flavor = "multi_thread")]
async fn stalled_and_idle_peers_are_cut_off_and_pooled_clients_reconnect() {
    let kw = Kw::new();
    kw.import("github", "a", CANARY_ACCESS, CANARY_REFRESH);
    let _owner = kw.spawn_owner(&[("KEYWARD_TEST_PEER_TIMEOUT_MS", "300")]);
    let relay = kw.vault().await;
    assert!(!relay.is_owner());
    assert_eq!(relay.keys().await.unwrap().len(), 1);

    let (mut stalled, answer) = hello(&kw);
    assert!(answer.get("Ok").is_some(), "{answer}");
    stalled
        .write_all(&(16u32 * 1024 * 1024).to_be_bytes())
        .unwrap();
    stalled.write_all(b"{\"op\":\"ke").unwrap();
    assert!(
        closed_by_owner(&mut stalled),
        "a peer stalled inside a frame was not cut off"
    );
    let (mut idle, answer) = hello(&kw);
    assert!(answer.get("Ok").is_some(), "{answer}");
    assert!(closed_by_owner(&mut idle), "an idle peer was not cut off");

    // The relay's connection went idle before both: the owner has closed it by now.
    assert_eq!(relay.keys().await.unwrap().len(), 1);
    relay
        .touch(&ConnKey::new("default", "github", "a").unwrap())
        .await;
    assert!(
        !relay.is_owner(),
        "the relay took the closed connection for a dead owner"
    );
}

/// A connection that the owner closed while it sat idle is reopened for the next call; the call
/// succeeds (here the owner is a fake that closes every connection after one answer, however
/// young the connection is).
#[tokio::test]
async fn a_pooled_connection_closed_by_the_owner_is_reopened_for_the_call() {
    let dir = tempfile::tempdir().unwrap();
    let home = Home {
        dir: dir.path().to_path_buf(),
    };
    let listener = std::os::unix::net::UnixListener::bind(share::socket_path(&home)).unwrap();
    let fake = std::thread::spawn(move || {
        let mut served = 0;
        for stream in listener.incoming().take(3) {
            let mut stream = stream.unwrap();
            stream
                .set_read_timeout(Some(std::time::Duration::from_secs(30)))
                .unwrap();
            let hello = read_raw(&mut stream).unwrap();
            assert_eq!(hello["op"], "hello");
            let greeting = serde_json::json!({"Ok": {
                "protocol": share::PROTOCOL_VERSION, "pid": 1, "idle_ms": 3_600_000,
            }});
            if write_raw(&mut stream, &greeting).is_err() {
                continue;
            }
            // One request, one answer, then close as if the connection had idled out.
            if let Ok((id, request)) = read_request(&mut stream) {
                assert_eq!(request["op"], "keys");
                write_answer(&mut stream, id, &serde_json::json!({"Ok": []})).unwrap();
                served += 1;
            }
        }
        served
    });
    let client = share::RemoteClient::connect(&home)
        .await
        .unwrap_or_else(|_| panic!("connect"));
    for _ in 0..2 {
        let keys: Vec<ConnKey> = client
            .call(share::Request::Keys {})
            .await
            .expect("the owner is alive: not a lost owner");
        assert!(keys.is_empty());
    }
    // The third connection is only greeted: unblock the fake.
    drop(client);
    let _ = UnixStream::connect(share::socket_path(&home)).map(|mut s| {
        write_raw(
            &mut s,
            &serde_json::json!({"op": "hello", "protocol": share::PROTOCOL_VERSION, "pid": 1}),
        )
    });
    assert_eq!(fake.join().unwrap(), 2);
}

/// The owner serves at most MAX_PEERS peers at once and tells the next one why it is refused;
/// once a peer leaves, a new one is served.
#[tokio::test(flavor = "multi_thread")]
async fn the_owner_caps_its_peers_and_says_so() {
    let kw = Kw::new();
    kw.import("github", "a", CANARY_ACCESS, CANARY_REFRESH);
    let _owner = kw.vault().await;
    let mut peers = Vec::new();
    for i in 0..share::MAX_PEERS {
        let (stream, answer) = hello(&kw);
        assert!(answer.get("Ok").is_some(), "peer {i}: {answer}");
        peers.push(stream);
    }
    let (_, answer) = hello(&kw);
    let message = answer["Err"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains(&format!("already serves {} connections", share::MAX_PEERS)),
        "{answer}"
    );
    drop(peers.pop());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let (_, answer) = hello(&kw);
        if answer.get("Ok").is_some() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no peer served after one left: {answer}"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// `keyward audit` through a non-owner pages the log: a log far larger than one frame is read
/// in full, and `--limit` still gives the newest entries.
#[tokio::test(flavor = "multi_thread")]
async fn an_audit_log_larger_than_a_frame_reads_through_another_process() {
    let kw = Kw::new();
    kw.import("github", "a", CANARY_ACCESS, CANARY_REFRESH);
    let owner = kw.vault().await;
    let big = "x".repeat(512 * 1024);
    let entries = 2 * share::MAX_FRAME / big.len() + 2;
    for i in 0..entries {
        owner
            .audit(&keyward::vault::AuditEntry::new(
                "default",
                &format!("bulk-{i}"),
                big.clone(),
            ))
            .await;
    }
    owner.flush().await.unwrap();
    let all = kw.ok(&["audit", "--json"], "").stdout();
    let events: Vec<String> = all
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["event"].to_string())
        .collect();
    assert_eq!(events.len(), entries + 1, "the import and every bulk entry");
    assert_eq!(events.last().unwrap(), &format!("\"bulk-{}\"", entries - 1));
    let newest = kw.ok(&["audit", "--json", "--limit", "35"], "").stdout();
    let events: Vec<String> = newest
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["event"].to_string())
        .collect();
    let want: Vec<String> = (entries - 35..entries)
        .map(|i| format!("\"bulk-{i}\""))
        .collect();
    assert_eq!(events, want);
    assert!(owner.is_owner());
}

/// One process owning two homes refreshes each home's connections with that home's own
/// configuration, for the other processes that ask; and once it lets both go, each vault is
/// released (another process becomes the owner). Before the owner's refresher was a hook handed
/// in per vault, a process-wide one served whichever home asked first and kept it open for ever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_owner_of_two_homes_refreshes_each_with_its_own_provider_for_other_processes() {
    use crate::support::home::{expired_token_json, home_for};
    use crate::support::FakeUpstream;
    use keyward::oauth::peers::open_vault;

    let fakes = [FakeUpstream::start().await, FakeUpstream::start().await];
    let mut homes = Vec::new();
    for (i, fake) in fakes.iter().enumerate() {
        let kw = home_for(fake, &[]);
        let (access, refresh) = (
            format!("{CANARY_ACCESS}_{i}"),
            format!("{CANARY_REFRESH}_{i}"),
        );
        fake.grant_with_refresh(
            "github",
            &access,
            &refresh,
            &["repo", "read:user"],
            Some(std::time::Duration::from_secs(3600)),
        );
        kw.ok(
            &["import", "github"],
            &expired_token_json(&access, &refresh, "repo read:user"),
        );
        homes.push(kw);
    }
    let mut owners: Vec<Vault> = Vec::new();
    for kw in &homes {
        owners.push(
            open_vault(&Home { dir: kw.home() }, OpenMode::Existing)
                .await
                .unwrap(),
        );
    }
    assert!(owners.iter().all(Vault::is_owner));

    // The second home first: a process-wide refresher would now belong to it.
    for i in [1, 0] {
        let kw = &homes[i];
        let call = tokio::task::spawn_blocking({
            let home = kw.home();
            move || {
                std::process::Command::new(crate::support::home::bin())
                    .arg("--home")
                    .arg(home)
                    .args(["call", "github_get_me"])
                    .env_remove("KEYWARD_MASTER_KEY")
                    .env_remove("KEYWARD_HOME")
                    .output()
                    .unwrap()
            }
        })
        .await
        .unwrap();
        assert!(
            call.status.success(),
            "home {i}: {}",
            String::from_utf8_lossy(&call.stderr)
        );
        assert_eq!(fakes[i].successful_refreshes("github"), 1, "home {i}");
    }
    // Each home's refresh went to its own provider, and only there.
    assert_eq!(fakes.each_ref().map(|f| f.refresh_count("github")), [1, 1]);
    drop(owners);
    for kw in &homes {
        let probe = keyward::vault::Vault::open(&Home { dir: kw.home() }, OpenMode::Existing)
            .await
            .expect("open after the owner let go");
        assert!(
            probe.is_owner(),
            "the dropped vault released the owner lock"
        );
    }
}

/// The hot path of a non-owner never holds a runtime worker: while the owner sits on a request
/// (here one that takes it and never answers), the call waits for it and every other task of
/// the runtime goes on — even on a runtime with a single worker. A blocking relay call on that
/// worker would stall the runtime until the owner answered.
#[test]
fn a_stalled_owner_stalls_only_the_calls_that_wait_for_it() {
    use std::sync::mpsc;
    use std::time::Duration;
    let kw = Kw::new();
    kw.import("github", "a", CANARY_ACCESS, CANARY_REFRESH);
    let home = Home { dir: kw.home() };
    // Play the owner: hold its lock, greet, take one request and sit on it until released.
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(kw.home().join(keyward::vault::store::OWNER_LOCK))
        .unwrap();
    rustix::fs::flock(&lock, rustix::fs::FlockOperation::NonBlockingLockExclusive).unwrap();
    let listener = std::os::unix::net::UnixListener::bind(share::socket_path(&home)).unwrap();
    let (seen_tx, seen_rx) = mpsc::channel();
    let (release_tx, release_rx) = mpsc::channel::<()>();
    let owner = std::thread::spawn(move || {
        let (mut stream, _) = listener.accept().unwrap();
        read_raw(&mut stream).unwrap(); // the hello
        let greeting = serde_json::json!({"Ok": {
            "protocol": share::PROTOCOL_VERSION, "pid": 1, "idle_ms": 3_600_000,
        }});
        write_raw(&mut stream, &greeting).unwrap();
        let (_, request) = read_request(&mut stream).unwrap();
        seen_tx.send(request["op"].clone()).unwrap();
        let _ = release_rx.recv_timeout(Duration::from_secs(300));
    });

    // The runtime runs on its own thread, so that a stalled runtime fails the test, not hangs it.
    let (went_on_tx, went_on_rx) = mpsc::channel();
    let runtime = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let vault = Vault::open(&home, OpenMode::Existing)
                .await
                .expect("open through the fake owner");
            assert!(!vault.is_owner());
            tokio::spawn(async move { vault.list(None).await });
            // Once the owner holds the request, the call is in flight: this task still runs.
            let op =
                tokio::task::spawn_blocking(move || seen_rx.recv_timeout(Duration::from_secs(120)))
                    .await
                    .unwrap();
            went_on_tx.send(op).unwrap();
        });
        rt.shutdown_background();
    });
    let op = went_on_rx
        .recv_timeout(Duration::from_secs(150))
        .expect("the runtime stalled while the owner sat on a request")
        .expect("the request reached the owner");
    assert_eq!(op, "list");
    let _ = release_tx.send(());
    owner.join().unwrap();
    runtime.join().unwrap();
    drop(lock);
}
