//! The files in `packaging/` that the Debian package installs: systemd
//! accepts the units, they say what the issue asks of them, and the
//! maintainer scripts are valid shell. `.ci/package` checks the installed
//! package itself (dpkg, the units in place, the installed binary).

use std::path::{Path, PathBuf};
use std::process::Command;

fn packaging(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("packaging")
        .join(path)
}

fn read(path: &str) -> String {
    std::fs::read_to_string(packaging(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// `Key=Value` lines of a unit file (comments and sections dropped).
fn directives(unit: &str) -> Vec<(String, String)> {
    unit.lines()
        .map(str::trim)
        .filter(|l| !l.starts_with('#') && !l.starts_with('['))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect()
}

fn has(unit: &str, key: &str, value: &str) -> bool {
    directives(unit).iter().any(|(k, v)| k == key && v == value)
}

#[test]
fn systemd_analyze_verify_accepts_the_units_without_a_warning() {
    assert!(
        Path::new("/usr/bin/systemd-analyze").exists(),
        "systemd-analyze is missing: install the Debian package systemd"
    );
    // The units as installed, except that ExecStart names the binary this
    // test run built (verify checks that it is executable). Man pages are
    // checked on the installed package by .ci/package.
    let dir = tempfile::tempdir().unwrap();
    let service = read("systemd/dkim-sidecar.service")
        .replace("/usr/bin/dkim-sidecar", env!("CARGO_BIN_EXE_dkim-sidecar"));
    std::fs::write(dir.path().join("dkim-sidecar.service"), service).unwrap();
    std::fs::copy(
        packaging("systemd/dkim-sidecar.socket"),
        dir.path().join("dkim-sidecar.socket"),
    )
    .unwrap();
    let out = Command::new("/usr/bin/systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(dir.path().join("dkim-sidecar.service"))
        .arg(dir.path().join("dkim-sidecar.socket"))
        .output()
        .expect("run systemd-analyze");
    let said =
        String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
    // verify exits 0 on directives it ignores, so any output is a failure.
    assert!(out.status.success() && said.trim().is_empty(), "{said}");
}

#[test]
fn the_service_is_a_hardened_notify_unit_with_reload() {
    let unit = read("systemd/dkim-sidecar.service");
    for (key, value) in [
        ("Type", "notify"),
        ("ExecReload", "/bin/kill -HUP $MAINPID"),
        ("User", "dkim-sidecar"),
        ("Group", "dkim-sidecar"),
        ("RuntimeDirectory", "dkim-sidecar"),
        ("NoNewPrivileges", "yes"),
        ("ProtectSystem", "strict"),
        ("ProtectHome", "yes"),
        ("PrivateTmp", "yes"),
        ("CapabilityBoundingSet", ""),
    ] {
        assert!(has(&unit, key, value), "{key}={value} missing");
    }
    assert!(
        directives(&unit)
            .iter()
            .any(|(k, v)| k == "ExecStart" && v.starts_with("/usr/bin/dkim-sidecar run ")),
        "ExecStart runs the daemon"
    );
}

#[test]
fn the_socket_sits_in_postfix_chroot_for_group_postfix() {
    let unit = read("systemd/dkim-sidecar.socket");
    for (key, value) in [
        (
            "ListenStream",
            "/var/spool/postfix/dkim-sidecar/dkim-sidecar.sock",
        ),
        ("SocketGroup", "postfix"),
        ("SocketMode", "0660"),
        ("Service", "dkim-sidecar.service"),
    ] {
        assert!(has(&unit, key, value), "{key}={value} missing");
    }
    // Accept=yes would hand over connections, not the listening socket.
    assert!(!has(&unit, "Accept", "yes"));
}

#[test]
fn maintainer_scripts_are_valid_shell_and_keep_the_keys() {
    for script in ["debian/postinst", "debian/postrm"] {
        let path = packaging(script);
        let status = Command::new("sh").arg("-n").arg(&path).status().unwrap();
        assert!(status.success(), "{script} has a syntax error");
        let text = read(script);
        assert!(
            text.contains("#DEBHELPER#"),
            "{script}: systemd snippets go there"
        );
        assert!(!text.contains("rm -r"), "{script} must never delete keys");
    }
    let postinst = read("debian/postinst");
    assert!(
        postinst.contains("adduser --quiet --system --group"),
        "{postinst}"
    );
    assert!(
        postinst.contains("-o dkim-sidecar -g dkim-sidecar -m 0700 /etc/dkim-sidecar/keys"),
        "{postinst}"
    );
}

/// The one non-empty line of `text`, or a panic showing all of it.
fn one_line(text: &str) -> &str {
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    let [line] = lines[..] else {
        panic!("expected one line, got {}:\n{text}", lines.len());
    };
    line
}

#[test]
fn the_packaged_configuration_does_not_listen_until_a_key_is_added() {
    let packaged = packaging("dkim-sidecar.toml");
    let fix = "no signing keys are configured: add a [[key]] and a [[rule]]";
    let check = Command::new(env!("CARGO_BIN_EXE_dkim-sidecar"))
        .args(["check-config", "-c"])
        .arg(&packaged)
        .output()
        .unwrap();
    assert!(
        !check.status.success(),
        "check-config passed a file with no key"
    );
    let said = String::from_utf8_lossy(&check.stderr);
    assert!(one_line(&said).contains(fix), "{said}");

    // `run` as the unit would (root allowed here so that nothing but the
    // missing key can stop it), on a port of its own.
    let socket = testkit::MilterSocket::free_inet();
    let mut daemon = Command::new(env!("CARGO_BIN_EXE_dkim-sidecar"))
        .args([
            "run",
            "--allow-root",
            "--socket",
            &socket.opendkim_spec(),
            "-c",
        ])
        .arg(&packaged)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let exited = testkit::poll(std::time::Duration::from_secs(30), || {
        daemon.try_wait().unwrap()
    });
    let Some(status) = exited else {
        let listening = socket.accepts_connections();
        let _ = daemon.kill();
        panic!("run kept running on a configuration with no key (listening: {listening})");
    };
    let out = daemon.wait_with_output().unwrap();
    assert!(!status.success());
    assert!(!socket.accepts_connections());
    let said = String::from_utf8_lossy(&out.stderr);
    let line = one_line(&said);
    assert!(
        line.contains(fix) && line.contains("dkim-sidecar.toml"),
        "{said}"
    );
}

#[test]
fn the_readme_example_runs_and_signs() {
    // `cargo run --release -- run -c conf/dkim-sidecar.toml`, on a port of
    // its own.
    let socket = testkit::MilterSocket::free_inet();
    let testkit::MilterSocket::Inet(addr) = socket else {
        unreachable!()
    };
    let dir = tempfile::tempdir().unwrap();
    let milter = testkit::MilterProcess::start(
        "README example",
        &socket,
        &dir.path().join("readme.log"),
        |socket| {
            let mut command = Command::new(env!("CARGO_BIN_EXE_dkim-sidecar"));
            command
                .current_dir(env!("CARGO_MANIFEST_DIR"))
                .args(["run", "-c", "conf/dkim-sidecar.toml", "--socket"])
                .arg(socket.opendkim_spec());
            command
        },
    );
    testkit::conversation::signed_message(addr, std::time::Duration::from_secs(30))
        .unwrap_or_else(|e| panic!("{e}\n{}", milter.log()));
}

#[test]
fn the_documented_deb_build_strips_the_binary() {
    // The documented build names a profile with debug info (`--profile
    // dist`), and cargo-deb keeps every symbol of such a profile unless the
    // package splits them off: an unstripped .deb was 16.7 MB. So
    // [package.metadata.deb] must split them off, and the build
    // docs/operations.md gives must not turn that off.
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let manifest: toml::Table = std::fs::read_to_string(root.join("Cargo.toml"))
        .unwrap()
        .parse()
        .unwrap();
    let deb = &manifest["package"]["metadata"]["deb"];
    let splits = ["dbgsym", "separate-debug-symbols"]
        .iter()
        .any(|key| deb.get(key).and_then(toml::Value::as_bool) == Some(true));

    let operations = std::fs::read_to_string(root.join("docs/operations.md")).unwrap();
    let builds: Vec<&str> = operations
        .lines()
        .filter(|l| l.trim_start().starts_with("cargo deb"))
        .collect();
    assert!(!builds.is_empty(), "docs/operations.md gives no cargo deb");
    for build in builds {
        for undo in ["--no-strip", "--no-dbgsym", "--no-separate-debug-symbols"] {
            assert!(!build.contains(undo), "{build}");
        }
        let profile = build
            .split_whitespace()
            .skip_while(|word| *word != "--profile")
            .nth(1)
            .unwrap_or("release");
        let (debug_info, cargo_strips) = profile_debug(&manifest, profile);
        assert!(
            !debug_info || cargo_strips || splits,
            "`{build}`: [profile.{profile}] has debug info and [package.metadata.deb] \
             keeps it in the binary: set dbgsym = true"
        );
    }
}

/// Whether a Cargo profile builds debug info, and whether it strips symbols
/// itself, following `inherits` (a custom profile must name one).
fn profile_debug(manifest: &toml::Table, name: &str) -> (bool, bool) {
    let profile = manifest
        .get("profile")
        .and_then(|p| p.get(name))
        .and_then(toml::Value::as_table)
        .cloned()
        .unwrap_or_default();
    let inherited = match profile.get("inherits").and_then(toml::Value::as_str) {
        Some(parent) => profile_debug(manifest, parent),
        None => (false, false),
    };
    let debug_info = match profile.get("debug") {
        None => inherited.0,
        Some(toml::Value::Boolean(b)) => *b,
        Some(toml::Value::Integer(n)) => *n != 0,
        Some(toml::Value::String(s)) => s != "none",
        Some(other) => panic!("[profile.{name}] debug = {other}"),
    };
    let cargo_strips = match profile.get("strip") {
        None => inherited.1,
        Some(s) => s.as_bool() == Some(true) || s.as_str() == Some("symbols"),
    };
    (debug_info, cargo_strips)
}
