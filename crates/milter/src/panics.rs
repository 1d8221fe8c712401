//! Panics: caught where they can be answered, logged once where they are
//! not.
//!
//! The default panic hook writes two or more lines to stderr (never to
//! syslog) before anyone has a chance to catch the panic, and then whoever
//! catches it logs again. [`install_hook`] replaces it: a panic that a
//! [`catch`] on the same thread is waiting for is only recorded, and the
//! catcher logs it once with what it knows (the connection, the peer); any
//! other panic is logged as one line through `tracing`.
//!
//! This module never adds to a panic message anything but its location: a
//! message is whatever the code that panicked wrote, so a filter that
//! handles secrets must keep them out of its panic messages. It never
//! stops a panic on its own: only a [`catch`] (or a [`CatchUnwind`]) does.

use std::cell::{Cell, RefCell};
use std::panic::{AssertUnwindSafe, PanicHookInfo};

thread_local! {
    /// How many [`catch`]es are waiting on this thread.
    static CATCHING: Cell<usize> = const { Cell::new(0) };
    /// What the hook recorded for the innermost of them.
    static CAUGHT: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// Replace the default panic hook (see the module documentation).
pub fn install_hook() {
    std::panic::set_hook(Box::new(|info| {
        let text = hook_message(info);
        if CATCHING.with(Cell::get) > 0 {
            CAUGHT.with(|c| *c.borrow_mut() = Some(text));
        } else {
            let thread = std::thread::current();
            tracing::error!(thread = thread.name().unwrap_or("unnamed"), "panic: {text}");
        }
    }));
}

/// Run `f`, catching a panic: `Err` carries its message and location (only
/// the message when the hook is not installed, as in unit tests).
pub fn catch<R>(f: impl FnOnce() -> R) -> Result<R, String> {
    CATCHING.with(|c| c.set(c.get() + 1));
    let result = std::panic::catch_unwind(AssertUnwindSafe(f));
    CATCHING.with(|c| c.set(c.get() - 1));
    result.map_err(|payload| {
        CAUGHT
            .with(|c| c.borrow_mut().take())
            .unwrap_or_else(|| payload_text(payload.as_ref()).to_string())
    })
}

fn hook_message(info: &PanicHookInfo<'_>) -> String {
    let message = payload_text(info.payload());
    match info.location() {
        Some(at) => format!("{message} (at {}:{})", at.file(), at.line()),
        None => message.to_string(),
    }
}

fn payload_text(payload: &(dyn std::any::Any + Send)) -> &str {
    if let Some(s) = payload.downcast_ref::<&str>() {
        s
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s
    } else {
        "(a panic without a message)"
    }
}

/// A future that turns a panic while it is polled into `Err(message)`.
/// Dropping the inner future after a panic is left to the caller: it is
/// dropped with this one.
pub struct CatchUnwind<F> {
    inner: std::pin::Pin<Box<F>>,
}

impl<F: Future> CatchUnwind<F> {
    /// Watch `inner` for panics. It is boxed, so that `CatchUnwind` is
    /// `Unpin` whatever `F` is.
    pub fn new(inner: F) -> Self {
        CatchUnwind {
            inner: Box::pin(inner),
        }
    }
}

impl<F: Future> Future for CatchUnwind<F> {
    type Output = Result<F::Output, String>;

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        let inner = self.inner.as_mut();
        match catch(move || inner.poll(cx)) {
            Ok(std::task::Poll::Pending) => std::task::Poll::Pending,
            Ok(std::task::Poll::Ready(value)) => std::task::Poll::Ready(Ok(value)),
            Err(message) => std::task::Poll::Ready(Err(message)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn catch_returns_the_message() {
        assert_eq!(catch(|| 3), Ok(3));
        let err = catch(|| -> u8 { panic!("boom {}", 7) }).unwrap_err();
        assert!(err.contains("boom 7"), "{err}");
        assert_eq!(CATCHING.with(Cell::get), 0);
    }

    #[tokio::test]
    async fn a_panicking_future_is_an_error() {
        let ok = CatchUnwind::new(async { 5 }).await;
        assert_eq!(ok, Ok(5));
        let err = CatchUnwind::new(async {
            tokio::task::yield_now().await;
            panic!("in a future")
        })
        .await;
        let err: Result<(), String> = err;
        assert!(err.unwrap_err().contains("in a future"));
    }
}
