//! Accepting milter connections: listeners, the connection limit, and a
//! graceful shutdown.
//!
//! [`run`] accepts on every listener, hands each connection to
//! [`milter::serve`] with a fresh filter from the caller's factory, and on
//! shutdown stops accepting, lets open transactions finish, and removes the
//! Unix socket files it created. Connections beyond the limit are closed at
//! once (the MTA applies its `milter_default_action`) and logged at most
//! once every few seconds, never once per connection. This module knows
//! nothing about what the filter does.

mod quickack;
pub mod socket;

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{Mutex, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::milter::{self, ConnectionError, Ending, Filter, Limits, Offload, ServeError, WorkPool};
use quickack::QuickAck;
pub use socket::{BindError, Listener, SocketSpec, UnixSocketAccess, bind};

/// How the server treats connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settings {
    pub limits: Limits,
    /// Connections served at once; more are closed on arrival.
    pub max_connections: usize,
    /// After a shutdown request, how long open transactions may take to
    /// finish before the server stops anyway.
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
            max_connections: 1024,
            shutdown_grace: Duration::from_secs(30),
            work_threads: milter::pool::default_threads(),
        }
    }
}

/// Who is on the other end of a milter connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Peer {
    Tcp(SocketAddr),
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
    pub peer: Peer,
}

/// Serve milter connections on `listeners` until `shutdown` is cancelled,
/// then finish open transactions (up to the grace period) and return.
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
                tracing::warn!("cannot start work threads, signing on the connection threads: {e}");
                None
            }
        },
    };
    let shared = Arc::new(Shared {
        make_filter,
        settings,
        offload,
        slots: Arc::new(Semaphore::new(settings.max_connections)),
        next_id: AtomicU64::new(1),
        refusals: Mutex::new(Refusals::default()),
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
        tracing::info!(open, "waiting for open milter transactions to finish");
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

struct Shared<M> {
    make_filter: M,
    settings: Settings,
    offload: Option<Offload>,
    slots: Arc<Semaphore>,
    next_id: AtomicU64,
    refusals: Mutex<Refusals>,
    connections: TaskTracker,
    shutdown: CancellationToken,
}

async fn accept_loop<F, M>(listener: &Listener, shared: &Arc<Shared<M>>)
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
            Err(e) => {
                // Out of file descriptors and the like: do not spin.
                tracing::error!(listener = %listener.describe(), "accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
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

async fn start<S, F, M>(stream: S, peer: Peer, shared: &Arc<Shared<M>>)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    F: Filter + 'static,
    M: Fn(&ConnectionInfo) -> F + Send + Sync + 'static,
{
    let Ok(slot) = Arc::clone(&shared.slots).try_acquire_owned() else {
        shared
            .refusals
            .lock()
            .await
            .note(peer, shared.settings.max_connections);
        drop(stream);
        return;
    };
    let info = ConnectionInfo {
        id: shared.next_id.fetch_add(1, Ordering::Relaxed),
        peer,
    };
    let filter = (shared.make_filter)(&info);
    let limits = shared.settings.limits;
    let shutdown = shared.shutdown.clone();
    let offload = shared.offload.clone();
    shared.connections.spawn(async move {
        let _slot = slot;
        match milter::serve(stream, filter, limits, offload, shutdown).await {
            Ok(ending) => log_ending(&info, ending),
            Err(error) => log_error(&info, &error),
        }
    });
}

fn log_ending(info: &ConnectionInfo, ending: Ending) {
    tracing::debug!(conn = info.id, peer = %info.peer, ?ending, "milter connection ended");
}

fn log_error(info: &ConnectionInfo, error: &ServeError) {
    match error {
        ServeError::Connection(ConnectionError::IdleTimeout(_)) => {
            tracing::info!(conn = info.id, peer = %info.peer, "milter connection closed: {error}")
        }
        ServeError::Connection(ConnectionError::Io(e))
            if e.kind() == std::io::ErrorKind::ConnectionReset =>
        {
            tracing::info!(conn = info.id, peer = %info.peer, "milter connection reset by the MTA")
        }
        _ => tracing::warn!(conn = info.id, peer = %info.peer, "milter connection closed: {error}"),
    }
}

/// Connections refused at the limit, logged at most once per interval.
#[derive(Default)]
struct Refusals {
    since_last_log: u64,
    last_log: Option<Instant>,
}

impl Refusals {
    const INTERVAL: Duration = Duration::from_secs(10);

    fn note(&mut self, peer: Peer, limit: usize) {
        self.since_last_log += 1;
        let due = self
            .last_log
            .is_none_or(|last| last.elapsed() >= Self::INTERVAL);
        if due {
            tracing::warn!(
                limit,
                refused = self.since_last_log,
                latest_peer = %peer,
                "connection limit reached; refusing milter connections (the MTA applies milter_default_action)"
            );
            self.since_last_log = 0;
            self.last_log = Some(Instant::now());
        }
    }
}
