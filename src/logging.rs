//! Where log lines go: stderr (the journal under systemd) by default,
//! syslog with `Syslog yes`, as text or as one JSON object per line.
//!
//! Every event becomes exactly one line, whatever the destination: line
//! breaks inside a message are escaped, and each line reaches its
//! destination in a single write, so lines from concurrent connections
//! never interleave.
//!
//! - **stderr**: text with a timestamp, for a terminal or a log file.
//! - **the journal**: when systemd connected stderr to journald
//!   (`JOURNAL_STREAM` names our stderr), lines carry no timestamp (the
//!   journal adds its own) and start with a `<N>` syslog priority prefix so
//!   `journalctl -p warning` works.
//! - **syslog**: through libc's `openlog`/`syslog` with ident
//!   `dkim-sidecar`, the configured facility (`mail` by default), the PID,
//!   and a priority from the event's level. libc's syslog is used rather
//!   than a crate: it is a handful of lines, it is what OpenDKIM does, and it
//!   reconnects to `/dev/log` by itself when syslogd restarts.
//!
//! The level filter comes from `RUST_LOG` (default `info`), e.g.
//! `RUST_LOG=debug` to see signed messages with `SyslogSuccess no`.
//! This module only sets up the subscriber; what a message's line says is
//! [`crate::message_log`]'s business.

use std::ffi::CString;
use std::io::Write as _;

use tracing::{Level, Metadata};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;

use crate::config::Logging;

/// Why logging could not be set up.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LoggingError {
    #[error(
        "unknown SyslogFacility \"{0}\"; use mail, daemon, user, auth, authpriv, cron, local0 ... local7"
    )]
    UnknownFacility(String),
    #[error("cannot set up logging: {0}")]
    Init(String),
}

/// Where lines go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Destination {
    /// stderr, with timestamps.
    Stderr,
    /// stderr read by journald: priority prefix, no timestamp.
    Journal,
    /// syslog(3) with this facility (a `LOG_*` facility value).
    Syslog(libc::c_int),
}

impl Destination {
    /// The destination `logging` asks for, given the process's stderr.
    pub fn for_settings(logging: &Logging) -> Result<Destination, LoggingError> {
        if logging.syslog {
            let facility = syslog_facility(&logging.syslog_facility)
                .ok_or_else(|| LoggingError::UnknownFacility(logging.syslog_facility.clone()))?;
            return Ok(Destination::Syslog(facility));
        }
        Ok(if stderr_is_journal() {
            Destination::Journal
        } else {
            Destination::Stderr
        })
    }
}

/// The `LOG_*` facility for a name as OpenDKIM's SyslogFacility takes it
/// (`mail`, `local3`, ...; case-insensitive, an optional `log_` prefix).
pub fn syslog_facility(name: &str) -> Option<libc::c_int> {
    let lower = name.trim().to_ascii_lowercase();
    let name = lower.strip_prefix("log_").unwrap_or(&lower);
    Some(match name {
        "auth" => libc::LOG_AUTH,
        "authpriv" => libc::LOG_AUTHPRIV,
        "cron" => libc::LOG_CRON,
        "daemon" => libc::LOG_DAEMON,
        "ftp" => libc::LOG_FTP,
        "kern" => libc::LOG_KERN,
        "lpr" => libc::LOG_LPR,
        "mail" => libc::LOG_MAIL,
        "news" => libc::LOG_NEWS,
        "syslog" => libc::LOG_SYSLOG,
        "user" => libc::LOG_USER,
        "uucp" => libc::LOG_UUCP,
        "local0" => libc::LOG_LOCAL0,
        "local1" => libc::LOG_LOCAL1,
        "local2" => libc::LOG_LOCAL2,
        "local3" => libc::LOG_LOCAL3,
        "local4" => libc::LOG_LOCAL4,
        "local5" => libc::LOG_LOCAL5,
        "local6" => libc::LOG_LOCAL6,
        "local7" => libc::LOG_LOCAL7,
        _ => return None,
    })
}

/// Whether systemd connected our stderr to the journal: `JOURNAL_STREAM`
/// is `DEVICE:INODE` of that stream, and must match fd 2 (a child whose
/// stderr was redirected inherits the variable but not the stream).
fn stderr_is_journal() -> bool {
    let Some(value) = std::env::var_os("JOURNAL_STREAM") else {
        return false;
    };
    let Some((dev, ino)) = value.to_str().and_then(|v| v.split_once(':')) else {
        return false;
    };
    let (Ok(dev), Ok(ino)) = (dev.parse::<u64>(), ino.parse::<u64>()) else {
        return false;
    };
    match nix::sys::stat::fstat(std::io::stderr()) {
        Ok(stat) => stat.st_dev == dev && stat.st_ino == ino,
        Err(_) => false,
    }
}

