//! Where the milter listens: socket specifications and binding them.
//!
//! [`SocketSpec`] reads OpenDKIM's syntax (`inet:PORT@HOST`,
//! `inet6:PORT@[HOST]`, `local:/path`, `unix:/path`, a bare path) and
//! Postfix's (`inet:HOST:PORT`), so either side's configuration can be
//! pasted in. [`bind`] opens the sockets: a Unix socket gets its mode and
//! owner before `listen()`, so no client can connect through a window with
//! the wrong permissions, and an old socket file is removed only when
//! nothing listens on it. This module never accepts connections.

use std::fmt;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, ToSocketAddrs};
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use socket2::{Domain, SockAddr, Socket, Type};

/// A listening address, as written in a configuration file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SocketSpec {
    /// A TCP port; `host` is a name or address to resolve, `None` for all
    /// interfaces of the family.
    Inet {
        /// Which addresses `host` may stand for: `inet:` any, `inet6:`
        /// IPv6 only.
        family: InetFamily,
        /// The host as written, without brackets; `None` when the
        /// specification gives none or `*`.
        host: Option<String>,
        /// The TCP port, 1 to 65535.
        port: u16,
    },
    /// A Unix-domain socket at this path.
    Unix(PathBuf),
}

/// The address family an `inet` socket specification asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InetFamily {
    /// `inet:`: IPv4, or whatever the host name resolves to.
    Any,
    /// `inet6:`: IPv6 only.
    V6,
}

/// A socket specification that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid socket \"{spec}\": {problem}; use inet:PORT@HOST, inet:HOST:PORT, inet6:PORT@[HOST], local:/path or unix:/path"
)]
pub struct SocketSpecError {
    /// The specification as given.
    pub spec: String,
    /// What is wrong with it ("unknown socket type", ...).
    pub problem: &'static str,
}

impl FromStr for SocketSpec {
    type Err = SocketSpecError;

    fn from_str(spec: &str) -> Result<Self, Self::Err> {
        let err = |problem| SocketSpecError {
            spec: spec.to_string(),
            problem,
        };
        let trimmed = spec.trim();
        if trimmed.starts_with('/') {
            return Ok(SocketSpec::Unix(PathBuf::from(trimmed)));
        }
        let (kind, rest) = trimmed
            .split_once(':')
            .ok_or_else(|| err("no type prefix"))?;
        match kind.to_ascii_lowercase().as_str() {
            "local" | "unix" => {
                if !rest.starts_with('/') {
                    return Err(err("a Unix socket path must be absolute"));
                }
                Ok(SocketSpec::Unix(PathBuf::from(rest)))
            }
            "inet" | "inet6" => {
                let family = if kind.eq_ignore_ascii_case("inet6") {
                    InetFamily::V6
                } else {
                    InetFamily::Any
                };
                let (port, host) = if let Some((port, host)) = rest.split_once('@') {
                    // OpenDKIM / libmilter: PORT@HOST
                    (port, Some(host))
                } else if family == InetFamily::Any && rest.contains(':') {
                    // Postfix: HOST:PORT
                    let (host, port) = rest.rsplit_once(':').expect("contains ':'");
                    (port, Some(host))
                } else {
                    (rest, None)
                };
                let port: u16 = port
                    .parse()
                    .ok()
                    .filter(|p| *p != 0)
                    .ok_or_else(|| err("the port must be a number from 1 to 65535"))?;
                let host = match host.map(|h| h.trim_start_matches('[').trim_end_matches(']')) {
                    None => None,
                    Some("") => return Err(err("empty host")),
                    Some("*") => None,
                    Some(h) => Some(h.to_string()),
                };
                Ok(SocketSpec::Inet { family, host, port })
            }
            _ => Err(err("unknown socket type")),
        }
    }
}

impl fmt::Display for SocketSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SocketSpec::Unix(path) => write!(f, "local:{}", path.display()),
            SocketSpec::Inet { family, host, port } => {
                let kind = match family {
                    InetFamily::Any => "inet",
                    InetFamily::V6 => "inet6",
                };
                match host {
                    Some(h) if h.contains(':') => write!(f, "{kind}:{port}@[{h}]"),
                    Some(h) => write!(f, "{kind}:{port}@{h}"),
                    None => write!(f, "{kind}:{port}"),
                }
            }
        }
    }
}

