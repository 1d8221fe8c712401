//! A private Knot DNS (`knotd`, Debian package knot) as a secondary of a
//! [`Bind`] primary: it transfers the zone once when it starts (AXFR) and
//! is never notified, so it serves the zone as it was then. A second
//! implementation of an authoritative server, on its own loopback address
//! (knotd binds 127.0.0.2 without it being configured on an interface).
//!
//! Everything lives in the instance's own directory; `knotd` runs in the
//! foreground and is killed in `Drop`.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use tempfile::TempDir;

use crate::bind::{Bind, serves_soa};

/// A running knotd.
pub struct Knot {
    dir: TempDir,
    child: Child,
    addr: SocketAddr,
}

impl Knot {
    /// A secondary for `primary`'s zone on `listen`, the primary's port.
    pub fn secondary_of(primary: &Bind, listen: Ipv4Addr) -> Knot {
        crate::require_program("/usr/sbin/knotd", "knot");
        let dir = crate::scratch_dir("knot");
        let path = dir.path();
        let addr = SocketAddr::new(IpAddr::V4(listen), primary.addr().port());
        let conf = format!(
            "server:\n    listen: {listen}@{port}\n    rundir: {dir}\n    user: root:root\n\
             database:\n    storage: {dir}\n\
             log:\n  - target: stderr\n    any: info\n\
             remote:\n  - id: primary\n    address: {primary_ip}@{port}\n\
             template:\n  - id: default\n    storage: {dir}\n    zonefile-sync: -1\n    \
             zonefile-load: none\n    journal-content: none\n\
             zone:\n  - domain: {zone}\n    master: primary\n",
            port = addr.port(),
            dir = path.display(),
            primary_ip = primary.addr().ip(),
            zone = primary.zone(),
        );
        std::fs::write(path.join("knot.conf"), conf).unwrap();
        let log = std::fs::File::create(path.join("knot.log")).unwrap();
        let child = Command::new("/usr/sbin/knotd")
            .arg("-c")
            .arg(path.join("knot.conf"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start knotd");
        let mut knot = Knot { dir, child, addr };
        let zone = primary.zone().to_string();
        let ready = crate::poll(Duration::from_secs(20), || {
            if let Ok(Some(status)) = knot.child.try_wait() {
                panic!("knotd exited with {status}:\n{}", knot.log());
            }
            serves_soa(knot.addr, &zone).then_some(())
        });
        assert!(
            ready.is_some(),
            "knotd does not serve {zone} on {addr} after 20 s:\n{}",
            knot.log()
        );
        knot
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("knot.log")).unwrap_or_default()
    }
}

impl Drop for Knot {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if crate::show_logs() {
            eprintln!(
                "----- knotd log ({}) -----\n{}----- end of knotd log -----",
                self.addr,
                self.log()
            );
        }
    }
}
