//! One vault, many processes: the CLI and servers reach the vault through whichever process
//! owns it (tests of invariant 10 that need no MCP server; the server ones live in server tests).

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;

use keyward::config::Home;
use keyward::vault::{share, ConnKey, OpenMode, Vault};

use crate::cli::{Kw, CANARY_ACCESS, CANARY_REFRESH};

fn open(kw: &Kw) -> Vault {
    Vault::open(&Home { dir: kw.home() }, OpenMode::Existing).expect("open vault")
}

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

#[test]
fn every_cli_command_works_through_an_owner_with_identical_output() {
    let alone = Kw::new();
    let shared = Kw::new();
    // The same master key in both homes, so the outputs can be compared byte for byte.
    for kw in [&alone, &shared] {
        kw.import("github", "work", CANARY_ACCESS, CANARY_REFRESH);
        kw.import("slack", "default", "slack-token-1", "slack-refresh-1");
    }
    let owner = open(&shared);
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
    assert_eq!(owner.current_key_id(), 2);
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

#[test]
fn a_peer_speaking_another_protocol_gets_a_clear_error_not_a_hang() {
    let kw = Kw::new();
    kw.import("github", "a", CANARY_ACCESS, CANARY_REFRESH);
    let owner = open(&kw);
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

#[test]
fn a_process_of_another_user_is_refused() {
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
    let owner = open(&kw);
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
