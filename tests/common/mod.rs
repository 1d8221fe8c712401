//! Helpers shared by the integration tests: running our binary and the
//! reference tools (OpenSSL, opendkim-genkey, opendkim-testkey, dkimpy,
//! dnsmasq). A missing tool fails the test with the Debian package to
//! install; nothing is skipped.

#![allow(dead_code)]

use std::fs;
use std::net::{Ipv4Addr, SocketAddr, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

pub const BIN: &str = env!("CARGO_BIN_EXE_dkim-sidecar");

/// Where tests keep files that OpenDKIM and Postfix must accept: Cargo's
/// `target/tmp`, unless a directory above it is writable by others (a
/// checkout under /tmp, say: OpenDKIM refuses keys below such a directory,
/// sticky bit or not) or closed to others (Postfix's daemons run as
/// `postfix` and open files by absolute path). Then
/// `/var/lib/dkim-sidecar-tests`, which the tests (root) create.
pub fn scratch_base() -> PathBuf {
    let target = Path::new(env!("CARGO_TARGET_TMPDIR"));
    fs::create_dir_all(target).expect("create target/tmp");
    if ancestors_are_safe(target) {
        return target.to_path_buf();
    }
    let fallback = Path::new("/var/lib/dkim-sidecar-tests");
    fs::create_dir_all(fallback).unwrap_or_else(|e| panic!("create {}: {e}", fallback.display()));
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(fallback, fs::Permissions::from_mode(0o755))
        .unwrap_or_else(|e| panic!("chmod {}: {e}", fallback.display()));
    assert!(
        ancestors_are_safe(fallback),
        "neither {} nor {} has only directories above it that others may \
         search (o+x) and not write: set CARGO_TARGET_DIR to a directory that \
         qualifies",
        target.display(),
        fallback.display()
    );
    fallback.to_path_buf()
}

/// Whether `dir` and every directory above it are searchable by others and
/// not writable by them.
fn ancestors_are_safe(dir: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    dir.ancestors().all(|ancestor| {
        fs::metadata(ancestor)
            .map(|m| {
                let mode = m.permissions().mode();
                mode & 0o001 != 0 && mode & 0o002 == 0
            })
            .unwrap_or(false)
    })
}

/// Runs `program`, failing the test if it is not installed.
pub fn run(program: &str, package: &str, args: &[&str], dir: &Path) -> Output {
    Command::new(program)
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|err| {
            panic!("{program} must be installed (Debian package {package}): {err}")
        })
}

