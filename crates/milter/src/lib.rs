//! The Sendmail milter protocol (versions 2 to 6), as Postfix speaks it:
//! both sides of it, for any milter.
//!
//! - [`codec`] frames bytes into [`Command`]s and encodes [`Reply`]s;
//!   [`options`] negotiates; [`macros`] keeps macros per [`Stage`].
//! - [`session`] is the per-connection state machine that drives a
//!   [`Filter`]; [`connection`] moves frames over a socket with time
//!   limits; [`pool`] runs a filter's heavy end of message off the
//!   connection threads; [`serve`] ties them together for one connection
//!   and [`server`] accepts connections on TCP and Unix sockets.
//! - [`panics`] contains a filter's panic to its connection, which is
//!   answered tempfail.
//! - [`client`] is the MTA's side, and [`postfix`] is the one place that
//!   says what Postfix offers and which macros it sends.
//!
//! This crate must never know anything about DKIM, keys or a product's
//! configuration, nor about mail content beyond what the protocol itself
//! defines. A filter is a type implementing [`Filter`]:
//!
//! ```
//! use milter::{Event, EventSet, Filter, Macros, Needs, Verdict};
//!
//! /// Rejects every message whose Subject is "spam".
//! struct NoSpam;
//!
//! impl Filter for NoSpam {
//!     fn needs(&self) -> Needs {
//!         Needs::seeing(EventSet::of(&[Event::Header])).answering(EventSet::of(&[Event::Header]))
//!     }
//!
//!     fn header(&mut self, name: &[u8], value: &[u8], _macros: &Macros) -> Verdict {
//!         if name.eq_ignore_ascii_case(b"subject") && value.trim_ascii() == b"spam" {
//!             Verdict::Reject
//!         } else {
//!             Verdict::Continue
//!         }
//!     }
//! }
//! ```
#![warn(missing_docs)]
#![forbid(unsafe_code)]

pub mod client;
pub mod codec;
pub mod connection;
pub mod filter;
pub mod macros;
pub mod options;
pub mod panics;
pub mod pool;
pub mod postfix;
pub mod server;
pub mod session;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio_util::sync::CancellationToken;

pub use codec::{ClientAddress, Command, FrameDecoder, Reply, ReplyDecoder, SmtpReply};
pub use connection::{Connection, ConnectionError, Timeouts};
pub use filter::{Client, EndOfMessage, Filter, Modification, Verdict};
pub use macros::{Macros, Stage};
pub use options::{Actions, Event, EventSet, Needs, Negotiated, ProtocolFlags};
pub use pool::{Offload, WorkPool};
pub use session::{Flow, ProtocolError, Session};

/// Limits for one connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest incoming payload accepted; a bigger frame closes the
    /// connection.
    pub max_payload: usize,
    /// How long the MTA may stay silent between frames, take to send one
    /// frame, and take to accept our replies.
    pub timeouts: Timeouts,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_payload: codec::DEFAULT_MAX_PAYLOAD,
            timeouts: Timeouts::default(),
        }
    }
}

/// How a connection ended without error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    /// The MTA sent QUIT.
    Quit,
    /// The MTA closed the socket between frames.
    Closed,
    /// We were asked to shut down and closed while no transaction was in
    /// flight.
    Shutdown,
    /// The server closed this connection, idle longest, to make room for a
    /// new one at the connection limit (see [`server`]).
    Evicted,
}

