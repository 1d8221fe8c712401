//! A real authoritative DNS server on loopback for the verification tests:
//! Knot DNS (`knotd`, Debian package `knot`) serving zones the test writes,
//! some DNSSEC-signed with `ldns-signzone` (package `ldnsutils`).
//!
//! ```text
//! DnsServer::builder()
//!     .signed_zone("test.")            // a KSK made now; trust_anchor() is its DNSKEY
//!     .zone("plain.test.")             // unsigned, delegated from test. without DS
//!     .txt("sel._domainkey.secure.test.", "v=DKIM1; p=...")
//!     .bogus_txt("sel._domainkey.bad.test.", "signed value", "served value")
//!     .line("plain.test.", "@ IN MX 10 mail")   // any zone-file line
//!     .start()
//! ```
//!
//! A signed zone's records are signed as given; a `bogus_txt` record is
//! signed with one value and served with another, so a validating resolver
//! must call it bogus. A zone whose origin is below another zone is
//! delegated from it with an NS record and no DS: provably unsigned
//! ("unprotected"). Everything lives in the server's own directory;
//! `knotd` is killed in `Drop`.

use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use tempfile::TempDir;

struct Zone {
    origin: String,
    signed: bool,
    /// Owner (absolute), type, rdata as zone-file text.
    records: Vec<(String, &'static str, String)>,
    /// Records whose signed rdata differs from the served one.
    tampered: Vec<(String, String, String)>,
    /// Zone-file lines given as they are, after `$ORIGIN` of the zone.
    lines: Vec<String>,
}

/// What [`DnsServer`] serves.
#[derive(Default)]
pub struct DnsServerBuilder {
    zones: Vec<Zone>,
    port_53: bool,
}

impl DnsServerBuilder {
    /// A zone signed with a fresh key-signing key (ECDSA P-256).
    pub fn signed_zone(mut self, origin: &str) -> Self {
        self.zones.push(Zone {
            origin: absolute(origin),
            signed: true,
            records: Vec::new(),
            tampered: Vec::new(),
            lines: Vec::new(),
        });
        self
    }

    /// An unsigned zone.
    pub fn zone(mut self, origin: &str) -> Self {
        self.zones.push(Zone {
            origin: absolute(origin),
            signed: false,
            records: Vec::new(),
            tampered: Vec::new(),
            lines: Vec::new(),
        });
        self
    }

    /// Also listen on port 53 of a loopback address of its own
    /// (`127.53.x.y`, from the random port), for programs whose resolver
    /// takes no port (the libc resolver, through [`DnsServer::resolv_conf`]).
    pub fn also_on_port_53(mut self) -> Self {
        self.port_53 = true;
        self
    }

    /// A TXT record; `value` is split into 255-byte strings.
    pub fn txt(mut self, name: &str, value: &str) -> Self {
        let name = absolute(name);
        self.zone_for(&name)
            .records
            .push((name, "TXT", txt_rdata(&[value])));
        self
    }

    /// A TXT record made of several strings, given as they are.
    pub fn txt_strings(mut self, name: &str, strings: &[&str]) -> Self {
        let name = absolute(name);
        self.zone_for(&name)
            .records
            .push((name, "TXT", txt_rdata(strings)));
        self
    }

    /// A TXT record whose signature covers `signed` but which is served as
    /// `served` (the zone must be signed).
    pub fn bogus_txt(mut self, name: &str, signed: &str, served: &str) -> Self {
        let name = absolute(name);
        let zone = self.zone_for(&name);
        assert!(zone.signed, "bogus_txt needs a signed zone for {name}");
        zone.records
            .push((name.clone(), "TXT", txt_rdata(&[signed])));
        zone.tampered
            .push((name, txt_rdata(&[signed]), txt_rdata(&[served])));
        self
    }

    /// A zone-file line, as it is (any type; relative names are in the
    /// zone), for the zone `origin` (added first).
    pub fn line(mut self, origin: &str, line: &str) -> Self {
        let origin = absolute(origin);
        self.zone_for(&origin).lines.push(line.to_string());
        self
    }

    /// The zone with the longest origin that contains `name`.
    fn zone_for(&mut self, name: &str) -> &mut Zone {
        self.zones
            .iter_mut()
            .filter(|z| name == z.origin || name.ends_with(&format!(".{}", z.origin)))
            .max_by_key(|z| z.origin.len())
            .unwrap_or_else(|| panic!("no zone holds {name}; add one first"))
    }

