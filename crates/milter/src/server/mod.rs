//! Accepting milter connections: listeners, the connection limit, and a
//! graceful shutdown.
//!
//! [`run`] accepts on every listener, hands each connection to
//! [`crate::serve`] with a fresh filter from the caller's factory, and on
//! shutdown stops accepting, closes idle connections at once, lets
//! transactions in flight finish (each connection closing as its
//! transaction ends), and removes the Unix socket files it created. A
//! connection is idle between transactions: before MAIL, and once the
//! message had its final answer or its abort. At the connection limit, or
//! when the process runs out of file descriptors, the connection idle
//! longest is closed to make room (`roster`); one with a transaction in
//! flight never is, and only when every connection has one is a newcomer
//! closed at once (the MTA applies its `milter_default_action`). Either is
//! logged at most once every few seconds, never once per connection. This
//! module knows nothing about what the filter does, and never reads or
//! writes a frame itself: that is [`serve`](crate::serve)'s job.

mod quickack;
pub(crate) mod roster;
pub mod socket;

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt as _};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::{ConnectionError, Ending, Filter, Limits, Offload, ServeError, WorkPool};
use quickack::QuickAck;
use roster::{Admission, Roster};
pub use socket::{BindError, Listener, SocketSpec, UnixSocketAccess, bind};

/// How the server treats connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settings {
    /// Payload and time limits for each connection.
    pub limits: Limits,
    /// Connections served at once. At the limit a newcomer takes the place
    /// of the connection idle longest; it is closed on arrival only when
    /// every connection has a transaction in flight.
    pub max_connections: usize,
    /// After a shutdown request, how long transactions in flight may take
    /// to finish before the server stops anyway. Idle connections do not
    /// wait for it.
    pub shutdown_grace: Duration,
    /// Threads for filter work too heavy for the connection threads
    /// (RSA signing), used while more connections are open than the runtime
    /// has threads; 0 always runs it on the connection threads.
    pub work_threads: usize,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            limits: Limits::default(),
            max_connections: DEFAULT_MAX_CONNECTIONS,
            shutdown_grace: Duration::from_secs(30),
            work_threads: crate::pool::default_threads(),
        }
    }
}

/// The default connection limit. Postfix holds one milter connection per
/// smtpd process (and one per message for `non_smtpd_milters`), and even
/// large installations run a few thousand of those; one peer address
/// cannot open more than 65,535 connections to one port anyway. So the
/// limit is never what stops Postfix: it bounds memory (an idle connection
/// costs a few KiB; see docs/operations.md, "Limits") and, with the
/// closing of the connection idle longest, keeps a flood of silent
/// connections from locking Postfix out.
pub const DEFAULT_MAX_CONNECTIONS: usize = 65_536;

/// Who is on the other end of a milter connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Peer {
    /// A TCP peer, at this address and port.
    Tcp(SocketAddr),
    /// A peer on a Unix-domain socket, which has no address worth
    /// reporting.
    Unix,
}

impl fmt::Display for Peer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Peer::Tcp(addr) => write!(f, "{addr}"),
            Peer::Unix => f.write_str("unix socket"),
        }
    }
}

/// One accepted milter connection, for the filter factory and for logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionInfo {
    /// Counts up from 1 for the life of the process.
    pub id: u64,
    /// Who connected.
    pub peer: Peer,
}

/// Serve milter connections on `listeners` until `shutdown` is cancelled,
/// then close idle connections, finish transactions in flight (up to the
/// grace period) and return.
pub async fn run<F, M>(
    listeners: Vec<Listener>,
    make_filter: M,
    settings: Settings,
    shutdown: CancellationToken,
) where
    F: Filter + 'static,
    M: Fn(&ConnectionInfo) -> F + Send + Sync + 'static,
{
    // Up to one open connection per runtime thread, heavy work runs inline.
    let runtime_threads = tokio::runtime::Handle::current().metrics().num_workers();
    let offload = match settings.work_threads {
        0 => None,
        threads => match WorkPool::new(threads, "milter-work") {
            Ok(pool) => Some(Offload::new(Arc::new(pool), runtime_threads)),
            Err(e) => {
                tracing::warn!(
                    "cannot start work threads, running end of message on the connection threads: {e}"
                );
                None
            }
        },
    };
    let shared = Arc::new(ServerState {
        make_filter,
        settings,
        offload,
        roster: Arc::new(Roster::new(settings.max_connections)),
        next_id: AtomicU64::new(1),
        throttle: Throttle::default(),
        connections: TaskTracker::new(),
        shutdown: shutdown.clone(),
    });
    let mut accept_loops = tokio::task::JoinSet::new();
    for listener in listeners {
        let shared = Arc::clone(&shared);
        accept_loops.spawn(async move {
            accept_loop(&listener, &shared).await;
            listener
        });
    }
    let mut closed = Vec::new();
    while let Some(listener) = accept_loops.join_next().await {
        if let Ok(listener) = listener {
            closed.push(listener);
        }
    }
    for listener in &closed {
        listener.remove_socket_file();
    }
    shared.connections.close();
    let open = shared.connections.len();
    if open > 0 {
        tracing::info!(
            open,
            "closing idle milter connections; waiting for transactions in flight to finish"
        );
    }
    if tokio::time::timeout(settings.shutdown_grace, shared.connections.wait())
        .await
        .is_err()
    {
        tracing::warn!(
            open = shared.connections.len(),
            grace = ?settings.shutdown_grace,
            "shutdown grace period over; closing the remaining milter connections"
        );
    }
}

