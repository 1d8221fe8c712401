//! Moving frames over one socket.
//!
//! [`Connection`] owns the stream and its buffers: it reads until the
//! decoder has a whole [`Command`], and writes a batch of [`Reply`]s as one
//! buffer in one `write_all` (a reply split across writes waits for the
//! peer's delayed ACK). It enforces the time limits: how long the MTA may
//! stay silent between frames, how long one frame may take to arrive once
//! it has started (so a client trickling bytes cannot hold a connection),
//! and how long a write may block. It knows nothing of what the commands
//! mean.

use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::{Instant, timeout, timeout_at};

use super::codec::{Command, EncodeError, FrameDecoder, FrameError, Reply};

/// Read buffer of a connection once its peer speaks: enough for a whole
/// small message's frames. An idle connection (nothing buffered, between
/// transactions) keeps none: a flood of silent connections costs no
/// buffers.
const READ_BUFFER: usize = 8 * 1024;

/// The first read of a connection holding no buffer goes here (on the
/// task's own state), and into a [`READ_BUFFER`] once bytes arrived.
const FIRST_READ: usize = 512;

/// Spare room ensured before each read, so that one read takes what the
/// peer sent instead of trickling into the end of the buffer.
const READ_SPARE: usize = 4 * 1024;

/// Time limits for one connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// Silence allowed between frames. Postfix keeps a milter connection
    /// open for a whole SMTP session, idle while its client thinks.
    pub idle: Duration,
    /// Time allowed for one frame to arrive completely once its first byte
    /// is in.
    pub frame: Duration,
    /// Time allowed for the MTA to take our replies.
    pub write: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            // libmilter's default read timeout.
            idle: Duration::from_secs(7210),
            frame: Duration::from_secs(30),
            write: Duration::from_secs(30),
        }
    }
}