    /// Writes and signs the zones and starts `knotd` on a free port.
    pub fn start(self) -> DnsServer {
        super::require_program("/usr/sbin/knotd", "knot");
        super::require_program("/usr/bin/ldns-signzone", "ldnsutils");
        let dir = super::scratch_dir("dns");
        let path = dir.path();
        let mut anchors = String::new();
        let mut zone_config = String::new();
        for zone in &self.zones {
            let mut text = format!(
                "$TTL 300\n{o} IN SOA ns.{o} hostmaster.{o} 1 3600 600 86400 300\n\
                 {o} IN NS ns.{o}\nns.{o} IN A 127.0.0.1\n",
                o = zone.origin
            );
            for child in &self.zones {
                if child.origin != zone.origin
                    && child.origin.ends_with(&format!(".{}", zone.origin))
                {
                    text.push_str(&format!("{} IN NS ns.{}\n", child.origin, zone.origin));
                }
            }
            for (owner, kind, rdata) in &zone.records {
                text.push_str(&format!("{owner} IN {kind} {rdata}\n"));
            }
            if !zone.lines.is_empty() {
                text.push_str(&format!("$ORIGIN {}\n", zone.origin));
                for line in &zone.lines {
                    text.push_str(line);
                    text.push('\n');
                }
            }
            let stem = zone.origin.trim_end_matches('.');
            let file = path.join(format!("{stem}.zone"));
            write(&file, &text);
            let served = if zone.signed {
                let key = ldns_keygen(path, &zone.origin);
                anchors.push_str(&key_record(&key));
                run(Command::new("ldns-signzone")
                    .arg("-f")
                    .arg(path.join(format!("{stem}.signed")))
                    .arg(&file)
                    .arg(&key)
                    .current_dir(path));
                let signed_path = path.join(format!("{stem}.signed"));
                let mut signed = std::fs::read_to_string(&signed_path).unwrap();
                for (owner, from, to) in &zone.tampered {
                    signed = tamper(&signed, owner, from, to);
                }
                write(&signed_path, &signed);
                signed_path
            } else {
                file
            };
            zone_config.push_str(&format!(
                "  - domain: {}\n    file: \"{}\"\n",
                zone.origin,
                served.display()
            ));
        }
        let anchor_file = (!anchors.is_empty()).then(|| write(&path.join("anchors.key"), &anchors));
        let (child, addr, port_53) = super::start_on_fresh_ports("knotd", || {
            let addr = super::free_local_addr();
            let port_53 = self.port_53.then(|| {
                std::net::Ipv4Addr::new(127, 53, (addr.port() >> 8) as u8, addr.port() as u8)
            });
            let child = start_knotd(path, addr, port_53, &zone_config)?;
            Ok((child, addr, port_53))
        });
        DnsServer {
            dir,
            child,
            addr,
            anchor_file,
            port_53,
        }
    }
}

/// Starts `knotd` on `addr` (and port 53 of `port_53`) serving the zones
/// `zone_config` lists, and waits until it answers on TCP.
fn start_knotd(
    dir: &Path,
    addr: SocketAddr,
    port_53: Option<std::net::Ipv4Addr>,
    zone_config: &str,
) -> Result<Child, super::StartFailure> {
    let listen = match port_53 {
        Some(ip) => format!("[ {}@{}, {ip}@53 ]", addr.ip(), addr.port()),
        None => format!("{}@{}", addr.ip(), addr.port()),
    };
    let config = format!(
        "server:\n    listen: {listen}\n    rundir: \"{dir}\"\n    pidfile: \"{dir}/knot.pid\"\n\
         database:\n    storage: \"{dir}/db\"\n\
         control:\n    listen: \"{dir}/knot.sock\"\n\
         log:\n  - target: stderr\n    any: notice\n\
         template:\n  - id: default\n    storage: \"{dir}\"\n    zonefile-sync: -1\n    \
         zonefile-load: whole\n    journal-content: none\n    semantic-checks: off\n\
         zone:\n{zone_config}",
        dir = dir.display(),
    );
    let config_path = write(&dir.join("knot.conf"), &config);
    let log_path = dir.join("knot.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let mut child = Command::new("/usr/sbin/knotd")
        .arg("-c")
        .arg(&config_path)
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .expect("start knotd");
    let log = || std::fs::read_to_string(&log_path).unwrap_or_default();
    let up = super::poll(Duration::from_secs(10), || {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(Err(super::StartFailure::exited("knotd", status, &log())));
        }
        TcpStream::connect(addr).ok().map(|_| Ok(()))
    });
    match up {
        Some(Ok(())) => Ok(child),
        Some(Err(failure)) => Err(failure),
        None => {
            let _ = child.kill();
            let _ = child.wait();
            Err(super::StartFailure::Failed(format!(
                "knotd does not listen on {addr}:\n{}",
                log()
            )))
        }
    }
}

/// A running Knot DNS server.
pub struct DnsServer {
    dir: TempDir,
    child: Child,
    addr: SocketAddr,
    anchor_file: Option<PathBuf>,
    port_53: Option<std::net::Ipv4Addr>,
}

impl DnsServer {
    pub fn builder() -> DnsServerBuilder {
        DnsServerBuilder::default()
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `IP@PORT`: a Nameservers value both OpenDKIM (libunbound) and
    /// dkim-sidecar read.
    pub fn nameserver(&self) -> String {
        format!("{}@{}", self.addr.ip(), self.addr.port())
    }

    /// The DNSKEY records of the signed zones, as a TrustAnchorFile.
    pub fn trust_anchor_file(&self) -> &Path {
        self.anchor_file
            .as_deref()
            .expect("the server has no signed zone")
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// A resolv.conf naming this server on port 53 (built with
    /// [`DnsServerBuilder::also_on_port_53`]), for a process given its own
    /// `/etc/resolv.conf` in a mount namespace ([`private_resolv_conf`]).
    pub fn resolv_conf(&self) -> PathBuf {
        let ip = self.port_53.expect("built with also_on_port_53()");
        write(
            &self.dir.path().join("resolv.conf"),
            &format!("nameserver {ip}\noptions timeout:2 attempts:2\n"),
        )
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("knot.log")).unwrap_or_default()
    }
}

impl Drop for DnsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if super::show_logs() {
            eprintln!("----- knotd log -----\n{}----- end -----", self.log());
        }
    }
}