/// Runs `program` and requires success.
pub fn run_ok(program: &str, package: &str, args: &[&str], dir: &Path) -> Output {
    let out = run(program, package, args, dir);
    assert!(
        out.status.success(),
        "{program} {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Runs our binary.
pub fn sidecar(args: &[&str], dir: &Path) -> Output {
    Command::new(BIN)
        .args(args)
        .current_dir(dir)
        .output()
        .expect("the dkim-sidecar binary is built by cargo test")
}

pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// OpenSSL's view of a private key's public half, as DER.
pub fn openssl_public_der(key: &Path) -> Vec<u8> {
    run_ok(
        "openssl",
        "openssl",
        &[
            "pkey",
            "-in",
            key.to_str().unwrap(),
            "-pubout",
            "-outform",
            "DER",
        ],
        Path::new("/"),
    )
    .stdout
}

/// The p= value OpenSSL derives for an RSA key (SubjectPublicKeyInfo, as
/// opendkim-genkey publishes it).
pub fn openssl_rsa_p(key: &Path) -> String {
    STANDARD.encode(openssl_public_der(key))
}

/// The p= value for an Ed25519 key (RFC 8463: the raw 32-byte key, which is
/// the tail of OpenSSL's SubjectPublicKeyInfo).
pub fn openssl_ed25519_p(key: &Path) -> String {
    let der = openssl_public_der(key);
    STANDARD.encode(&der[der.len() - 32..])
}

/// The Ed25519 seed in dkimpy's format (base64 of 32 bytes), from OpenSSL.
pub fn openssl_ed25519_seed(key: &Path) -> String {
    let der = run_ok(
        "openssl",
        "openssl",
        &["pkey", "-in", key.to_str().unwrap(), "-outform", "DER"],
        Path::new("/"),
    )
    .stdout;
    STANDARD.encode(&der[der.len() - 32..])
}

/// Joins the quoted strings of a zone file entry (independent of the
/// crate's own parser): what a DNS server publishes for it.
pub fn zone_strings(zone: &str) -> String {
    let mut out = String::new();
    let mut quoted = false;
    let mut escaped = false;
    for c in zone.chars() {
        match (quoted, escaped, c) {
            (true, true, c) => {
                out.push(c);
                escaped = false;
            }
            (true, false, '\\') => escaped = true,
            (_, false, '"') => quoted = !quoted,
            (true, false, c) => out.push(c),
            (false, _, ';') => break,
            _ => {}
        }
    }
    out
}

/// A dnsmasq serving TXT records on a loopback port, for the duration of a
/// test. Names under `example.com` that it does not know get NXDOMAIN.
pub struct Dnsmasq {
    child: Child,
    pub addr: SocketAddr,
}

impl Dnsmasq {
    pub fn start(records: &[(&str, &str)]) -> Dnsmasq {
        let port = free_port();
        let mut args = vec![
            "--no-daemon".to_string(),
            format!("--port={port}"),
            "--listen-address=127.0.0.1".to_string(),
            "--bind-interfaces".to_string(),
            "--no-resolv".to_string(),
            "--no-hosts".to_string(),
            "--user=root".to_string(),
            "--pid-file=".to_string(),
            "--local=/example.com/".to_string(),
        ];
        for (name, text) in records {
            // One DNS string holds at most 255 bytes: split like a zone file
            // does. dnsmasq separates strings with commas (no quoting needed
            // without a shell).
            assert!(!text.contains(','), "record text with a comma: {text}");
            let chunks: Vec<String> = text
                .as_bytes()
                .chunks(250)
                .map(|c| String::from_utf8_lossy(c).into_owned())
                .collect();
            args.push(format!("--txt-record={name},{}", chunks.join(",")));
        }
        let child = Command::new("dnsmasq")
            .args(&args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("dnsmasq must be installed (Debian package dnsmasq-base)");
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
            assert!(Instant::now() < deadline, "dnsmasq did not start on {addr}");
            std::thread::sleep(Duration::from_millis(50));
        }
        Dnsmasq { child, addr }
    }

    /// An OpenDKIM configuration whose resolver (libunbound) asks this
    /// dnsmasq, for opendkim-testkey -x.
    pub fn opendkim_config(&self, dir: &Path) -> std::path::PathBuf {
        let unbound = dir.join("unbound.conf");
        fs::write(
            &unbound,
            format!(
                "server:\n    do-not-query-localhost: no\nforward-zone:\n    name: \".\"\n    \
                 forward-addr: 127.0.0.1@{}\n",
                self.addr.port()
            ),
        )
        .unwrap();
        let conf = dir.join("opendkim-testkey.conf");
        fs::write(
            &conf,
            format!("ResolverConfiguration {}\n", unbound.display()),
        )
        .unwrap();
        conf
    }
}

impl Drop for Dnsmasq {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A port free for both UDP and TCP on 127.0.0.1 right now.
fn free_port() -> u16 {
    loop {
        let udp = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let port = udp.local_addr().unwrap().port();
        if std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, port)).is_ok() {
            return port;
        }
    }
}

/// Signs `message` with dkimpy and verifies it with dkimpy, looking the key
/// up through a dnsfunc that returns `record`. Returns dkimpy's verdict.
pub fn dkimpy_sign_and_verify(
    key_for_dkimpy: &str,
    algorithm: &str,
    selector: &str,
    domain: &str,
    record: &str,
) -> bool {
    let script = r#"
import sys, dkim
key, alg, sel, dom, record = sys.argv[1:6]
msg = (b"From: a@" + dom.encode() + b"\r\nTo: b@example.org\r\nSubject: test\r\n"
       b"Date: Mon, 1 Jan 2024 00:00:00 +0000\r\n\r\nHello.\r\n")
sig = dkim.sign(msg, sel.encode(), dom.encode(), key.encode(),
                signature_algorithm=alg.encode(),
                include_headers=[b"from", b"to", b"subject", b"date"])
def dnsfunc(name, timeout=5):
    assert name == (sel + "._domainkey." + dom + ".").encode(), name
    return record.encode()
print("PASS" if dkim.verify(sig + msg, dnsfunc=dnsfunc) else "FAIL")
"#;
    let out = run_ok(
        "/usr/bin/python3",
        "python3-dkim python3-nacl",
        &[
            "-c",
            script,
            key_for_dkimpy,
            algorithm,
            selector,
            domain,
            record,
        ],
        Path::new("/"),
    );
    match stdout(&out).trim() {
        "PASS" => true,
        "FAIL" => false,
        other => panic!("unexpected dkimpy output: {other}"),
    }
}
