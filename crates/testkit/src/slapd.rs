//! A private OpenLDAP server on loopback: Debian's `slapd` with a
//! `slapd.conf` and an MDB database in the test's scratch directory,
//! listening on a loopback TCP port (plain, StartTLS offered), on a second
//! one for `ldaps://`, and on an `ldapi://` socket in that directory,
//! stopped in `Drop`. No system service is started or touched. Its TLS
//! certificate (for 127.0.0.1) comes from a CA made for the instance
//! ([`Slapd::ca_file`]), which no system store trusts.
//!
//! The directory holds `dc=example,dc=com` with the OpenDKIM schema's
//! attribute names (`DKIMDomain`, `DKIMSelector`, `DKIMKey`, as in
//! OpenDKIM's contrib/ldap). Only [`Slapd::READER`] may read it: with a
//! simple bind and [`Slapd::PASSWORD`], or with SASL EXTERNAL over the
//! socket as root (which slapd maps to that DN). Anonymous clients may
//! only bind. Entries are loaded with `slapadd` before the server starts
//! ([`Slapd::start`] takes the LDIF).

use std::fs;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::{Duration, Instant};

use tempfile::TempDir;

use crate::processes::{self, Signal};

/// The schema: OpenDKIM's attribute names (and OIDs) in one auxiliary
/// class whose attributes are all optional, so a test can leave one out.
const SCHEMA: &str = "\
attributetype ( 1.3.6.1.4.1.29426.2.2.1.1 NAME 'DKIMSelector'
  EQUALITY caseExactIA5Match SYNTAX 1.3.6.1.4.1.1466.115.121.1.26 SINGLE-VALUE )
attributetype ( 1.3.6.1.4.1.29426.2.2.1.2 NAME 'DKIMKey'
  EQUALITY caseExactIA5Match SYNTAX 1.3.6.1.4.1.1466.115.121.1.26 SINGLE-VALUE )
attributetype ( 1.3.6.1.4.1.29426.2.2.1.3 NAME 'DKIMIdentity'
  EQUALITY caseExactIA5Match SYNTAX 1.3.6.1.4.1.1466.115.121.1.26 SINGLE-VALUE )
attributetype ( 1.3.6.1.4.1.29426.2.2.1.4 NAME 'DKIMDomain'
  EQUALITY caseExactIA5Match SYNTAX 1.3.6.1.4.1.1466.115.121.1.26 SINGLE-VALUE )
objectclass ( 1.3.6.1.4.1.29426.2.2.2.1 NAME 'DKIM' AUXILIARY SUP top
  MAY ( DKIMIdentity $ DKIMDomain $ DKIMSelector $ DKIMKey ) )
";

static SHARED: Mutex<Weak<Slapd>> = Mutex::new(Weak::new());

/// A running private slapd.
pub struct Slapd {
    dir: TempDir,
    child: Option<Child>,
    port: u16,
    tls_port: u16,
}

impl Slapd {
    pub const SUFFIX: &'static str = "dc=example,dc=com";
    /// The DN that may read, and its password (tests check the password
    /// never shows).
    pub const READER: &'static str = "cn=reader,dc=example,dc=com";
    pub const PASSWORD: &'static str = "ldap-Secret-4711";

    /// The server the running tests of a binary share, started with
    /// `ldif()` if none is (every test of the binary passes the same).
    pub fn shared(ldif: impl FnOnce() -> String) -> Arc<Slapd> {
        let mut shared = SHARED.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(slapd) = shared.upgrade() {
            return slapd;
        }
        let slapd = Arc::new(Slapd::start(&ldif()));
        *shared = Arc::downgrade(&slapd);
        slapd
    }

    /// Writes the configuration, loads `ldif` (entries under
    /// [`Self::SUFFIX`]; the suffix entry and the reader are added here)
    /// and starts; returns once a search answers.
    pub fn start(ldif: &str) -> Slapd {
        let dir = crate::scratch_dir("slapd");
        let path = dir.path();
        fs::create_dir(path.join("db")).unwrap();
        fs::write(path.join("dkim.schema"), SCHEMA).unwrap();
        make_certificates(path);
        let config = format!(
            "include /etc/ldap/schema/core.schema\n\
             include /etc/ldap/schema/cosine.schema\n\
             include /etc/ldap/schema/inetorgperson.schema\n\
             include {dir}/dkim.schema\n\
             modulepath /usr/lib/ldap\n\
             moduleload back_mdb\n\
             pidfile {dir}/slapd.pid\n\
             TLSCACertificateFile {dir}/ca.pem\n\
             TLSCertificateFile {dir}/server.pem\n\
             TLSCertificateKeyFile {dir}/server.key\n\
             authz-regexp \"gidNumber=0.uidNumber=0,cn=peercred,cn=external,cn=auth\" \"{reader}\"\n\
             database mdb\n\
             maxsize 268435456\n\
             suffix \"{suffix}\"\n\
             rootdn \"cn=admin,{suffix}\"\n\
             directory {dir}/db\n\
             access to attrs=userPassword by anonymous auth by * none\n\
             access to * by dn.exact=\"{reader}\" read by * none\n",
            dir = path.display(),
            reader = Self::READER,
            suffix = Self::SUFFIX,
        );
        fs::write(path.join("slapd.conf"), config).unwrap();
        let all = format!(
            "dn: {suffix}\nobjectClass: dcObject\nobjectClass: organization\ndc: example\no: Example\n\n\
             dn: {reader}\nobjectClass: person\ncn: reader\nsn: reader\nuserPassword: {password}\n\n\
             {ldif}",
            suffix = Self::SUFFIX,
            reader = Self::READER,
            password = Self::PASSWORD,
        );
        fs::write(path.join("data.ldif"), all).unwrap();
        let out = Command::new("slapadd")
            .arg("-f")
            .arg(path.join("slapd.conf"))
            .arg("-l")
            .arg(path.join("data.ldif"))
            .output()
            .expect("run slapadd (install Debian's slapd)");
        assert!(
            out.status.success(),
            "slapadd failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let mut slapd = Slapd {
            dir,
            child: None,
            port: 0,
            tls_port: 0,
        };
        crate::start_on_fresh_ports("slapd", || {
            slapd.port = crate::free_local_addr().port();
            slapd.tls_port = crate::free_local_addr().port();
            slapd.try_run()
        });
        slapd
    }