fn absolute(name: &str) -> String {
    let mut name = name.to_ascii_lowercase();
    if !name.ends_with('.') {
        name.push('.');
    }
    name
}

/// Zone-file TXT rdata: each string quoted, long ones split at 255 bytes.
fn txt_rdata(strings: &[&str]) -> String {
    let mut out = Vec::new();
    for s in strings {
        let bytes = s.as_bytes();
        let chunks: Vec<&[u8]> = if bytes.is_empty() {
            vec![&[][..]]
        } else {
            bytes.chunks(255).collect()
        };
        for chunk in chunks {
            let mut quoted = String::from("\"");
            for &b in chunk {
                match b {
                    b'"' | b'\\' => {
                        quoted.push('\\');
                        quoted.push(b as char);
                    }
                    0x20..=0x7e => quoted.push(b as char),
                    _ => quoted.push_str(&format!("\\{b:03}")),
                }
            }
            quoted.push('"');
            out.push(quoted);
        }
    }
    out.join(" ")
}

/// Replaces the rdata of `owner`'s TXT record in signed zone text (which
/// `ldns-signzone` writes one record per line, tab-separated).
fn tamper(signed: &str, owner: &str, from: &str, to: &str) -> String {
    let mut found = false;
    let lines: Vec<String> = signed
        .lines()
        .map(|line| {
            let fields: Vec<&str> = line.splitn(5, '\t').collect();
            if fields.len() == 5 && fields[0] == owner && fields[3] == "TXT" && fields[4] == from {
                found = true;
                format!("{}\t{}\t{}\tTXT\t{to}", fields[0], fields[1], fields[2])
            } else {
                line.to_string()
            }
        })
        .collect();
    assert!(
        found,
        "no signed TXT record {owner} {from} to tamper with in:\n{signed}"
    );
    lines.join("\n") + "\n"
}

/// `ldns-keygen -a ECDSAP256SHA256 -k ORIGIN` in `dir`; the key's path
/// without `.key` / `.private`.
fn ldns_keygen(dir: &Path, origin: &str) -> PathBuf {
    let out = run(Command::new("ldns-keygen")
        .args(["-a", "ECDSAP256SHA256", "-k", origin])
        .current_dir(dir));
    dir.join(String::from_utf8_lossy(&out.stdout).trim())
}

/// The DNSKEY line of `BASE.key`, comment dropped, with a newline.
fn key_record(base: &Path) -> String {
    let text = std::fs::read_to_string(format!("{}.key", base.display()))
        .unwrap_or_else(|e| panic!("read {}.key: {e}", base.display()));
    text.lines()
        .map(|line| line.split(';').next().unwrap_or("").trim_end())
        .filter(|line| !line.is_empty())
        .map(|line| format!("{line}\n"))
        .collect()
}

fn run(command: &mut Command) -> std::process::Output {
    let out = command
        .output()
        .unwrap_or_else(|e| panic!("{command:?}: {e}"));
    assert!(
        out.status.success(),
        "{command:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn write(path: &Path, contents: &str) -> PathBuf {
    std::fs::write(path, contents).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    path.to_path_buf()
}

/// `command` run in a mount namespace of its own where `/etc/resolv.conf`
/// is `resolv_conf` (`unshare -m`, a bind mount; the system's file is not
/// touched). Needs root.
pub fn private_resolv_conf(resolv_conf: &Path, command: &Command) -> Command {
    let mut line = format!(
        "mount --bind '{}' /etc/resolv.conf && exec '{}'",
        resolv_conf.display(),
        command.get_program().to_string_lossy()
    );
    for arg in command.get_args() {
        line.push_str(&format!(" '{}'", arg.to_string_lossy()));
    }
    let mut wrapped = Command::new("unshare");
    wrapped.args(["-m", "--propagation", "private", "sh", "-c", &line]);
    wrapped
}
