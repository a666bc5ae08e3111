//! Access lines gathered per worker thread and written a few at a time, after the answers.
//!
//! Written one by one, each request's line was a `write(2)` on the request's path: on one
//! connection, between reading the registry's answer and sending it to the client (the line is
//! made when the response head is ready, before hyper writes it), so every answer waited for
//! the log; at 64 connections it was one syscall in seven. nginx writes its line after the
//! answer. Here a worker thread that opted in ([`gather_on_this_thread`]) appends its lines to
//! its own buffer, which is written:
//! - when the worker's runtime has nothing left to run and is about to wait for events
//!   ([`flush_this_thread`] is its `on_thread_park` hook): on one connection that is right
//!   after the answer went out, so the line is not later than before by more than the send;
//! - when the buffer holds [`MAX_PENDING`] bytes, or a new line finds the oldest one
//!   [`MAX_DELAY`] old (a worker too busy to ever wait);
//! - [`MAX_DELAY`] after a line came, by [`flush_within_bound`] (a worker busy with streams
//!   and making no lines);
//! - when the thread ends (the guard's `Drop`, unwinding included), and from any thread at
//!   an abrupt exit ([`flush_everywhere`], before `std::process::exit`).
//!
//! Lines of one connection stay in order (a connection lives on one worker). Each `write`
//! carries whole lines and at most [`PIPE_BUF`] bytes unless one line is longer, so lines of
//! two workers never interleave on a pipe (the kernel keeps such a write whole), as with one
//! line per write. The lock is the worker's own: taken by another thread only in
//! [`flush_everywhere`], so it never waits.

use std::cell::RefCell;
use std::fs::File;
use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::task::{Poll, Waker};
use std::time::{Duration, SystemTime};

/// The longest a gathered line waits before it is written (give or take the worker's
/// scheduling).
pub const MAX_DELAY: Duration = Duration::from_millis(50);

/// Bytes gathered before they are written whatever else happens.
const MAX_PENDING: usize = 16 * 1024;

/// The largest write a pipe keeps whole (POSIX's minimum, Linux's value).
const PIPE_BUF: usize = 4096;

/// One worker's gathered lines.
struct Pending {
    lines: Vec<u8>,
    /// When the oldest of `lines` was made (its timestamp's clock: no second clock read).
    since: Option<SystemTime>,
}

/// A worker's gathered lines, behind a lock only [`flush_everywhere`] shares.
type Shared = Mutex<Pending>;

/// What the thread gathers into, and the periodic flusher waiting for a first line.
#[derive(Default)]
struct Local {
    pending: Option<Arc<Shared>>,
    /// [`flush_within_bound`]'s task, while it waits for a line to come.
    flusher: Option<Waker>,
    /// Lines were gathered since this thread last wrote them.
    dirty: bool,
}

thread_local! {
    static LOCAL: RefCell<Local> = RefCell::new(Local::default());
}

/// Every gathering thread's buffer, for [`flush_everywhere`].
fn everyone() -> &'static Mutex<Vec<Weak<Shared>>> {
    static EVERYONE: OnceLock<Mutex<Vec<Weak<Shared>>>> = OnceLock::new();
    EVERYONE.get_or_init(|| Mutex::new(Vec::new()))
}

/// Gathers the current thread's access lines until it is dropped, which writes what is left.
#[must_use = "lines are gathered only while the guard lives"]
pub struct Gathering {
    shared: Arc<Shared>,
}

/// From now on this thread's access lines are gathered (see the module documentation). The
/// thread must call [`flush_this_thread`] when it goes idle and run [`flush_within_bound`].
pub fn gather_on_this_thread() -> Gathering {
    let shared = Arc::new(Mutex::new(Pending {
        lines: Vec::new(),
        since: None,
    }));
    if let Ok(mut everyone) = everyone().lock() {
        everyone.retain(|weak| weak.strong_count() > 0);
        everyone.push(Arc::downgrade(&shared));
    }
    LOCAL.with(|local| local.borrow_mut().pending = Some(shared.clone()));
    Gathering { shared }
}

impl Drop for Gathering {
    fn drop(&mut self) {
        let _ = LOCAL.try_with(|local| {
            if let Ok(mut local) = local.try_borrow_mut() {
                local.pending = None;
                local.flusher = None;
            }
        });
        write_out(&self.shared);
    }
}

/// Gather the line `make` writes (one or more whole lines, made at `now`) when this thread
/// gathers; when it does not, `make` comes back for the caller to write the line itself.
pub(super) fn push_with<F: FnOnce(&mut Vec<u8>)>(now: SystemTime, make: F) -> Option<F> {
    LOCAL.with(|local| {
        let Ok(mut local) = local.try_borrow_mut() else {
            return Some(make);
        };
        let Some(shared) = &local.pending else {
            return Some(make);
        };
        let Ok(mut pending) = shared.lock() else {
            return Some(make);
        };
        let since = *pending.since.get_or_insert(now);
        make(&mut pending.lines);
        let age = now.duration_since(since).unwrap_or_default();
        let written = pending.lines.len() >= MAX_PENDING || age >= MAX_DELAY;
        if written {
            write_pending(&mut pending);
        }
        drop(pending);
        local.dirty = !written;
        if let Some(flusher) = local.flusher.take() {
            flusher.wake();
        }
        None
    })
}