/// Why a connection was closed early. The server logs this once, naming the
/// peer.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The socket failed: an I/O error, a time limit of [`Timeouts`], the
    /// MTA closing in the middle of a frame, or a frame that does not
    /// decode.
    #[error(transparent)]
    Connection(#[from] ConnectionError),
    /// The MTA broke the protocol (a command out of order, before
    /// negotiation or after QUIT, too many macros), or negotiation found
    /// no common ground with the filter's [`Needs`].
    #[error("protocol violation: {0}")]
    Protocol(#[from] ProtocolError),
    /// The MTA sent this many bytes after QUIT (`Q`), already buffered and
    /// left unread. Everything before QUIT was served normally.
    #[error("{0} bytes sent after QUIT were not read")]
    DataAfterQuit(usize),
    /// The filter panicked while handling the command with this command
    /// byte (`'E'` for end of message), with the panic's message (and its
    /// location, when [`panics::install_hook`] is in place), or the work
    /// pool stopped under an offloaded end of message. The MTA was
    /// answered tempfail if it was waiting for a reply.
    #[error("the filter panicked while handling a '{0}' command; answered tempfail: {1}")]
    FilterPanicked(char, String),
}

/// Serve one milter connection until the MTA quits or closes it, a limit is
/// hit, or `shutdown` is cancelled. On shutdown an idle connection closes at
/// once, and one with a transaction in flight ([`Session::in_transaction`])
/// closes when its message has had its final answer, so no message is cut
/// off in the middle.
///
/// With `offload`, an end of message the filter calls heavy
/// ([`Filter::offload_end_of_message`]) runs on the work pool's threads
/// while this task waits, so that other connections on this thread are not
/// held up (when there are others; see [`Offload`]).
///
/// A panic inside the filter is caught: the MTA gets a tempfail where it
/// waits for a reply, and only this connection closes.
pub async fn serve<S, F>(
    stream: S,
    filter: F,
    limits: Limits,
    offload: Option<Offload>,
    shutdown: CancellationToken,
) -> Result<Ending, ServeError>
where
    S: AsyncRead + AsyncWrite + Unpin,
    F: Filter + 'static,
{
    serve_in(stream, filter, limits, offload, shutdown, None).await
}

/// [`serve`], keeping `place` in the server's roster up to date: idle
/// between transactions, where it may be evicted (and then closes at once,
/// partial frame or not), busy while a transaction is in flight.
pub(crate) async fn serve_in<S, F>(
    stream: S,
    filter: F,
    limits: Limits,
    offload: Option<Offload>,
    shutdown: CancellationToken,
    mut place: Option<&mut server::roster::Place>,
) -> Result<Ending, ServeError>
where
    S: AsyncRead + AsyncWrite + Unpin,
    F: Filter + 'static,
{
    let mut conn = Connection::new(
        stream,
        FrameDecoder::new(limits.max_payload),
        limits.timeouts,
    );
    let _open = offload.as_ref().map(Offload::open_connection);
    let mut session = Session::new(filter);
    let mut replies = Vec::with_capacity(4);
    loop {
        let idle = !session.in_transaction();
        let may_stop_here = idle && !conn.has_partial_frame();
        if may_stop_here {
            conn.release_idle_buffers();
        }
        let command = match place.as_deref_mut() {
            Some(place) if idle => {
                place.idle();
                tokio::select! {
                    biased;
                    _ = shutdown.cancelled(), if may_stop_here => {
                        let _ = conn.shutdown().await;
                        return Ok(Ending::Shutdown);
                    }
                    _ = place.evicted() => {
                        let _ = conn.shutdown().await;
                        return Ok(Ending::Evicted);
                    }
                    command = conn.read_command() => command?,
                }
            }
            Some(place) => {
                place.busy();
                conn.read_command().await?
            }
            None if may_stop_here => {
                tokio::select! {
                    biased;
                    _ = shutdown.cancelled() => {
                        let _ = conn.shutdown().await;
                        return Ok(Ending::Shutdown);
                    }
                    command = conn.read_command() => command?,
                }
            }
            None => conn.read_command().await?,
        };
        let Some(command) = command else {
            return Ok(Ending::Closed);
        };

        replies.clear();
        if matches!(command, Command::EndOfMessage(_))
            && let Some(ready) = session.filter().end_of_message_ready()
        {
            ready.await;
        }
        if matches!(command, Command::EndOfHeaders)
            && let Some(ready) = session.filter().end_of_headers_ready(session.macros())
        {
            ready.await;
        }
        let code = command.code();
        let expects_reply = session.expects_reply(&command);
        let pool = offload.as_ref().and_then(Offload::pool_if_busy);
        let flow = if let Some(pool) = pool.filter(|_| session.offloads(&command)) {
            let mut moved = session;
            let mut out = std::mem::take(&mut replies);
            let job = move || {
                let flow = moved.handle(command, &mut out);
                (moved, out, flow)
            };
            match pool.run(job).await {
                Ok((back, out, flow)) => {
                    session = back;
                    replies = out;
                    flow?
                }
                Err(e) => {
                    // The session went down with the job.
                    if expects_reply {
                        conn.write_replies(&[Reply::Tempfail]).await?;
                    }
                    let message = match e {
                        pool::PoolError::Panicked(message) => message,
                        stopped => stopped.to_string(),
                    };
                    return Err(ServeError::FilterPanicked(code, message));
                }
            }
        } else {
            match panics::catch(|| session.handle(command, &mut replies)) {
                Ok(flow) => flow?,
                Err(message) => {
                    if expects_reply {
                        conn.write_replies(&[Reply::Tempfail]).await?;
                    }
                    return Err(ServeError::FilterPanicked(code, message));
                }
            }
        };
        if let Err(e) = conn.write_replies(&replies).await {
            if let ConnectionError::Encode(reason) = &e {
                // A filter produced something unsendable (a NUL in a header
                // value, an oversize reply): fail this message, not silently.
                tracing::error!(%reason, "could not encode the filter's reply; answering tempfail");
                conn.write_replies(&[Reply::Tempfail]).await?;
            } else {
                return Err(e.into());
            }
        }
        if flow == Flow::Close {
            // Whatever follows QUIT is not read, let alone parsed; said so
            // when it is already here.
            return match conn.buffered() {
                0 => Ok(Ending::Quit),
                extra => Err(ServeError::DataAfterQuit(extra)),
            };
        }
    }
}