/// Ownership and mode of a Unix socket. `None` keeps what the process
/// umask and identity give.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UnixSocketAccess {
    /// Permission bits of the socket file (`0o660`), in force before it
    /// listens; `None` keeps what the umask gives.
    pub mode: Option<u32>,
    /// The user name to own the socket file; `None` keeps the process's
    /// user.
    pub user: Option<String>,
    /// The group name to own the socket file; `None` keeps the process's
    /// group.
    pub group: Option<String>,
}

/// Why a listening socket could not be opened. Specifications appear as
/// [`SocketSpec`] displays them.
#[derive(Debug, thiserror::Error)]
pub enum BindError {
    /// The host of a TCP specification did not resolve.
    #[error("cannot resolve the host of {spec}: {source}")]
    Resolve {
        /// The specification.
        spec: String,
        /// The resolver's error.
        source: io::Error,
    },
    /// The host resolved, but to no address of the family asked for (an
    /// `inet6:` specification naming an IPv4-only host).
    #[error("{spec} resolves to no address of the requested family")]
    NoAddress {
        /// The specification.
        spec: String,
    },
    /// A TCP address is already in use.
    #[error(
        "cannot listen on {spec}: address already in use (is another milter still running on it?)"
    )]
    InUse {
        /// The specification.
        spec: String,
    },
    /// Creating, binding, preparing or listening on a socket failed
    /// otherwise.
    #[error("cannot listen on {spec}: {source}")]
    Io {
        /// The specification (`local:/path` for a Unix socket).
        spec: String,
        /// The system's error.
        source: io::Error,
    },
    /// Another process is listening on the Unix socket path.
    #[error(
        "cannot listen on {path}: another process is listening on it; stop it or choose another path"
    )]
    UnixInUse {
        /// The socket path.
        path: PathBuf,
    },
    /// The path exists and is not a socket; it is left alone.
    #[error(
        "cannot listen on {path}: it exists and is not a socket; remove it or choose another path"
    )]
    NotASocket {
        /// The path.
        path: PathBuf,
    },
    /// The directory the Unix socket should go in does not exist.
    #[error(
        "cannot create socket {path}: directory {dir} does not exist; create it (mkdir -p {dir})"
    )]
    NoDirectory {
        /// The socket path.
        path: PathBuf,
        /// The missing directory, as text.
        dir: String,
    },
    /// A socket systemd passed (socket activation) cannot be used: it is
    /// not a stream socket, not listening, or neither TCP nor Unix.
    #[error("socket {name} (fd {fd}) passed by systemd cannot be used: {problem}")]
    Inherited {
        /// Its file descriptor.
        fd: i32,
        /// Its `FileDescriptorName=`.
        name: String,
        /// What is wrong with it, and what to change in the `.socket`
        /// unit.
        problem: String,
    },
    /// The user or group named in [`UnixSocketAccess`] does not exist.
    #[error("cannot set owner of {path}: no such {what} \"{name}\"")]
    NoSuchOwner {
        /// The socket path.
        path: PathBuf,
        /// `"user"` or `"group"`.
        what: &'static str,
        /// The name looked up.
        name: String,
    },
}

/// An open, listening socket.
#[derive(Debug)]
pub enum Listener {
    /// A TCP socket.
    Tcp(tokio::net::TcpListener),
    /// A Unix-domain socket.
    Unix {
        /// The socket.
        listener: tokio::net::UnixListener,
        /// Its path; for an unnamed socket passed by systemd, a
        /// description instead.
        path: PathBuf,
        /// Device and inode of the socket file we created, so shutdown
        /// removes it only if it is still ours; `None` for a socket
        /// systemd created and passed to us, which is never removed.
        identity: Option<(u64, u64)>,
    },
}

impl Listener {
    /// Where this listener listens, in socket-spec form (`inet:PORT@IP`,
    /// `unix:/path`), for logs.
    pub fn spec(&self) -> String {
        match self {
            Listener::Tcp(l) => match l.local_addr() {
                Ok(SocketAddr::V6(a)) => format!("inet6:{}@[{}]", a.port(), a.ip()),
                Ok(a) => format!("inet:{}@{}", a.port(), a.ip()),
                Err(_) => "inet:?".to_string(),
            },
            Listener::Unix { path, .. } => format!("local:{}", path.display()),
        }
    }

