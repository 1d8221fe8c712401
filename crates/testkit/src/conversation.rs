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