    /// Starts the server on its port and waits until it answers.
    fn try_run(&mut self) -> Result<(), crate::StartFailure> {
        let log = fs::File::create(self.dir.path().join("slapd.log")).unwrap();
        let child = Command::new("slapd")
            .arg("-f")
            .arg(self.dir.path().join("slapd.conf"))
            .arg("-h")
            .arg(format!(
                "ldap://127.0.0.1:{}/ {}/ {}",
                self.port,
                self.ldaps_url(),
                self.ldapi_url()
            ))
            // In the foreground, logging connections and operations.
            .args(["-d", "stats"])
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start slapd");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if TcpStream::connect(self.addr()).is_ok() && self.search_works() {
                return Ok(());
            }
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                self.child = None;
                return Err(crate::StartFailure::exited("slapd", status, &self.log()));
            }
            assert!(
                Instant::now() < deadline,
                "slapd did not start: {}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn search_works(&self) -> bool {
        Command::new("ldapsearch")
            .args([
                "-x",
                "-H",
                &self.url(),
                "-D",
                Self::READER,
                "-w",
                Self::PASSWORD,
            ])
            .args(["-b", Self::SUFFIX, "-s", "base", "dn"])
            .env("LDAPNOINIT", "1")
            .output()
            .is_ok_and(|o| o.status.success())
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// `ldap://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("ldap://127.0.0.1:{}", self.port)
    }

    /// `ldaps://127.0.0.1:PORT`: TLS from the first byte.
    pub fn ldaps_url(&self) -> String {
        format!("ldaps://127.0.0.1:{}", self.tls_port)
    }

    /// The PEM certificate of the CA that signed the server's certificate.
    pub fn ca_file(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    fn socket(&self) -> PathBuf {
        self.dir.path().join("ldapi")
    }

    /// `ldapi://` with the socket's path percent-encoded.
    pub fn ldapi_url(&self) -> String {
        format!(
            "ldapi://{}",
            self.socket().display().to_string().replace('/', "%2F")
        )
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join("slapd.log")).unwrap_or_default()
    }

    /// Stops the server (SIGINT, slapd's clean shutdown); the database
    /// stays for [`Self::restart`].
    pub fn stop(&mut self) {
        if let Some(child) = self.child.take() {
            processes::stop(child, Signal::SIGINT, Duration::from_secs(20));
        }
    }

    /// Starts the stopped server again, same port, socket and data.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "slapd is running");
        let _ = fs::remove_file(self.socket());
        self.try_run().unwrap_or_else(|failure| panic!("{failure}"));
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

/// A CA (`ca.pem`) and a server certificate for 127.0.0.1 and localhost
/// signed by it (`server.pem`, `server.key`), P-256, valid for two days,
/// written into `dir` with the openssl command.
fn make_certificates(dir: &Path) {
    let openssl = |args: &[&str]| {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("run openssl");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
    ];
    openssl(
        &[
            &[
                "req",
                "-x509",
                "-days",
                "2",
                "-subj",
                "/CN=dkim-sidecar test LDAP CA",
            ][..],
            &ec,
            &["-keyout", "ca.key", "-out", "ca.pem"],
            &["-addext", "basicConstraints=critical,CA:TRUE"],
            &["-addext", "keyUsage=critical,keyCertSign,cRLSign"],
        ]
        .concat(),
    );
    openssl(
        &[
            &["req", "-subj", "/CN=127.0.0.1"][..],
            &ec,
            &["-keyout", "server.key", "-out", "server.csr"],
        ]
        .concat(),
    );
    fs::write(
        dir.join("server.ext"),
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n\
         keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    openssl(&[
        "x509",
        "-req",
        "-days",
        "2",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-extfile",
        "server.ext",
        "-out",
        "server.pem",
    ]);
}

impl Drop for Slapd {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("--- slapd log ---\n{}", self.log());
        }
        self.stop();
    }
}