    /// Remove the socket file, if it is still the one we created.
    pub fn remove_socket_file(&self) {
        if let Listener::Unix {
            path,
            identity: Some(identity),
            ..
        } = self
            && let Ok(meta) = std::fs::symlink_metadata(path)
            && (meta.dev(), meta.ino()) == *identity
        {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// Open every listener a specification names. A TCP host that resolves to
/// several addresses (`localhost`: 127.0.0.1 and ::1) gets one listener per
/// address; addresses the machine cannot bind (no IPv6) are skipped as long
/// as one works. Must be called inside a tokio runtime.
pub fn bind(
    spec: &SocketSpec,
    access: &UnixSocketAccess,
    backlog: i32,
) -> Result<Vec<Listener>, BindError> {
    match spec {
        SocketSpec::Unix(path) => bind_unix(path, access, backlog).map(|l| vec![l]),
        SocketSpec::Inet { family, host, port } => {
            let addrs = resolve(spec, *family, host.as_deref(), *port)?;
            let mut listeners = Vec::new();
            let mut last_error = None;
            for addr in &addrs {
                match bind_tcp(*addr, backlog) {
                    Ok(l) => listeners.push(Listener::Tcp(l)),
                    Err(e) if e.kind() == io::ErrorKind::AddrInUse => {
                        return Err(BindError::InUse {
                            spec: spec.to_string(),
                        });
                    }
                    Err(e) => last_error = Some(e),
                }
            }
            match (listeners.is_empty(), last_error) {
                (true, Some(source)) => Err(BindError::Io {
                    spec: spec.to_string(),
                    source,
                }),
                _ => Ok(listeners),
            }
        }
    }
}

fn resolve(
    spec: &SocketSpec,
    family: InetFamily,
    host: Option<&str>,
    port: u16,
) -> Result<Vec<SocketAddr>, BindError> {
    let mut addrs: Vec<SocketAddr> = match host {
        None => vec![SocketAddr::new(
            match family {
                InetFamily::Any => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
                InetFamily::V6 => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
            },
            port,
        )],
        Some(host) => (host, port)
            .to_socket_addrs()
            .map_err(|source| BindError::Resolve {
                spec: spec.to_string(),
                source,
            })?
            .collect(),
    };
    if family == InetFamily::V6 {
        addrs.retain(SocketAddr::is_ipv6);
    }
    let mut seen = Vec::new();
    addrs.retain(|a| {
        let new = !seen.contains(a);
        seen.push(*a);
        new
    });
    if addrs.is_empty() {
        return Err(BindError::NoAddress {
            spec: spec.to_string(),
        });
    }
    Ok(addrs)
}

fn bind_tcp(addr: SocketAddr, backlog: i32) -> io::Result<tokio::net::TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    socket.set_reuse_address(true)?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    socket.bind(&addr.into())?;
    socket.listen(backlog)?;
    socket.set_nonblocking(true)?;
    tokio::net::TcpListener::from_std(socket.into())
}

fn bind_unix(path: &Path, access: &UnixSocketAccess, backlog: i32) -> Result<Listener, BindError> {
    let io_err = |source| BindError::Io {
        spec: format!("local:{}", path.display()),
        source,
    };
    match std::fs::symlink_metadata(path) {
        Ok(meta) if !meta.file_type().is_socket() => {
            return Err(BindError::NotASocket {
                path: path.to_path_buf(),
            });
        }
        Ok(_) => match std::os::unix::net::UnixStream::connect(path) {
            Ok(_) => {
                return Err(BindError::UnixInUse {
                    path: path.to_path_buf(),
                });
            }
            // Nothing listens: a leftover from a process that died.
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
                std::fs::remove_file(path).map_err(io_err)?;
            }
            Err(e) => return Err(io_err(e)),
        },
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_err(e)),
    }
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty())
        && !dir.is_dir()
    {
        return Err(BindError::NoDirectory {
            path: path.to_path_buf(),
            dir: dir.display().to_string(),
        });
    }

    let socket = Socket::new(Domain::UNIX, Type::STREAM, None).map_err(io_err)?;
    let address = SockAddr::unix(path).map_err(io_err)?;
    let bound = if access.mode.is_some() {
        // The file appears with no permissions at all, never with more
        // than the configured mode grants (the umask is per process; this
        // runs at start-up, before anything else creates files).
        let previous = nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o777));
        let bound = socket.bind(&address);
        nix::sys::stat::umask(previous);
        bound
    } else {
        socket.bind(&address)
    };
    bound.map_err(io_err)?;
    // Until listen() below, connecting gets "connection refused": setting
    // mode and owner here leaves no window with the wrong permissions.
    let prepared = (|| {
        let uid = match &access.user {
            None => None,
            Some(name) => Some(
                nix::unistd::User::from_name(name)
                    .ok()
                    .flatten()
                    .ok_or_else(|| BindError::NoSuchOwner {
                        path: path.to_path_buf(),
                        what: "user",
                        name: name.clone(),
                    })?
                    .uid,
            ),
        };
        let gid = match &access.group {
            None => None,
            Some(name) => Some(
                nix::unistd::Group::from_name(name)
                    .ok()
                    .flatten()
                    .ok_or_else(|| BindError::NoSuchOwner {
                        path: path.to_path_buf(),
                        what: "group",
                        name: name.clone(),
                    })?
                    .gid,
            ),
        };
        if uid.is_some() || gid.is_some() {
            nix::unistd::chown(path, uid, gid).map_err(|e| io_err(e.into()))?;
        }
        // After chown: the mode never applies to the wrong group.
        if let Some(mode) = access.mode {
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
                .map_err(io_err)?;
        }
        socket.listen(backlog).map_err(io_err)?;
        socket.set_nonblocking(true).map_err(io_err)?;
        let meta = std::fs::symlink_metadata(path).map_err(io_err)?;
        Ok((meta.dev(), meta.ino()))
    })();
    let identity = match prepared {
        Ok(identity) => identity,
        Err(e) => {
            let _ = std::fs::remove_file(path);
            return Err(e);
        }
    };
    let std_listener: std::os::unix::net::UnixListener = socket.into();
    let listener = tokio::net::UnixListener::from_std(std_listener).map_err(io_err)?;
    Ok(Listener::Unix {
        listener,
        path: path.to_path_buf(),
        identity: Some(identity),
    })
}

