//! SMTP AUTH for a test Postfix through Cyrus SASL, with no daemon and no
//! system file: smtpd loads libsasl2, which reads `smtpd.conf` from the
//! instance's `CONFIG/sasl/` and checks passwords against a sasldb file
//! next to it (written by `saslpasswd2` from Debian's sasl2-bin).
//!
//! Debian's Postfix looks for `smtpd.conf` in `$config_directory/sasl`
//! whatever `cyrus_sasl_config_path` says, so the files go there and the
//! parameter is set to the same directory for upstream builds.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// A user smtpd accepts with AUTH PLAIN or LOGIN.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SaslUser {
    /// `user@realm`, the name the client authenticates as.
    pub name: String,
    pub password: String,
}

/// Writes `config_dir/sasl/{smtpd.conf,sasldb2}` for `users` and returns
/// the main.cf lines that select it. SASL stays off until a service says
/// `-o smtpd_sasl_auth_enable=yes`.
pub fn configure(config_dir: &Path, users: &[SaslUser]) -> Vec<String> {
    let sasl_dir = config_dir.join("sasl");
    std::fs::create_dir_all(&sasl_dir).expect("create the sasl directory");
    let sasldb = sasl_dir.join("sasldb2");
    for user in users {
        add_user(&sasldb, user);
    }
    // smtpd runs as `postfix` and opens the database itself.
    super::set_mode(&sasldb, 0o644);
    let smtpd_conf = format!(
        "pwcheck_method: auxprop\nauxprop_plugin: sasldb\nmech_list: PLAIN LOGIN\nsasldb_path: {}\n",
        sasldb.display()
    );
    std::fs::write(sasl_dir.join("smtpd.conf"), smtpd_conf).expect("write smtpd.conf");
    vec![
        "smtpd_sasl_type = cyrus".to_string(),
        "smtpd_sasl_path = smtpd".to_string(),
        format!("cyrus_sasl_config_path = {}", sasl_dir.display()),
    ]
}

fn add_user(sasldb: &PathBuf, user: &SaslUser) {
    let (login, realm) = user
        .name
        .split_once('@')
        .unwrap_or_else(|| panic!("SASL user {:?} needs a realm: user@realm", user.name));
    let mut saslpasswd = Command::new("/usr/sbin/saslpasswd2")
        .args(["-p", "-c", "-f"])
        .arg(sasldb)
        .args(["-u", realm, login])
        .stdin(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("run saslpasswd2 (package sasl2-bin): {e}"));
    saslpasswd
        .stdin
        .take()
        .unwrap()
        .write_all(user.password.as_bytes())
        .unwrap();
    let status = saslpasswd.wait().unwrap();
    assert!(
        status.success(),
        "saslpasswd2 for {} failed: {status}",
        user.name
    );
}
