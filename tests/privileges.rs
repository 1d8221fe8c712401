//! Privileges, the socket's permissions, the PID file and key secrecy, on
//! the real daemon. These tests run as root (as CI does): they switch to
//! `nobody` / `nogroup`, which Debian always has.

use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use testkit::binary;
use testkit::daemon::Daemon;
use testkit::{MilterSocket, Sidecar};

const LIVELY: Duration = Duration::from_secs(15);

fn id_of(database: &str, name: &str) -> u32 {
    let out = Command::new("getent")
        .args([database, name])
        .output()
        .expect("getent");
    let line = String::from_utf8(out.stdout).unwrap();
    line.split(':')
        .nth(2)
        .and_then(|id| id.parse().ok())
        .unwrap_or_else(|| panic!("no {database} entry {name}: {line:?}"))
}

/// The values of a `/proc/PID/status` field (`Uid:`, `Gid:`, `Groups:`).
fn status_ids(pid: u32, field: &str) -> Vec<u32> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .unwrap_or_else(|| panic!("no {field} in status"))
        .split_whitespace()
        .map(|v| v.parse().unwrap())
        .collect()
}

fn addr(socket: &MilterSocket) -> std::net::SocketAddr {
    match socket {
        MilterSocket::Inet(addr) => *addr,
        MilterSocket::Unix(_) => unreachable!(),
    }
}

#[test]
fn user_id_drops_to_the_user_and_group_after_reading_keys() {
    testkit::require_root();
    let nobody = id_of("passwd", "nobody");
    let nogroup = id_of("group", "nogroup");
    // Keys stay root's, mode 0600: readable only before the switch.
    let sidecar = Sidecar::builder()
        .config_line("UserID nobody:nogroup")
        .write();
    let socket = MilterSocket::free_inet();
    let milter = sidecar.start(&socket);
    let pid = milter.pid();
    testkit::poll(LIVELY, || {
        milter.log().contains("dropped privileges").then_some(())
    })
    .unwrap_or_else(|| panic!("no privilege drop logged:\n{}", milter.log()));
    assert_eq!(
        status_ids(pid, "Uid:"),
        vec![nobody; 4],
        "real, effective, saved, fs"
    );
    assert_eq!(status_ids(pid, "Gid:"), vec![nogroup; 4]);
    let groups = status_ids(pid, "Groups:");
    assert!(
        groups.iter().all(|&g| g == nogroup),
        "supplementary groups left: {groups:?}"
    );
    // It still signs: the key was read before the switch.
    testkit::conversation::signed_message(addr(&socket), LIVELY)
        .unwrap_or_else(|e| panic!("{e}\n{}", milter.log()));
}

#[test]
fn running_as_root_without_user_id_or_allow_root_is_refused() {
    testkit::require_root();
    let sidecar = Sidecar::builder().write();
    let socket = MilterSocket::unix_in(sidecar.dir());
    let pid_path = sidecar.dir().join("refused.pid");
    append_config(&sidecar, &format!("PidFile {}", pid_path.display()));
    let out = Command::new(binary())
        .args(["run", "-x"])
        .arg(sidecar.config())
        .args(["--socket", &socket.opendkim_spec()])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success(), "it ran as root");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "one line of error: {stderr}");
    assert!(lines[0].contains("refusing to sign as root"), "{stderr}");
    assert!(
        lines[0].contains("--allow-root"),
        "names the way out: {stderr}"
    );
    // Refused before anything was created.
    let MilterSocket::Unix(path) = &socket else {
        unreachable!()
    };
    assert!(!path.exists(), "a socket file was left behind");
    assert!(!pid_path.exists(), "a PID file was left behind");
}

