//! One well-behaved milter conversation with the daemon under test: the
//! milter crate's MTA-side client sends a message the way Postfix does,
//! from 127.0.0.1, and the answer must carry a DKIM-Signature.

use std::net::SocketAddr;
use std::time::Duration;

use milter::Reply;
use milter::client::{self, ClientError, MacroValues, MilterClient, Outcome};

/// Sends one example.com message to the milter at `addr` with protocol
/// version 6; `Err` says what went wrong, including no answer `within`.
pub fn signed_message(addr: SocketAddr, within: Duration) -> Result<(), String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let target: milter::server::SocketSpec = format!("inet:{}@{}", addr.port(), addr.ip())
        .parse()
        .map_err(|e| format!("{e}"))?;
    let outcome = runtime.block_on(async {
        tokio::time::timeout(within, async {
            let mut mta = MilterClient::new(client::open(&target).await?, Duration::from_secs(10));
            mta.negotiate(6).await?;
            let values = MacroValues::default();
            mta.open_session(&values, "client").await?;
            let message = crate::message::load_test("a@example.com", "b@example.org", 100);
            let outcome = mta.send_message(&message, "Q1", &values).await?;
            let _ = mta.quit().await;
            Ok::<_, ClientError>(outcome)
        })
        .await
    });
    let outcome = match outcome {
        Ok(Ok(outcome)) => outcome,
        Ok(Err(e)) => return Err(format!("the conversation failed: {e}")),
        Err(_) => return Err(format!("no answer within {within:?}")),
    };
    match &outcome {
        Outcome::Delivered { modifications }
            if modifications.iter().any(
                |m| matches!(m, Reply::InsertHeader { name, .. } if &name[..] == b"DKIM-Signature"),
            ) =>
        {
            Ok(())
        }
        other => Err(format!("not signed: {other:?}")),
    }
}

/// A milter conversation held in the middle of a transaction, as Postfix
/// holds one while its SMTP client is slow to send the message: protocol
/// version 2 (every event answered, so each reply is matched to its
/// command), CONNECT from 127.0.0.1, MAIL, RCPT and a From header sent.
pub struct HeldTransaction {
    stream: std::net::TcpStream,
    flags: milter::ProtocolFlags,
    buf: bytes::BytesMut,
}

impl HeldTransaction {
    /// Opens the conversation up to the From header; `Err` says what went
    /// wrong (each reply is awaited for at most `within`).
    pub fn open(addr: SocketAddr, within: Duration) -> Result<HeldTransaction, String> {
        use milter::{ClientAddress, Command, ProtocolFlags as P};
        let stream = std::net::TcpStream::connect(addr).map_err(|e| format!("connect: {e}"))?;
        stream
            .set_read_timeout(Some(within))
            .map_err(|e| e.to_string())?;
        let mut held = HeldTransaction {
            stream,
            flags: P::empty(),
            buf: bytes::BytesMut::new(),
        };
        let offer = milter::postfix::offer(2).expect("Postfix offers version 2");
        held.send(&Command::Negotiate(offer))?;
        match held.reply()? {
            Reply::Negotiate { protocol, .. } => held.flags = protocol,
            other => return Err(format!("negotiation answered {other:?}")),
        }
        let b = |s: &'static str| bytes::Bytes::from_static(s.as_bytes());
        held.step(
            P::NO_CONNECT,
            &Command::Connect {
                hostname: b("localhost"),
                address: ClientAddress::Ip("127.0.0.1:54321".parse().expect("an address")),
            },
        )?;
        held.step(
            P::NO_MAIL,
            &Command::Mail {
                sender: b("<a@example.com>"),
                args: vec![],
            },
        )?;
        held.step(
            P::NO_RCPT,
            &Command::Rcpt {
                recipient: b("<b@example.org>"),
                args: vec![],
            },
        )?;
        held.step(
            P::NO_HEADERS,
            &Command::Header {
                name: b("From"),
                value: b("a@example.com"),
            },
        )?;
        Ok(held)
    }

    /// Sends the rest of the message; `Ok` when the answer at end of
    /// message carries a DKIM-Signature.
    pub fn finish_signed(mut self) -> Result<(), String> {
        use milter::{Command, ProtocolFlags as P};
        let b = |s: &'static str| bytes::Bytes::from_static(s.as_bytes());
        self.step(
            P::NO_HEADERS,
            &Command::Header {
                name: b("Subject"),
                value: b("held"),
            },
        )?;
        self.step(P::NO_END_OF_HEADERS, &Command::EndOfHeaders)?;
        self.step(P::NO_BODY, &Command::Body(b("held across a flood\r\n")))?;
        self.send(&Command::EndOfMessage(bytes::Bytes::new()))?;
        let mut signed = false;
        loop {
            match self.reply()? {
                Reply::InsertHeader { name, .. } | Reply::AddHeader { name, .. }
                    if &name[..] == b"DKIM-Signature" =>
                {
                    signed = true;
                }
                Reply::Continue | Reply::Accept if signed => return Ok(()),
                Reply::Continue | Reply::Accept => {
                    return Err("answered without a signature".into());
                }
                Reply::Progress => {}
                Reply::InsertHeader { .. } | Reply::AddHeader { .. } => {}
                other => return Err(format!("end of message answered {other:?}")),
            }
        }
    }

    /// Sends `command` unless the milter asked not to see it (`skip`), and
    /// expects "continue".
    fn step(
        &mut self,
        skip: milter::ProtocolFlags,
        command: &milter::Command,
    ) -> Result<(), String> {
        if self.flags.contains(skip) {
            return Ok(());
        }
        self.send(command)?;
        match self.reply()? {
            Reply::Continue => Ok(()),
            other => Err(format!("'{}' answered {other:?}", command.code())),
        }
    }

    fn send(&mut self, command: &milter::Command) -> Result<(), String> {
        use std::io::Write as _;
        let mut frame = bytes::BytesMut::new();
        command.encode(&mut frame).map_err(|e| e.to_string())?;
        self.stream
            .write_all(&frame)
            .map_err(|e| format!("send '{}': {e}", command.code()))
    }

    fn reply(&mut self) -> Result<Reply, String> {
        use std::io::Read as _;
        let decoder = milter::ReplyDecoder::default();
        let mut chunk = [0u8; 4096];
        loop {
            if let Some(reply) = decoder.decode(&mut self.buf).map_err(|e| e.to_string())? {
                return Ok(reply);
            }
            match self.stream.read(&mut chunk) {
                Ok(0) => return Err("the milter closed the connection".into()),
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) => return Err(format!("no reply: {e}")),
            }
        }
    }
}
