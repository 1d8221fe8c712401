//! A fixed set of threads for filter work too heavy for the threads that
//! move bytes (a private-key operation takes 0.3 to 5 ms).
//!
//! Connections run on the async runtime's few threads; a filter callback
//! that computes for a millisecond holds up every other connection on that
//! thread, so that a message needing no work at all waits behind the
//! signing of others. [`WorkPool::run`] hands such a job to one of a fixed
//! number of threads (one per processor: more would only take turns on the
//! same processors) in arrival order and awaits its result, leaving the
//! runtime free to answer everyone else.
//!
//! The pool knows nothing of milters: a job is any closure, and it never
//! looks at what a job returns. It never runs a job on the caller's
//! thread, nor more jobs at once than it has threads.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};

type Job = Box<dyn FnOnce() + Send>;

/// Why a job gave no result.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PoolError {
    /// With the panic's message.
    #[error("the job panicked: {0}")]
    Panicked(String),
    /// The job was not taken or gave no result because the pool's threads
    /// have exited.
    #[error("the work pool has stopped")]
    Stopped,
}

/// Threads that run jobs in arrival order. Dropping the pool lets the
/// threads finish the jobs already queued and exit.
pub struct WorkPool {
    sender: mpsc::Sender<Job>,
    threads: usize,
}

impl std::fmt::Debug for WorkPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkPool")
            .field("threads", &self.threads)
            .finish()
    }
}

impl WorkPool {
    /// Start `threads` threads (at least one), named `name-N`.
    pub fn new(threads: usize, name: &str) -> std::io::Result<WorkPool> {
        let threads = threads.max(1);
        let (sender, receiver) = mpsc::channel::<Job>();
        let receiver = Arc::new(Mutex::new(receiver));
        for n in 0..threads {
            let receiver = Arc::clone(&receiver);
            std::thread::Builder::new()
                .name(format!("{name}-{n}"))
                .spawn(move || {
                    loop {
                        // The lock is held only to take one job, never while
                        // running it.
                        let job = match receiver.lock() {
                            Ok(receiver) => receiver.recv(),
                            Err(_) => return,
                        };
                        match job {
                            Ok(job) => job(),
                            Err(_) => return,
                        }
                    }
                })?;
        }
        Ok(WorkPool { sender, threads })
    }

    /// How many threads the pool runs (at least one).
    pub fn threads(&self) -> usize {
        self.threads
    }

    /// Run `job` on a pool thread and wait for its result without holding
    /// up the caller's thread. A panic in the job is caught and reported.
    pub async fn run<T, J>(&self, job: J) -> Result<T, PoolError>
    where
        T: Send + 'static,
        J: FnOnce() -> T + Send + 'static,
    {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(move || {
            let result = crate::panics::catch(job);
            let _ = tx.send(result.map_err(PoolError::Panicked));
        });
        self.sender.send(job).map_err(|_| PoolError::Stopped)?;
        rx.await.unwrap_or(Err(PoolError::Stopped))
    }
}

/// A work pool and when to use it. Heavy work goes to the pool only while
/// more connections are open than the runtime has threads: with fewer,
/// every connection can have a thread to itself, nobody waits behind the
/// work, and the hand-off would only add a thread switch to the message
/// (measured: about 60 us of CPU and latency per RSA signature).
#[derive(Debug, Clone)]
pub struct Offload {
    pool: Arc<WorkPool>,
    open: Arc<AtomicUsize>,
    inline_up_to: usize,
}

impl Offload {
    /// Use `pool` once more than `inline_up_to` connections are open.
    pub fn new(pool: Arc<WorkPool>, inline_up_to: usize) -> Offload {
        Offload {
            pool,
            open: Arc::new(AtomicUsize::new(0)),
            inline_up_to,
        }
    }

    /// Count a connection as open until the guard is dropped.
    pub fn open_connection(&self) -> OpenConnection {
        self.open.fetch_add(1, Ordering::Relaxed);
        OpenConnection(Arc::clone(&self.open))
    }

    /// The pool, if heavy work should go there now.
    pub fn pool_if_busy(&self) -> Option<&WorkPool> {
        (self.open.load(Ordering::Relaxed) > self.inline_up_to).then_some(&*self.pool)
    }
}

/// One open connection, as [`Offload`] counts them.
#[derive(Debug)]
pub struct OpenConnection(Arc<AtomicUsize>);

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// One thread per processor the process may use.
pub fn default_threads() -> usize {
    std::thread::available_parallelism().map_or(2, std::num::NonZero::get)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn runs_jobs_on_its_own_threads_and_returns_results() {
        let pool = WorkPool::new(2, "test-work").unwrap();
        assert_eq!(pool.threads(), 2);
        let name = pool
            .run(|| std::thread::current().name().map(String::from))
            .await
            .unwrap();
        assert!(name.unwrap().starts_with("test-work-"));
        let sums = futures_join(&pool).await;
        assert_eq!(sums, (0..20).map(|i| i * 2).collect::<Vec<u64>>());
    }

    async fn futures_join(pool: &WorkPool) -> Vec<u64> {
        let mut out = Vec::new();
        for i in 0..20u64 {
            out.push(pool.run(move || i + i).await.unwrap());
        }
        out
    }

    #[tokio::test]
    async fn a_panicking_job_is_reported_and_the_pool_goes_on() {
        let pool = WorkPool::new(1, "test-panic").unwrap();
        let result: Result<(), _> = pool.run(|| panic!("boom")).await;
        assert!(matches!(result, Err(PoolError::Panicked(m)) if m.contains("boom")));
        assert_eq!(pool.run(|| 7).await, Ok(7));
    }

    #[test]
    fn the_pool_is_used_only_beyond_the_inline_limit() {
        let offload = Offload::new(Arc::new(WorkPool::new(1, "test-limit").unwrap()), 2);
        assert!(offload.pool_if_busy().is_none());
        let a = offload.open_connection();
        let b = offload.open_connection();
        assert!(offload.pool_if_busy().is_none());
        let c = offload.open_connection();
        assert!(offload.pool_if_busy().is_some());
        drop(c);
        assert!(offload.pool_if_busy().is_none());
        drop((a, b));
    }

    #[test]
    fn zero_threads_means_one() {
        assert_eq!(WorkPool::new(0, "test-zero").unwrap().threads(), 1);
        assert!(default_threads() >= 1);
    }
}