#[test]
fn the_unix_socket_never_exists_with_more_than_its_configured_mode_and_group() {
    testkit::require_root();
    let nogroup = id_of("group", "nogroup");
    let sidecar = Sidecar::builder().write();
    let dir = sidecar.dir();
    let toml = sidecar.native_toml(
        "socket.toml",
        "[server]\nsocket_mode = 0o660\nsocket_group = \"nogroup\"",
        &["127.0.0.1"],
    );
    let socket = MilterSocket::unix_in(dir);
    let MilterSocket::Unix(path) = &socket else {
        unreachable!()
    };
    // Watch the path from before the daemon starts: every state it is
    // seen in must grant no more than 0660 to group nogroup.
    let stop = Arc::new(AtomicBool::new(false));
    let watcher = std::thread::spawn({
        let path = path.clone();
        let stop = Arc::clone(&stop);
        move || {
            let mut seen = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                if let Ok(meta) = std::fs::symlink_metadata(&path) {
                    let state = (meta.permissions().mode() & 0o7777, meta.gid());
                    if seen.last() != Some(&state) {
                        seen.push(state);
                    }
                }
            }
            seen
        }
    });
    let milter = Daemon {
        toml: Some(toml.clone()),
        ..Daemon::default()
    }
    .start(&sidecar, &socket);
    std::thread::sleep(Duration::from_millis(100));
    stop.store(true, Ordering::Relaxed);
    let seen = watcher.join().unwrap();
    let meta = std::fs::symlink_metadata(path).unwrap();
    assert_eq!(meta.permissions().mode() & 0o7777, 0o660);
    assert_eq!(meta.gid(), nogroup);
    assert_eq!(seen.last(), Some(&(0o660, nogroup)), "{seen:?}");
    for (mode, gid) in &seen {
        assert!(
            *mode == 0 || (*mode == 0o660 && *gid == nogroup),
            "the socket was seen with mode {mode:o} and group {gid}: {seen:?}"
        );
    }
    drop(milter);
}

#[test]
fn with_user_id_the_unix_socket_belongs_to_that_user_and_group_with_the_umask_mode() {
    testkit::require_root();
    let opendkim = id_of("passwd", "opendkim");
    let opendkim_group = id_of("group", "opendkim");
    // As OpenDKIM does: UserID without a group takes the user's own group,
    // and the socket's mode is what UMask leaves (0777 & ~007).
    let sidecar = Sidecar::builder()
        .config_line("UserID opendkim")
        .config_line("UMask 007")
        .write();
    let socket = MilterSocket::unix_in(sidecar.dir());
    let MilterSocket::Unix(path) = &socket else {
        unreachable!()
    };
    let milter = sidecar.start(&socket);
    let meta = std::fs::symlink_metadata(path).unwrap();
    assert_eq!(
        (meta.uid(), meta.gid(), meta.permissions().mode() & 0o777),
        (opendkim, opendkim_group, 0o770),
        "owner, group and mode of the socket\n{}",
        milter.log()
    );
    drop(milter);
}