impl Listener {
    /// A listening socket passed by systemd (socket activation), used as it
    /// is: no chmod, no chown, and its file is never removed (systemd owns
    /// it). `name` is its `FileDescriptorName=`, for messages. Must be
    /// called inside a tokio runtime.
    pub fn from_inherited(fd: std::os::fd::OwnedFd, name: &str) -> Result<Listener, BindError> {
        use std::os::fd::AsRawFd as _;
        let raw = fd.as_raw_fd();
        let problem = |problem: String| BindError::Inherited {
            fd: raw,
            name: name.to_string(),
            problem,
        };
        let socket = Socket::from(fd);
        match socket.r#type() {
            Ok(t) if t == Type::STREAM => {}
            Ok(_) => {
                return Err(problem(
                    "it is not a stream socket; use ListenStream= in the .socket unit".into(),
                ));
            }
            Err(e) => return Err(problem(format!("it is not a socket ({e})"))),
        }
        if !socket.is_listener().map_err(|e| problem(e.to_string()))? {
            return Err(problem(
                "it is not listening; do not use Accept=yes in the .socket unit".into(),
            ));
        }
        let local = socket.local_addr().map_err(|e| problem(e.to_string()))?;
        socket
            .set_nonblocking(true)
            .map_err(|e| problem(e.to_string()))?;
        if local.as_socket().is_some() {
            let listener = tokio::net::TcpListener::from_std(socket.into())
                .map_err(|e| problem(e.to_string()))?;
            return Ok(Listener::Tcp(listener));
        }
        if local.is_unix() {
            let path = local
                .as_pathname()
                .map(Path::to_path_buf)
                .unwrap_or_else(|| PathBuf::from(format!("(unnamed socket, fd {raw})")));
            let std_listener: std::os::unix::net::UnixListener = socket.into();
            let listener = tokio::net::UnixListener::from_std(std_listener)
                .map_err(|e| problem(e.to_string()))?;
            return Ok(Listener::Unix {
                listener,
                path,
                identity: None,
            });
        }
        Err(problem(
            "it is neither a TCP nor a Unix-domain socket".into(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> SocketSpec {
        s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    fn inet(family: InetFamily, host: Option<&str>, port: u16) -> SocketSpec {
        SocketSpec::Inet {
            family,
            host: host.map(str::to_string),
            port,
        }
    }

    #[test]
    fn reads_opendkim_and_postfix_syntax() {
        use InetFamily::*;
        assert_eq!(
            parse("inet:8891@localhost"),
            inet(Any, Some("localhost"), 8891)
        );
        assert_eq!(
            parse("inet:8891@127.0.0.1"),
            inet(Any, Some("127.0.0.1"), 8891)
        );
        assert_eq!(parse("inet:8891"), inet(Any, None, 8891));
        assert_eq!(
            parse("inet:localhost:8891"),
            inet(Any, Some("localhost"), 8891)
        );
        assert_eq!(parse("inet6:8891@[::1]"), inet(V6, Some("::1"), 8891));
        assert_eq!(parse("inet6:8891@::1"), inet(V6, Some("::1"), 8891));
        assert_eq!(parse("inet6:8891"), inet(V6, None, 8891));
        assert_eq!(
            parse("local:/run/opendkim/opendkim.sock"),
            SocketSpec::Unix("/run/opendkim/opendkim.sock".into())
        );
        assert_eq!(
            parse("unix:/var/spool/postfix/opendkim/opendkim.sock"),
            SocketSpec::Unix("/var/spool/postfix/opendkim/opendkim.sock".into())
        );
        assert_eq!(parse("/run/x.sock"), SocketSpec::Unix("/run/x.sock".into()));
    }

    #[test]
    fn display_is_parseable_again() {
        for s in [
            "inet:8891@localhost",
            "inet:8891",
            "inet6:8891@[::1]",
            "local:/run/x.sock",
        ] {
            let spec = parse(s);
            assert_eq!(parse(&spec.to_string()), spec);
        }
    }

    #[test]
    fn rejects_bad_specs_with_the_reason() {
        for (s, why) in [
            ("8891", "no type prefix"),
            ("tcp:8891", "unknown socket type"),
            ("inet:port@localhost", "number"),
            ("inet:0@localhost", "number"),
            ("inet:70000", "number"),
            ("local:relative.sock", "absolute"),
            ("inet:8891@", "empty host"),
        ] {
            let e = s.parse::<SocketSpec>().unwrap_err();
            assert!(e.to_string().contains(why), "{s}: {e}");
        }
    }

    #[tokio::test]
    async fn unix_socket_gets_its_mode_before_clients_can_connect() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("milter.sock");
        let access = UnixSocketAccess {
            mode: Some(0o660),
            ..Default::default()
        };
        let listeners = bind(&SocketSpec::Unix(path.clone()), &access, 16).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o660);
        listeners[0].remove_socket_file();
        assert!(!path.exists());
    }

    #[tokio::test]
    async fn stale_socket_is_replaced_but_a_live_one_is_not() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("milter.sock");
        let spec = SocketSpec::Unix(path.clone());
        let access = UnixSocketAccess::default();
        {
            // A socket file nobody listens on any more.
            let l = std::os::unix::net::UnixListener::bind(&path).unwrap();
            drop(l);
        }
        let live = bind(&spec, &access, 16).expect("stale socket replaced");
        let e = bind(&spec, &access, 16).unwrap_err();
        assert!(matches!(e, BindError::UnixInUse { .. }), "{e}");
        drop(live);
    }

    #[tokio::test]
    async fn refuses_to_remove_a_regular_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("not-a-socket");
        std::fs::write(&path, b"data").unwrap();
        let e = bind(&SocketSpec::Unix(path.clone()), &Default::default(), 16).unwrap_err();
        assert!(matches!(e, BindError::NotASocket { .. }), "{e}");
        assert_eq!(std::fs::read(&path).unwrap(), b"data");
    }

    #[tokio::test]
    async fn missing_directory_says_how_to_fix_it() {
        let e = bind(
            &SocketSpec::Unix("/nonexistent-dir-for-test/x.sock".into()),
            &Default::default(),
            16,
        )
        .unwrap_err();
        assert!(
            e.to_string().contains("mkdir -p /nonexistent-dir-for-test"),
            "{e}"
        );
    }

    #[tokio::test]
    async fn tcp_port_in_use_is_reported_plainly() {
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = taken.local_addr().unwrap().port();
        let spec = parse(&format!("inet:{port}@127.0.0.1"));
        let e = bind(&spec, &Default::default(), 16).unwrap_err();
        assert!(matches!(e, BindError::InUse { .. }), "{e}");
    }
}
