//! systemd integration: socket activation and readiness notification.
//!
//! Both go through the `sd-notify` crate (no libsystemd, no D-Bus): it
//! reads `LISTEN_PID`/`LISTEN_FDS`/`LISTEN_FDNAMES` as `sd_listen_fds(3)`
//! does and sends `sd_notify(3)` datagrams to `NOTIFY_SOCKET`. Outside
//! systemd (no variables set) every function here does nothing.
//!
//! - [`listeners`]: the sockets systemd passed (a `.socket` unit, or
//!   `systemd-socket-activate`), as server [`Listener`]s used as they are.
//! - [`ready`] (`READY=1`) once the sockets listen and privileges are
//!   dropped, [`reloading`]/[`ready`] around a reload, [`stopping`] at
//!   shutdown, each with a `STATUS=` line for `systemctl status`.
//!
//! The environment variables are left in place: removing them is unsound
//! once threads run, we start no child processes, and `LISTEN_PID` already
//! stops a child from taking the sockets for its own.

use std::os::fd::{FromRawFd as _, OwnedFd};

use sd_notify::NotifyState;

use milter::server::{BindError, Listener};

/// The listening sockets systemd passed to this process, in order; empty
/// when not socket-activated. Must be called once, inside a tokio runtime.
pub fn listeners() -> Result<Vec<Listener>, BindError> {
    let fds = sd_notify::listen_fds_with_names().map_err(|e| BindError::Inherited {
        fd: -1,
        name: "LISTEN_FDS".into(),
        problem: e.to_string(),
    })?;
    let mut listeners = Vec::new();
    for (fd, name) in fds {
        // SAFETY: sd_listen_fds semantics: systemd passed these descriptors
        // to this process (LISTEN_PID matched) for it to own; nothing else in
        // the process uses them, and this function runs once.
        #[allow(unsafe_code)]
        let owned = unsafe { OwnedFd::from_raw_fd(fd) };
        listeners.push(Listener::from_inherited(owned, &name)?);
    }
    Ok(listeners)
}

/// Whether a service manager listens for notifications.
pub fn notifying() -> bool {
    std::env::var_os("NOTIFY_SOCKET").is_some()
}

/// `READY=1`: the sockets listen. Also sent after a reload.
pub fn ready(status: &str) {
    send(&[NotifyState::Ready, NotifyState::Status(status)]);
}

/// `RELOADING=1` with the monotonic time systemd 253+ wants beside it.
pub fn reloading() {
    let mut states = vec![
        NotifyState::Reloading,
        NotifyState::Status("reloading configuration"),
    ];
    if let Ok(now) = NotifyState::monotonic_usec_now() {
        states.push(now);
    }
    send(&states);
}

/// `STOPPING=1`.
pub fn stopping() {
    send(&[
        NotifyState::Stopping,
        NotifyState::Status("finishing open transactions"),
    ]);
}

/// A `STATUS=` line only.
pub fn status(status: &str) {
    send(&[NotifyState::Status(status)]);
}

fn send(states: &[NotifyState<'_>]) {
    if !notifying() {
        return;
    }
    if let Err(e) = sd_notify::notify(states) {
        tracing::warn!("cannot notify systemd: {e}");
    }
}