struct ServerState<M> {
    make_filter: M,
    settings: Settings,
    offload: Option<Offload>,
    roster: Arc<Roster>,
    next_id: AtomicU64,
    throttle: Throttle,
    connections: TaskTracker,
    shutdown: CancellationToken,
}

async fn accept_loop<F, M>(listener: &Listener, shared: &Arc<ServerState<M>>)
where
    F: Filter + 'static,
    M: Fn(&ConnectionInfo) -> F + Send + Sync + 'static,
{
    loop {
        let accepted = tokio::select! {
            _ = shared.shutdown.cancelled() => return,
            accepted = accept(listener) => accepted,
        };
        match accepted {
            Ok(Accepted::Tcp(stream, addr)) => {
                // Replies are small and must not wait for delayed ACKs, and
                // neither must Postfix's pipelined commands.
                let _ = stream.set_nodelay(true);
                start(QuickAck::new(stream), Peer::Tcp(addr), shared).await;
            }
            Ok(Accepted::Unix(stream)) => start(stream, Peer::Unix, shared).await,
            Err(e) if out_of_files(&e) => {
                // Out of file descriptors: the connection idle longest
                // gives its own back, and the next accept can succeed.
                let idle_for = shared.roster.evict_longest_idle();
                if let Some(evicted) = shared.throttle.due(Kind::OutOfFiles) {
                    tracing::warn!(
                        listener = %listener.spec(),
                        evicted,
                        "accept failed: {e}; closing the milter connection idle longest ({}) to make room; raise the open files limit (LimitNOFILE=) or lower max_connections",
                        idle_for.map_or("none is idle".to_string(), |d| format!("idle for {}s", d.as_secs())),
                    );
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            Err(e) => {
                // Do not spin.
                tracing::error!(listener = %listener.spec(), "accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// Whether an accept failed because this process (EMFILE) or the system
/// (ENFILE) has no file descriptor left.
fn out_of_files(error: &std::io::Error) -> bool {
    use nix::errno::Errno;
    error
        .raw_os_error()
        .is_some_and(|code| matches!(Errno::from_raw(code), Errno::EMFILE | Errno::ENFILE))
}

enum Accepted {
    Tcp(tokio::net::TcpStream, SocketAddr),
    Unix(tokio::net::UnixStream),
}

async fn accept(listener: &Listener) -> std::io::Result<Accepted> {
    match listener {
        Listener::Tcp(l) => l.accept().await.map(|(s, a)| Accepted::Tcp(s, a)),
        Listener::Unix { listener, .. } => listener.accept().await.map(|(s, _)| Accepted::Unix(s)),
    }
}

async fn start<S, F, M>(mut stream: S, peer: Peer, shared: &Arc<ServerState<M>>)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    F: Filter + 'static,
    M: Fn(&ConnectionInfo) -> F + Send + Sync + 'static,
{
    let id = shared.next_id.fetch_add(1, Ordering::Relaxed);
    let mut place = match shared.roster.admit(id) {
        Admission::Admitted(place) => place,
        Admission::MadeRoom(place, idle_for) => {
            if let Some(evicted) = shared.throttle.due(Kind::Evicted) {
                tracing::warn!(
                    limit = shared.settings.max_connections,
                    evicted,
                    idle_seconds = idle_for.as_secs(),
                    latest_peer = %peer,
                    "connection limit reached; closing the milter connections idle longest to make room (never one with a transaction in flight)"
                );
            }
            place
        }
        Admission::Full => {
            if let Some(refused) = shared.throttle.due(Kind::Refused) {
                tracing::warn!(
                    limit = shared.settings.max_connections,
                    refused,
                    latest_peer = %peer,
                    "connection limit reached and every connection has a transaction in flight; refusing milter connections (the MTA applies milter_default_action)"
                );
            }
            drop(stream);
            return;
        }
    };
    let info = ConnectionInfo { id, peer };
    let shared = Arc::clone(shared);
    shared.connections.clone().spawn(async move {
        let limits = shared.settings.limits;
        let shutdown = shared.shutdown.clone();
        let offload = shared.offload.clone();
        // A panic anywhere in this connection's work (making its filter,
        // a bug outside the filter calls `serve` guards, dropping the
        // filter) ends this connection only, with a tempfail and one line.
        let served = crate::panics::CatchUnwind::new(async {
            let filter = (shared.make_filter)(&info);
            crate::serve_in(
                &mut stream,
                filter,
                limits,
                offload,
                shutdown,
                Some(&mut place),
            )
            .await
        })
        .await;
        match served {
            Ok(Ok(ending)) => log_ending(&info, ending),
            Ok(Err(error)) => log_error(&info, &error, &shared.throttle),
            Err(message) => {
                tracing::error!(
                    conn = info.id,
                    peer = %info.peer,
                    "milter connection task panicked; answering tempfail and closing: {message}"
                );
                let mut tempfail = bytes::BytesMut::new();
                if crate::Reply::Tempfail.encode(&mut tempfail).is_ok() {
                    let _ =
                        tokio::time::timeout(limits.timeouts.write, stream.write_all(&tempfail))
                            .await;
                }
            }
        }
    });
}

fn log_ending(info: &ConnectionInfo, ending: Ending) {
    tracing::debug!(conn = info.id, peer = %info.peer, ?ending, "milter connection ended");
}

/// Log why a connection was closed early: the first of each kind at once,
/// then at most one line of that kind per [`Throttle::INTERVAL`], which
/// counts the others. A client opening thousands of connections that each
/// time out, or trickling garbage on each, makes a few lines, not
/// thousands. Panics are bugs and always logged.
fn log_error(info: &ConnectionInfo, error: &ServeError, throttle: &Throttle) {
    use ConnectionError as C;
    let kind = match error {
        ServeError::FilterPanicked(..) => {
            tracing::error!(conn = info.id, peer = %info.peer, "milter connection closed: {error}");
            return;
        }
        ServeError::Connection(C::IdleTimeout(_)) => Kind::Idle,
        ServeError::Connection(C::FrameTimeout(_)) => Kind::SlowFrame,
        ServeError::Connection(C::WriteTimeout(_)) => Kind::SlowReader,
        ServeError::Connection(C::Io(e)) if e.kind() == std::io::ErrorKind::ConnectionReset => {
            Kind::Reset
        }
        ServeError::Connection(C::Io(_)) => Kind::Io,
        ServeError::Connection(C::Truncated(_)) => Kind::Truncated,
        ServeError::Connection(C::Frame(_) | C::Encode(_)) => Kind::BadFrame,
        ServeError::Protocol(_) | ServeError::DataAfterQuit(_) => Kind::Protocol,
    };
    let Some(similar) = throttle.due(kind) else {
        return;
    };
    // `similar`: connections closed for the same kind of reason since the
    // last line of this kind, not logged on their own.
    match kind {
        Kind::Idle => tracing::info!(
            conn = info.id, peer = %info.peer, similar, "milter connection closed: {error}"
        ),
        Kind::Reset => tracing::info!(
            conn = info.id, peer = %info.peer, similar, "milter connection reset by the MTA"
        ),
        _ => tracing::warn!(
            conn = info.id, peer = %info.peer, similar, "milter connection closed: {error}"
        ),
    }
}

/// The kinds of early endings [`Throttle`] counts apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Refused,
    Evicted,
    OutOfFiles,
    Idle,
    SlowFrame,
    SlowReader,
    Reset,
    Io,
    Truncated,
    BadFrame,
    Protocol,
}

const KINDS: usize = 11;

/// At most one log line per kind per interval.
#[derive(Default)]
struct Throttle {
    kinds: std::sync::Mutex<[Seen; KINDS]>,
}

#[derive(Default, Clone, Copy)]
struct Seen {
    /// Events of this kind since the last line, this one included.
    since_last_log: u64,
    last_log: Option<Instant>,
}

impl Throttle {
    const INTERVAL: Duration = Duration::from_secs(10);

    /// Count one event of `kind`; `Some(count)` when a line is due, with
    /// the events since the previous line, this one included.
    fn due(&self, kind: Kind) -> Option<u64> {
        let mut kinds = self
            .kinds
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let seen = &mut kinds[kind as usize];
        seen.since_last_log += 1;
        let due = seen
            .last_log
            .is_none_or(|last| last.elapsed() >= Self::INTERVAL);
        due.then(|| {
            seen.last_log = Some(Instant::now());
            std::mem::take(&mut seen.since_last_log)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::tests::frame;
    use crate::{Event, EventSet, Macros, Needs, Verdict};
    use tokio::io::AsyncReadExt as _;

    /// Rejects every message at end of headers when told to, and lets it
    /// through otherwise.
    struct RejectAtEndOfHeaders(bool);

    impl Filter for RejectAtEndOfHeaders {
        fn needs(&self) -> Needs {
            Needs::seeing(EventSet::of(&[Event::EndOfHeaders]))
                .answering(EventSet::of(&[Event::EndOfHeaders]))
        }

        fn end_of_headers(&mut self, _macros: &Macros) -> Verdict {
            if self.0 {
                Verdict::Reject
            } else {
                Verdict::Continue
            }
        }
    }

    /// An MTA connection that has negotiated version 6 and sent MAIL and a
    /// header.
    async fn mta_in_a_message(addr: SocketAddr) -> tokio::net::TcpStream {
        let mut mta = tokio::net::TcpStream::connect(addr).await.unwrap();
        let mut offer = Vec::new();
        for word in [6u32, 0x1ff, 0x1f_ffff] {
            offer.extend_from_slice(&word.to_be_bytes());
        }
        mta.write_all(&frame(b'O', &offer)).await.unwrap();
        let mut reply = [0u8; 5];
        mta.read_exact(&mut reply).await.unwrap();
        assert_eq!(reply[4], b'O');
        let len = u32::from_be_bytes(reply[..4].try_into().unwrap()) as usize;
        mta.read_exact(&mut vec![0u8; len - 1]).await.unwrap();
        mta.write_all(&frame(b'M', b"<a@example.com>\0"))
            .await
            .unwrap();
        mta.write_all(&frame(b'L', b"Subject\0 hi\0"))
            .await
            .unwrap();
        mta
    }

    /// Read the next one-byte reply.
    async fn reply(mta: &mut tokio::net::TcpStream) -> u8 {
        let mut reply = [0u8; 5];
        mta.read_exact(&mut reply).await.unwrap();
        assert_eq!(&reply[..4], &1u32.to_be_bytes());
        reply[4]
    }

    /// Whether the server closed `mta` within `within`.
    async fn closed_within(mta: &mut tokio::net::TcpStream, within: Duration) -> bool {
        let mut rest = Vec::new();
        matches!(
            tokio::time::timeout(within, mta.read_to_end(&mut rest)).await,
            Ok(Ok(0))
        )
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn shutdown_closes_idle_connections_at_once_and_waits_for_transactions_in_flight() {
        let grace = Duration::from_secs(30);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let shutdown = CancellationToken::new();
        let settings = Settings {
            shutdown_grace: grace,
            work_threads: 0,
            ..Settings::default()
        };
        let server = tokio::spawn(run(
            vec![Listener::Tcp(listener)],
            |info: &ConnectionInfo| RejectAtEndOfHeaders(info.id == 1),
            settings,
            shutdown.clone(),
        ));
        // Connection 1: its message was rejected at end of headers, the
        // last answer the MTA waits for; it is idle now.
        let mut answered = mta_in_a_message(addr).await;
        answered.write_all(&frame(b'N', b"")).await.unwrap();
        assert_eq!(reply(&mut answered).await, b'r');
        // Connection 2: in the middle of a message.
        let mut in_flight = mta_in_a_message(addr).await;
        in_flight.write_all(&frame(b'N', b"")).await.unwrap();
        assert_eq!(reply(&mut in_flight).await, b'c');

        let asked = Instant::now();
        shutdown.cancel();
        // Well before the grace would be over: the idle connection is
        // closed, and the one in flight is not.
        assert!(
            closed_within(&mut answered, grace / 3).await,
            "the idle connection was not closed"
        );
        assert!(asked.elapsed() < grace / 3);
        assert!(!server.is_finished());
        in_flight.write_all(&frame(b'E', b"")).await.unwrap();
        assert_eq!(reply(&mut in_flight).await, b'c', "the message is answered");
        assert!(closed_within(&mut in_flight, grace / 3).await);
        tokio::time::timeout(grace / 3, server)
            .await
            .expect("the server stops once no transaction is in flight")
            .unwrap();
    }

    #[test]
    fn the_throttle_lets_one_line_per_kind_through() {
        let throttle = Throttle::default();
        assert_eq!(throttle.due(Kind::Idle), Some(1));
        for _ in 0..1000 {
            assert_eq!(throttle.due(Kind::Idle), None);
        }
        assert_eq!(throttle.due(Kind::Refused), Some(1));
        // Once the interval is over, the next line counts what was held back.
        throttle.kinds.lock().unwrap()[Kind::Idle as usize].last_log =
            Some(Instant::now() - Throttle::INTERVAL);
        assert_eq!(throttle.due(Kind::Idle), Some(1001));
    }
}