#[cfg(test)]
fn push(line: &[u8], now: SystemTime) -> bool {
    push_with(now, |out: &mut Vec<u8>| out.extend_from_slice(line)).is_none()
}

/// Write this thread's gathered lines now (its runtime's `on_thread_park` hook, called each
/// time the worker is about to wait: nothing but a flag's check when no line came since).
pub fn flush_this_thread() {
    let _ = LOCAL.try_with(|local| {
        let Ok(mut local) = local.try_borrow_mut() else {
            return;
        };
        if !std::mem::take(&mut local.dirty) {
            return;
        }
        if let Some(shared) = &local.pending {
            write_out(shared);
        }
    });
}

/// Write every thread's gathered lines: before the process exits without ending its threads.
pub fn flush_everywhere() {
    let all: Vec<Arc<Shared>> = match everyone().lock() {
        Ok(everyone) => everyone.iter().filter_map(Weak::upgrade).collect(),
        Err(_) => return,
    };
    for shared in all {
        write_out(&shared);
    }
}

/// Runs for the thread's life on its runtime: writes its lines at most [`MAX_DELAY`] after
/// they came, even while the runtime never goes idle. Sleeps without a timer while nothing is
/// gathered.
pub async fn flush_within_bound() {
    loop {
        std::future::poll_fn(|cx| {
            LOCAL.with(|local| {
                let Ok(mut local) = local.try_borrow_mut() else {
                    return Poll::Ready(());
                };
                let waiting = local
                    .pending
                    .as_ref()
                    .and_then(|shared| shared.lock().ok().map(|p| p.lines.is_empty()));
                match waiting {
                    // Not gathering: nothing to do, ever.
                    None => Poll::Pending,
                    Some(true) => {
                        local.flusher = Some(cx.waker().clone());
                        Poll::Pending
                    }
                    Some(false) => Poll::Ready(()),
                }
            })
        })
        .await;
        tokio::time::sleep(MAX_DELAY).await;
        flush_this_thread();
    }
}

fn write_out(shared: &Shared) {
    // A poisoned lock: a panic while appending; the bytes are still whole lines or a prefix.
    let mut pending = match shared.lock() {
        Ok(pending) => pending,
        Err(poisoned) => poisoned.into_inner(),
    };
    write_pending(&mut pending);
}

fn write_pending(pending: &mut Pending) {
    pending.since = None;
    if pending.lines.is_empty() {
        return;
    }
    if let Some(file) = super::line::output() {
        write_lines(file, &pending.lines);
    }
    pending.lines.clear();
}

/// Write `lines` (whole lines) in writes of whole lines of at most [`PIPE_BUF`] bytes, or one
/// longer line alone. A failed log write is not a request's error: the rest is dropped.
fn write_lines(mut file: &File, mut lines: &[u8]) {
    while !lines.is_empty() {
        let end = chunk_end(lines);
        if file.write_all(&lines[..end]).is_err() {
            return;
        }
        lines = &lines[end..];
    }
}

/// Where the first write of `lines` ends: after the last line end within [`PIPE_BUF`] bytes,
/// else after the first line end (a line longer than that goes alone), else everything.
fn chunk_end(lines: &[u8]) -> usize {
    if lines.len() <= PIPE_BUF {
        return lines.len();
    }
    if let Some(at) = lines[..PIPE_BUF].iter().rposition(|&b| b == b'\n') {
        return at + 1;
    }
    lines
        .iter()
        .position(|&b| b == b'\n')
        .map_or(lines.len(), |at| at + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_carry_whole_lines_within_a_pipe_buffer() {
        let line = [b"x".repeat(99), b"\n".to_vec()].concat();
        let lines = line.repeat(100);
        let end = chunk_end(&lines);
        assert_eq!(end, 4000);
        assert_eq!(chunk_end(&lines[..300]), 300);
        let long = [b"y".repeat(5000), b"\n".to_vec(), line.clone()].concat();
        assert_eq!(chunk_end(&long), 5001);
        assert_eq!(chunk_end(&b"z".repeat(5000)), 5000);
    }

    #[test]
    fn a_thread_not_gathering_writes_its_own_lines() {
        std::thread::spawn(|| assert!(!push(b"line\n", SystemTime::now())))
            .join()
            .unwrap();
    }

    #[test]
    fn gathered_lines_wait_until_flushed_and_the_guard_writes_the_rest() {
        std::thread::spawn(|| {
            let guard = gather_on_this_thread();
            assert!(push(b"one\n", SystemTime::now()));
            assert!(push(b"two\n", SystemTime::now()));
            let gathered = guard.shared.lock().unwrap().lines.clone();
            assert_eq!(gathered, b"one\ntwo\n");
            flush_this_thread();
            assert!(guard.shared.lock().unwrap().lines.is_empty());
            assert!(push(b"three\n", SystemTime::now()));
            let shared = guard.shared.clone();
            drop(guard);
            assert!(shared.lock().unwrap().lines.is_empty());
            assert!(!push(b"four\n", SystemTime::now()));
        })
        .join()
        .unwrap();
    }
}