#[test]
fn the_pid_file_replaces_a_planted_symlink_without_following_it() {
    testkit::require_root();
    let sidecar = Sidecar::builder().write();
    let dir = sidecar.dir();
    let victim = dir.join("victim");
    std::fs::write(&victim, "precious\n").unwrap();
    let pid_path = dir.join("dkim-sidecar.pid");
    append_config(&sidecar, &format!("PidFile {}", pid_path.display()));
    std::os::unix::fs::symlink(&victim, &pid_path).unwrap();
    let socket = MilterSocket::free_inet();
    let milter = sidecar.start(&socket);
    // Written just after the sockets are bound: wait for it.
    let meta = testkit::poll(LIVELY, || {
        std::fs::symlink_metadata(&pid_path)
            .ok()
            .filter(|m| m.file_type().is_file())
    })
    .unwrap_or_else(|| panic!("no PID file replaced the symlink:\n{}", milter.log()));
    assert_eq!(meta.permissions().mode() & 0o777, 0o644);
    assert_eq!(
        std::fs::read_to_string(&pid_path).unwrap().trim(),
        milter.pid().to_string()
    );
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious\n");
    let leftovers: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.contains(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");
    let (status, log) = milter.stop_with_log();
    assert!(status.success(), "{status:?} on SIGTERM:\n{log}");
    assert!(!pid_path.exists(), "removed on a clean stop");
}

/// The base64 body of a PEM file, as 16-character pieces: any of them in
/// an output means key material leaked.
fn key_pieces(pem: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(pem).unwrap();
    let body: String = text
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .collect::<Vec<_>>()
        .concat();
    assert!(body.len() > 500, "a private key: {}", pem.display());
    body.as_bytes()
        .chunks(16)
        .filter(|c| c.len() == 16)
        .map(|c| String::from_utf8(c.to_vec()).unwrap())
        .collect()
}

fn assert_no_key_material(output: &str, pieces: &[String], what: &str) {
    for piece in pieces {
        assert!(
            !output.contains(piece.as_str()),
            "{what} contains key material ({piece}):\n{output}"
        );
    }
}

/// Appends `line` to the Sidecar's opendkim.conf.
fn append_config(sidecar: &Sidecar, line: &str) {
    let mut conf = std::fs::read_to_string(sidecar.config()).unwrap();
    conf.push_str(line);
    conf.push('\n');
    std::fs::write(sidecar.config(), conf).unwrap();
}

/// A Sidecar whose opendkim.conf names a socket, as check-config wants.
fn sidecar_with_socket() -> Sidecar {
    let sidecar = Sidecar::builder().write();
    append_config(&sidecar, "Socket inet:8891@127.0.0.1");
    sidecar
}

/// A bad key no longer stops `run` (it holds only its own mail), so what
/// `run` says is its log from start to stop.
fn run_and_check_config(sidecar: &Sidecar) -> (String, String) {
    let socket = MilterSocket::free_inet();
    let (stopped, run) = sidecar.start(&socket).stop_with_log();
    assert!(stopped.success(), "{run}");
    assert!(
        run.contains("cannot sign") || run.contains("On-KeyError"),
        "the bad key is reported: {run}"
    );
    let check = Command::new(binary())
        .args(["check-config", "-x"])
        .arg(sidecar.config())
        .output()
        .unwrap();
    assert!(!check.status.success(), "check-config accepted a bad key");
    let text = |out: &std::process::Output| {
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    };
    (run, text(&check))
}

#[test]
fn key_bytes_never_appear_in_errors_about_a_malformed_key() {
    let sidecar = sidecar_with_socket();
    let key = &sidecar.keys()[0].private_key;
    let pieces = key_pieces(key);
    // Damage the DER inside: the base64 stays valid, the ASN.1 does not.
    let text = std::fs::read_to_string(key).unwrap();
    let mut lines: Vec<String> = text.lines().map(String::from).collect();
    lines[3] = "A".repeat(lines[3].len());
    lines.truncate(8);
    lines.push(text.lines().last().unwrap().to_string());
    std::fs::write(key, lines.join("\n") + "\n").unwrap();
    assert_errors_name_the_key_and_not_its_bytes(&sidecar, key, &pieces);
}

#[test]
fn key_bytes_never_appear_in_errors_about_an_unsafe_key() {
    let sidecar = sidecar_with_socket();
    let key = &sidecar.keys()[0].private_key;
    let pieces = key_pieces(key);
    testkit::set_mode(key, 0o644);
    assert_errors_name_the_key_and_not_its_bytes(&sidecar, key, &pieces);
}

/// `run` and `check-config` name the key file in their error and show none
/// of its bytes.
fn assert_errors_name_the_key_and_not_its_bytes(sidecar: &Sidecar, key: &Path, pieces: &[String]) {
    let (run, check) = run_and_check_config(sidecar);
    assert!(
        run.contains(&key.display().to_string()),
        "names the file: {run}"
    );
    assert_no_key_material(&run, pieces, "run's output");
    assert_no_key_material(&check, pieces, "check-config's output");
}

#[test]
fn key_bytes_never_appear_in_the_log_of_a_signing_daemon() {
    let sidecar = sidecar_with_socket();
    let pieces = key_pieces(&sidecar.keys()[0].private_key);
    let socket = MilterSocket::free_inet();
    let milter = sidecar.start(&socket);
    testkit::conversation::signed_message(addr(&socket), LIVELY)
        .unwrap_or_else(|e| panic!("{e}\n{}", milter.log()));
    let check = Command::new(binary())
        .args(["check-config", "-x"])
        .arg(sidecar.config())
        .output()
        .unwrap();
    assert!(check.status.success(), "{check:?}");
    assert_no_key_material(
        &String::from_utf8_lossy(&check.stdout),
        &pieces,
        "check-config",
    );
    assert!(milter.stop().success());
    assert_no_key_material(&milter_log(&sidecar), &pieces, "the daemon's log");
}

fn milter_log(sidecar: &Sidecar) -> String {
    std::fs::read_to_string(sidecar.dir().join("sidecar.log")).unwrap_or_default()
}