/// Install the process-wide subscriber. Call once, before anything logs;
/// a second call (tests) leaves the first subscriber in place.
pub fn init(logging: &Logging) -> Result<Destination, LoggingError> {
    let destination = Destination::for_settings(logging)?;
    if let Destination::Syslog(facility) = destination {
        // SAFETY: IDENT is a static C string that outlives every syslog()
        // call, as openlog requires; the flags and facility are plain ints.
        #[allow(unsafe_code)]
        unsafe {
            libc::openlog(IDENT.as_ptr(), libc::LOG_PID | libc::LOG_NDELAY, facility);
        };
    }
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let writer = LineWriters { destination };
    // The journal and syslog stamp the time and carry the level as the
    // line's priority: only a plain stderr line shows them.
    let with_time = destination == Destination::Stderr;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer)
        .with_ansi(false)
        .with_target(false)
        .with_level(with_time);
    let result = match (logging.json, with_time) {
        (true, true) => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .try_init(),
        (true, false) => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .without_time()
            .try_init(),
        (false, true) => builder.try_init(),
        (false, false) => builder.without_time().try_init(),
    };
    // Already installed (a test set one up first): keep it.
    let _ = result;
    Ok(destination)
}

const IDENT: &std::ffi::CStr = c"dkim-sidecar";

/// Makes one [`Line`] per event.
#[derive(Debug, Clone, Copy)]
struct LineWriters {
    destination: Destination,
}

impl<'a> MakeWriter<'a> for LineWriters {
    type Writer = Line;

    fn make_writer(&'a self) -> Line {
        Line::new(self.destination, Level::INFO)
    }

    fn make_writer_for(&'a self, meta: &Metadata<'_>) -> Line {
        Line::new(self.destination, *meta.level())
    }
}

/// One formatted event, collected and sent whole when dropped (the
/// formatter writes an event and then drops its writer).
struct Line {
    destination: Destination,
    level: Level,
    buf: Vec<u8>,
}

impl Line {
    fn new(destination: Destination, level: Level) -> Line {
        Line {
            destination,
            level,
            buf: Vec::with_capacity(256),
        }
    }
}

impl std::io::Write for Line {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(data);
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for Line {
    fn drop(&mut self) {
        if self.buf.is_empty() {
            return;
        }
        let text = one_line(&self.buf);
        let priority = priority(self.level);
        match self.destination {
            Destination::Stderr => {
                let mut line = text;
                line.push(b'\n');
                let _ = std::io::stderr().lock().write_all(&line);
            }
            Destination::Journal => {
                let mut line = format!("<{priority}>").into_bytes();
                line.extend_from_slice(&text);
                line.push(b'\n');
                let _ = std::io::stderr().lock().write_all(&line);
            }
            Destination::Syslog(_) => {
                let text: Vec<u8> = text.into_iter().filter(|b| *b != 0).collect();
                let message = CString::new(text).expect("NUL bytes removed");
                // SAFETY: both strings are NUL-terminated and live across the
                // call; "%s" makes syslog treat the message as data.
                #[allow(unsafe_code)]
                unsafe {
                    libc::syslog(priority, c"%s".as_ptr(), message.as_ptr());
                };
            }
        }
    }
}

/// The syslog priority for a tracing level.
fn priority(level: Level) -> libc::c_int {
    match level {
        Level::ERROR => libc::LOG_ERR,
        Level::WARN => libc::LOG_WARNING,
        Level::INFO => libc::LOG_INFO,
        Level::DEBUG | Level::TRACE => libc::LOG_DEBUG,
    }
}

/// The event without its final line break, inner line breaks escaped.
fn one_line(buf: &[u8]) -> Vec<u8> {
    let trimmed = buf.strip_suffix(b"\n").unwrap_or(buf);
    let trimmed = trimmed.strip_suffix(b"\r").unwrap_or(trimmed);
    let mut out = Vec::with_capacity(trimmed.len());
    for &b in trimmed {
        match b {
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            _ => out.push(b),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn facilities_are_read_like_opendkim() {
        assert_eq!(syslog_facility("mail"), Some(libc::LOG_MAIL));
        assert_eq!(syslog_facility("MAIL"), Some(libc::LOG_MAIL));
        assert_eq!(syslog_facility("log_local3"), Some(libc::LOG_LOCAL3));
        assert_eq!(syslog_facility("daemon"), Some(libc::LOG_DAEMON));
        assert_eq!(syslog_facility("mial"), None);
    }

    #[test]
    fn an_unknown_facility_is_refused_with_the_choices() {
        let logging = Logging {
            syslog: true,
            syslog_facility: "mial".into(),
            ..Logging::default()
        };
        let e = Destination::for_settings(&logging).unwrap_err();
        assert!(e.to_string().contains("\"mial\""), "{e}");
        assert!(e.to_string().contains("local0"), "{e}");
    }

    #[test]
    fn every_event_is_one_line() {
        assert_eq!(one_line(b"a\nb\r\nc\n"), b"a\\nb\\r\\nc");
        assert_eq!(one_line(b"plain\n"), b"plain");
        assert_eq!(one_line(b"no newline"), b"no newline");
    }

    #[test]
    fn levels_map_to_syslog_priorities() {
        assert_eq!(priority(Level::ERROR), libc::LOG_ERR);
        assert_eq!(priority(Level::WARN), libc::LOG_WARNING);
        assert_eq!(priority(Level::INFO), libc::LOG_INFO);
        assert_eq!(priority(Level::DEBUG), libc::LOG_DEBUG);
    }

    #[test]
    fn stderr_is_not_the_journal_without_journal_stream() {
        // The test runner's stderr is never the journal stream named by a
        // made-up JOURNAL_STREAM; without the variable it is not either.
        if std::env::var_os("JOURNAL_STREAM").is_none() {
            assert!(!stderr_is_journal());
        }
    }
}