/// Why reading or writing a connection failed. Each of these ends the
/// connection.
#[derive(Debug, thiserror::Error)]
pub enum ConnectionError {
    /// A frame does not decode: a bad length, an unknown command byte, a
    /// malformed payload.
    #[error(transparent)]
    Frame(#[from] FrameError),
    /// The MTA closed the socket in the middle of a frame, of which this
    /// many bytes had arrived.
    #[error("connection closed in the middle of a frame ({0} bytes buffered)")]
    Truncated(usize),
    /// No frame started within [`Timeouts::idle`] (this long).
    #[error("no frame for {0:?}; closing an idle connection")]
    IdleTimeout(Duration),
    /// A frame started but was not complete within [`Timeouts::frame`]
    /// (this long).
    #[error("a frame took longer than {0:?} to arrive")]
    FrameTimeout(Duration),
    /// The MTA did not take our replies within [`Timeouts::write`] (this
    /// long).
    #[error("the MTA did not take our reply within {0:?}")]
    WriteTimeout(Duration),
    /// A reply could not be encoded; nothing of its batch was written.
    #[error("could not encode a reply: {0}")]
    Encode(#[from] EncodeError),
    /// Reading from or writing to the socket failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// One milter socket: buffered, framed, time-limited.
pub struct Connection<S> {
    stream: S,
    read_buf: BytesMut,
    write_buf: BytesMut,
    decoder: FrameDecoder,
    timeouts: Timeouts,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Connection<S> {
    /// Frame `stream` with `decoder` (which sets the largest payload
    /// accepted) under `timeouts`. The buffers start empty, take 8 KiB to
    /// read once the peer speaks, and grow to fit the frames.
    pub fn new(stream: S, decoder: FrameDecoder, timeouts: Timeouts) -> Self {
        Connection {
            stream,
            read_buf: BytesMut::new(),
            write_buf: BytesMut::new(),
            decoder,
            timeouts,
        }
    }

    /// Whether part of a frame is waiting in the buffer.
    pub fn has_partial_frame(&self) -> bool {
        !self.read_buf.is_empty()
    }

    /// How many bytes are buffered and not yet taken as a command.
    pub fn buffered(&self) -> usize {
        self.read_buf.len()
    }

    /// Give back the buffers when nothing is buffered: tens of thousands
    /// of idle connections must not each keep 8 KiB, let alone the 64 KiB
    /// their last body chunk took.
    pub fn release_idle_buffers(&mut self) {
        if self.read_buf.is_empty() {
            self.read_buf = BytesMut::new();
        }
        self.write_buf = BytesMut::new();
    }

    /// Read the next command. `Ok(None)` is a clean end of stream between
    /// frames. Cancel-safe: bytes read so far stay buffered.
    pub async fn read_command(&mut self) -> Result<Option<Command>, ConnectionError> {
        let mut frame_deadline = None;
        loop {
            if let Some(command) = self.decoder.decode(&mut self.read_buf)? {
                return Ok(Some(command));
            }
            if self.read_buf.capacity() == 0 {
                // Idle and holding no buffer: wait for the first bytes
                // without one. Cancel-safe: nothing is read unless the
                // read completes.
                let mut first = [0u8; FIRST_READ];
                let read = timeout(self.timeouts.idle, self.stream.read(&mut first))
                    .await
                    .map_err(|_| ConnectionError::IdleTimeout(self.timeouts.idle))??;
                if read == 0 {
                    return Ok(None);
                }
                self.read_buf = BytesMut::with_capacity(READ_BUFFER);
                self.read_buf.extend_from_slice(&first[..read]);
                continue;
            }
            if !self.read_buf.is_empty() && frame_deadline.is_none() {
                frame_deadline = Some(Instant::now() + self.timeouts.frame);
            }
            if self.read_buf.capacity() - self.read_buf.len() < READ_SPARE {
                // Reclaims the space of frames already taken when it can.
                self.read_buf.reserve(READ_SPARE);
            }
            let read = match frame_deadline {
                Some(deadline) => timeout_at(deadline, self.stream.read_buf(&mut self.read_buf))
                    .await
                    .map_err(|_| ConnectionError::FrameTimeout(self.timeouts.frame))?,
                None => timeout(self.timeouts.idle, self.stream.read_buf(&mut self.read_buf))
                    .await
                    .map_err(|_| ConnectionError::IdleTimeout(self.timeouts.idle))?,
            }?;
            if read == 0 {
                return if self.read_buf.is_empty() {
                    Ok(None)
                } else {
                    Err(ConnectionError::Truncated(self.read_buf.len()))
                };
            }
        }
    }

    /// Encode `replies` into one buffer and write it in one go. Nothing is
    /// written if any reply fails to encode.
    pub async fn write_replies(&mut self, replies: &[Reply]) -> Result<(), ConnectionError> {
        if replies.is_empty() {
            return Ok(());
        }
        self.write_buf.clear();
        for reply in replies {
            if let Err(e) = reply.encode(&mut self.write_buf) {
                self.write_buf.clear();
                return Err(e.into());
            }
        }
        timeout(self.timeouts.write, self.stream.write_all(&self.write_buf))
            .await
            .map_err(|_| ConnectionError::WriteTimeout(self.timeouts.write))??;
        Ok(())
    }

    /// Flush and shut down the write side.
    pub async fn shutdown(&mut self) -> std::io::Result<()> {
        self.stream.shutdown().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::tests::frame;
    use tokio::io::duplex;

    fn quick() -> Timeouts {
        Timeouts {
            idle: Duration::from_millis(200),
            frame: Duration::from_millis(100),
            write: Duration::from_millis(100),
        }
    }

    #[tokio::test]
    async fn reads_frames_split_across_writes() {
        let (mut mta, ours) = duplex(64);
        let mut conn = Connection::new(ours, FrameDecoder::default(), quick());
        let bytes = frame(b'H', b"client.example\x00");
        tokio::spawn(async move {
            for b in bytes {
                mta.write_all(&[b]).await.unwrap();
            }
            mta.write_all(&frame(b'Q', b"")).await.unwrap();
        });
        assert!(matches!(
            conn.read_command().await.unwrap(),
            Some(Command::Helo { .. })
        ));
        assert_eq!(conn.read_command().await.unwrap(), Some(Command::Quit));
        assert_eq!(conn.read_command().await.unwrap(), None);
    }

    #[tokio::test]
    async fn end_of_stream_inside_a_frame_is_truncation() {
        let (mut mta, ours) = duplex(64);
        let mut conn = Connection::new(ours, FrameDecoder::default(), quick());
        mta.write_all(&frame(b'H', b"abc\x00")[..5]).await.unwrap();
        drop(mta);
        assert!(matches!(
            conn.read_command().await,
            Err(ConnectionError::Truncated(5))
        ));
    }

    #[tokio::test(start_paused = true)]
    async fn trickling_bytes_cannot_hold_a_frame_open() {
        let (mut mta, ours) = duplex(64);
        let mut conn = Connection::new(ours, FrameDecoder::default(), quick());
        tokio::spawn(async move {
            for b in frame(b'H', b"slow-client\x00") {
                mta.write_all(&[b]).await.unwrap();
                tokio::time::sleep(Duration::from_millis(30)).await;
            }
        });
        assert!(matches!(
            conn.read_command().await,
            Err(ConnectionError::FrameTimeout(_))
        ));
    }

    #[tokio::test(start_paused = true)]
    async fn silent_peer_hits_the_idle_timeout() {
        let (_mta, ours) = duplex(64);
        let mut conn = Connection::new(ours, FrameDecoder::default(), quick());
        assert!(matches!(
            conn.read_command().await,
            Err(ConnectionError::IdleTimeout(_))
        ));
    }

    #[tokio::test]
    async fn idle_connection_gives_back_a_grown_buffer() {
        let (mut mta, ours) = duplex(1 << 20);
        let mut conn = Connection::new(ours, FrameDecoder::default(), quick());
        mta.write_all(&frame(b'B', &[b'x'; 65535])).await.unwrap();
        assert!(matches!(
            conn.read_command().await,
            Ok(Some(Command::Body(_)))
        ));
        conn.release_idle_buffers();
        assert_eq!(conn.read_buf.capacity(), 0);
        assert_eq!(conn.write_buf.capacity(), 0);
        // A partial frame is never thrown away.
        mta.write_all(&frame(b'B', &[b'y'; 65535])[..40_000])
            .await
            .unwrap();
        let read = timeout(Duration::from_millis(20), conn.read_command()).await;
        assert!(read.is_err(), "the frame is not complete yet");
        conn.release_idle_buffers();
        assert!(conn.has_partial_frame());
        mta.write_all(&frame(b'B', &[b'y'; 65535])[40_000..])
            .await
            .unwrap();
        assert!(
            matches!(conn.read_command().await, Ok(Some(Command::Body(b))) if b.len() == 65535)
        );
    }

    #[tokio::test]
    async fn a_batch_of_replies_is_one_buffer() {
        let (mut mta, ours) = duplex(4096);
        let mut conn = Connection::new(ours, FrameDecoder::default(), quick());
        conn.write_replies(&[
            Reply::AddHeader {
                name: bytes::Bytes::from_static(b"X"),
                value: bytes::Bytes::from_static(b"y"),
            },
            Reply::Continue,
        ])
        .await
        .unwrap();
        let mut got = vec![0u8; 4 + 1 + 4 + 4 + 1];
        mta.read_exact(&mut got).await.unwrap();
        assert_eq!(&got[4..5], b"h");
        assert_eq!(&got[13..14], b"c");
    }
}
