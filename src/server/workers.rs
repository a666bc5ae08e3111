//! Worker threads: one single-threaded tokio runtime per core, each serving the connections
//! handed to it from start to end.
//!
//! Why not one work-stealing runtime: a proxied request is two tasks (the client's connection
//! and the pooled registry connection) that wake each other four times. On a work-stealing
//! runtime those tasks drift between threads, every wake-up may cost a futex and an idle
//! worker woken to steal, and the pooled connection lives wherever it was first used. Here a
//! connection, the registry connections it borrows (see `proxy::forward`) and their timers stay
//! on one thread. Measured against a static upstream at 64 connections: about a quarter less
//! CPU per request (BENCHMARKS.md has the figures).
//!
//! The accept loop stays on the caller's runtime and hands each accepted socket to the worker
//! with the fewest open connections (keep-alive connections live long, so round robin would
//! drift). Nothing here decides when to stop: the caller drains, then drops [`Workers`] with
//! [`Workers::join`], which ends the threads and cuts whatever is still open.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use tokio::sync::mpsc;

use crate::telemetry::gather;

/// A connection to serve: built on the worker's thread (so its socket registers with that
/// thread's reactor), then spawned there.
pub type Job = Box<dyn FnOnce() -> Pin<Box<dyn Future<Output = ()> + Send>> + Send>;

/// The worker threads.
pub struct Workers {
    workers: Vec<Worker>,
    threads: Vec<JoinHandle<()>>,
}

struct Worker {
    jobs: mpsc::UnboundedSender<Job>,
    /// Connections open on this worker.
    open: Arc<AtomicUsize>,
}

/// Decrements a worker's open count when its connection ends, however it ends.
struct OpenGuard(Arc<AtomicUsize>);

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Workers {
    /// Start `count` worker threads (at least one).
    pub fn start(count: usize) -> io::Result<Workers> {
        let count = count.max(1);
        let mut workers = Vec::with_capacity(count);
        let mut threads = Vec::with_capacity(count);
        for index in 0..count {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                // The access lines gathered while the worker ran go out before it waits for
                // events: after the answers they are about (see `telemetry::gather`).
                .on_thread_park(gather::flush_this_thread)
                .build()?;
            let (jobs, mut queue) = mpsc::unbounded_channel::<Job>();
            let thread = std::thread::Builder::new()
                .name(format!("worker-{index}"))
                .spawn(move || {
                    // Dropped last, also when unwinding: writes the lines still gathered.
                    let _gathering = gather::gather_on_this_thread();
                    runtime.block_on(async move {
                        tokio::spawn(gather::flush_within_bound());
                        while let Some(job) = queue.recv().await {
                            tokio::spawn(job());
                        }
                    });
                    // Connections still open now are past the shutdown grace: cut them.
                    runtime.shutdown_background();
                })?;
            workers.push(Worker {
                jobs,
                open: Arc::new(AtomicUsize::new(0)),
            });
            threads.push(thread);
        }
        Ok(Workers { workers, threads })
    }

    /// How many threads serve connections.
    pub fn len(&self) -> usize {
        self.workers.len()
    }

    /// Hand a connection to the least busy worker. `serve` runs on the worker's thread and
    /// returns the connection's future.
    pub fn dispatch<F, Fut>(&self, serve: F)
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let Some(worker) = self
            .workers
            .iter()
            .min_by_key(|worker| worker.open.load(Ordering::Relaxed))
        else {
            return;
        };
        worker.open.fetch_add(1, Ordering::Relaxed);
        let guard = OpenGuard(worker.open.clone());
        let job: Job = Box::new(move || {
            Box::pin(async move {
                let _guard = guard;
                serve().await;
            })
        });
        // Fails only once the worker has stopped, which happens after `join`; the job (and the
        // connection in it) is then dropped, which closes the socket.
        let _ = worker.jobs.send(job);
    }

    /// Stop the workers: connections still open are cut. Call after draining.
    pub fn join(self) {
        drop(self.workers);
        for thread in self.threads {
            let _ = thread.join();
        }
    }
}
