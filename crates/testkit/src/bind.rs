//! A private BIND 9 (`named`, Debian package bind9) on loopback, primary
//! for one test zone, with a TSIG key allowed to update the TXT records
//! under `_domainkey` (RFC 2136; the `update-policy` grant that
//! docs/operations.md shows). Its secondaries, when a test wants them, are
//! Knot DNS ([`crate::knot`]): named only listens on addresses configured
//! on an interface, and the tests must not add any, while knotd binds any
//! loopback address.
//!
//! ```text
//! let bind = Bind::primary("example.com").record("default._domainkey IN TXT \"v=DKIM1; ...\"").start();
//! bind.update_key()        // the BIND key file tsig-keygen wrote, allowed to update the zone
//! bind.txt("default._domainkey.example.com")   // what it serves, asked with dig
//! ```
//!
//! Everything lives in the instance's own directory (configuration, zone,
//! journal, keys, log); `named -g` runs in the foreground and is killed in
//! `Drop`. It listens on 127.0.0.1 on a free port, never on port 53, and
//! never reads /etc/bind (named reads its built-in trust anchors from
//! /etc/bind/bind.keys, and writes nothing there). The zone's NS names
//! resolve to loopback addresses, so a client that asks "the zone's
//! authoritative servers" on the test port reaches them.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use tempfile::TempDir;

/// The name of the key the zone accepts updates of `_domainkey` TXT from.
pub const UPDATE_KEY: &str = "rotate-key";
/// A key the server knows but does not let update the zone.
pub const OTHER_KEY: &str = "other-key";

/// How to build a [`Bind`].
#[derive(Debug, Clone)]
pub struct BindBuilder {
    zone: String,
    records: Vec<String>,
    /// NS host name and address, in order; the first is this instance.
    name_servers: Vec<(String, Ipv4Addr)>,
}

/// A running named.
pub struct Bind {
    dir: TempDir,
    child: Child,
    addr: SocketAddr,
    zone: String,
}

const LISTEN: Ipv4Addr = Ipv4Addr::LOCALHOST;

impl Bind {
    /// A primary for `zone` on 127.0.0.1, NS `ns1.ZONE` -> 127.0.0.1.
    pub fn primary(zone: &str) -> BindBuilder {
        BindBuilder {
            zone: zone.to_string(),
            records: Vec::new(),
            name_servers: vec![(format!("ns1.{zone}"), LISTEN)],
        }
    }

    pub fn zone(&self) -> &str {
        &self.zone
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The BIND key file (tsig-keygen's) of the key allowed to update.
    pub fn update_key(&self) -> PathBuf {
        self.dir.path().join(format!("{UPDATE_KEY}.key"))
    }

    /// A key file of a key the server knows but does not allow to update.
    pub fn other_key(&self) -> PathBuf {
        self.dir.path().join(format!("{OTHER_KEY}.key"))
    }

    /// The TXT record at `name` as this server serves it (strings joined),
    /// asked with dig (bind9-dnsutils), not with the code under test.
    pub fn txt(&self, name: &str) -> Option<String> {
        let out = Command::new("dig")
            .args(["+short", "+norecurse", "+tries=2", "+time=2", "-p"])
            .arg(self.addr.port().to_string())
            .arg(format!("@{}", self.addr.ip()))
            .arg(name)
            .arg("TXT")
            .output()
            .expect("dig must be installed (Debian package bind9-dnsutils)");
        assert!(out.status.success(), "dig failed: {out:?}");
        let text = String::from_utf8_lossy(&out.stdout);
        let line = text.lines().next()?;
        Some(crate::dnsmasq::zone_strings(line))
    }

    /// What named logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("named.log")).unwrap_or_default()
    }
}

impl BindBuilder {
    /// A line of the zone file (relative names are in the zone).
    pub fn record(mut self, line: &str) -> Self {
        self.records.push(line.to_string());
        self
    }

    /// Another NS of the zone at `addr` (a secondary the test starts). The
    /// primary sends no NOTIFY and the zone's refresh is an hour: a
    /// secondary has what it transferred when it started.
    pub fn name_server(mut self, host: &str, addr: Ipv4Addr) -> Self {
        self.name_servers.push((host.to_string(), addr));
        self
    }

