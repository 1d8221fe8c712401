//! dnsmasq serving TXT records on a loopback port, and the zone-file
//! reading a DNS server applies to a record, for testkey's tests.

use std::fs;
use std::io::{Read as _, Seek as _, SeekFrom};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

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
        let mut txt_records = Vec::new();
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
            txt_records.push(format!("--txt-record={name},{}", chunks.join(",")));
        }
        crate::start_on_fresh_ports("dnsmasq", || {
            Dnsmasq::start_on(crate::free_local_addr().port(), &txt_records)
        })
    }

    fn start_on(port: u16, txt_records: &[String]) -> Result<Dnsmasq, crate::StartFailure> {
        // Its start-up errors, to tell a taken port from other failures.
        let mut stderr = tempfile::tempfile().expect("a temporary file");
        let mut child = Command::new("dnsmasq")
            .args([
                "--no-daemon".to_string(),
                format!("--port={port}"),
                "--listen-address=127.0.0.1".to_string(),
                "--bind-interfaces".to_string(),
                "--no-resolv".to_string(),
                "--no-hosts".to_string(),
                "--user=root".to_string(),
                "--pid-file=".to_string(),
                "--local=/example.com/".to_string(),
            ])
            .args(txt_records)
            .stdout(Stdio::null())
            .stderr(stderr.try_clone().expect("a second handle"))
            .spawn()
            .expect("dnsmasq must be installed (Debian package dnsmasq-base)");
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
            if let Ok(Some(status)) = child.try_wait() {
                let mut said = String::new();
                stderr.seek(SeekFrom::Start(0)).unwrap();
                stderr.read_to_string(&mut said).unwrap();
                return Err(crate::StartFailure::exited("dnsmasq", status, &said));
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                return Err(crate::StartFailure::Failed(format!(
                    "dnsmasq did not start on {addr}"
                )));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(Dnsmasq { child, addr })
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