    pub fn start(self) -> Bind {
        crate::require_program("/usr/sbin/named", "bind9");
        crate::require_program("/usr/sbin/tsig-keygen", "bind9");
        let dir = crate::scratch_dir("bind");
        let path = dir.path();
        // Free on every NS address: secondaries listen on the same port.
        let mut addresses = vec![LISTEN];
        addresses.extend(self.name_servers.iter().map(|(_, a)| *a));
        let port = free_port(&addresses);
        for name in [UPDATE_KEY, OTHER_KEY] {
            let out = Command::new("/usr/sbin/tsig-keygen")
                .args(["-a", "hmac-sha256", name])
                .output()
                .expect("run tsig-keygen");
            assert!(out.status.success(), "tsig-keygen: {out:?}");
            std::fs::write(path.join(format!("{name}.key")), &out.stdout).unwrap();
        }
        let zone = &self.zone;
        let mut zone_file =
            format!("$TTL 60\n@ IN SOA ns1.{zone}. hostmaster.{zone}. 1 3600 600 86400 60\n");
        for (host, addr) in &self.name_servers {
            zone_file.push_str(&format!("@ IN NS {host}.\n{host}. IN A {addr}\n"));
        }
        for line in &self.records {
            zone_file.push_str(line);
            zone_file.push('\n');
        }
        std::fs::write(path.join("zone.db"), zone_file).unwrap();
        let zone_clause = format!(
            "zone \"{zone}\" {{\n  type primary;\n  file \"{}/zone.db\";\n  \
             update-policy {{ grant {UPDATE_KEY} subdomain _domainkey.{zone}. TXT; }};\n  \
             allow-transfer {{ any; }};\n  \
             notify no;\n}};\n",
            path.display(),
        );
        let conf = format!(
            "include \"{dir}/{UPDATE_KEY}.key\";\ninclude \"{dir}/{OTHER_KEY}.key\";\n\
             options {{\n  directory \"{dir}\";\n  listen-on port {port} {{ {listen}; }};\n  \
             listen-on-v6 {{ none; }};\n  pid-file \"{dir}/named.pid\";\n  \
             session-keyfile \"{dir}/session.key\";\n  managed-keys-directory \"{dir}\";\n  \
             recursion no;\n  dnssec-validation no;\n}};\ncontrols {{ }};\n{zone_clause}",
            dir = path.display(),
            listen = LISTEN,
        );
        std::fs::write(path.join("named.conf"), conf).unwrap();
        let log = std::fs::File::create(path.join("named.log")).unwrap();
        let child = Command::new("/usr/sbin/named")
            .args(["-g", "-n", "1", "-c"])
            .arg(path.join("named.conf"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start named");
        let mut bind = Bind {
            dir,
            child,
            addr: SocketAddr::new(IpAddr::V4(LISTEN), port),
            zone: self.zone.clone(),
        };
        bind.wait_until_serving();
        bind
    }
}

impl Bind {
    /// Until named answers for the zone.
    fn wait_until_serving(&mut self) {
        let ready = crate::poll(Duration::from_secs(20), || {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("named exited with {status}:\n{}", self.log());
            }
            TcpStream::connect_timeout(&self.addr, Duration::from_millis(200)).ok()?;
            serves_soa(self.addr, &self.zone).then_some(())
        });
        assert!(
            ready.is_some(),
            "named does not serve {} on {} after 20 s:\n{}",
            self.zone,
            self.addr,
            self.log()
        );
    }
}

impl Drop for Bind {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if crate::show_logs() {
            eprintln!(
                "----- named log ({}) -----\n{}----- end of named log -----",
                self.addr,
                self.log()
            );
        }
    }
}

/// Whether the server at `addr` answers the SOA of `zone` (asked with dig).
pub fn serves_soa(addr: SocketAddr, zone: &str) -> bool {
    Command::new("dig")
        .args(["+short", "+norecurse", "+tries=1", "+time=1", "-p"])
        .arg(addr.port().to_string())
        .arg(format!("@{}", addr.ip()))
        .arg(format!("{zone}."))
        .arg("SOA")
        .output()
        .is_ok_and(|out| !out.stdout.is_empty())
}

/// A port free for UDP and TCP on every address in `addresses` right now.
/// Not [`crate::free_local_addr`]: the port must be free on several
/// loopback addresses at once (a primary and its secondaries share it),
/// and it is taken below Linux's ephemeral range (32768 and up), so that
/// no socket bound to port 0 elsewhere in the test run gets it between
/// this check and named's bind.
pub fn free_port(addresses: &[Ipv4Addr]) -> u16 {
    use std::hash::{BuildHasher as _, Hasher as _};
    let mut seed = std::collections::hash_map::RandomState::new().build_hasher();
    seed.write_u32(std::process::id());
    let mut next = seed.finish();
    loop {
        next = next
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        let port = 20_000 + u16::try_from((next >> 33) % 12_000).unwrap();
        let free = addresses
            .iter()
            .all(|a| UdpSocket::bind((*a, port)).is_ok() && TcpListener::bind((*a, port)).is_ok());
        if free {
            return port;
        }
    }
}
