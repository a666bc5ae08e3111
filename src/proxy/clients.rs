//! One pooled registry client per thread.
//!
//! hyper-util's client drives each registry connection as a task on the runtime that opened
//! it, and its clones share one idle pool. With the server's single-threaded workers (see
//! `server::workers`) a shared pool would hand a request on one worker a connection driven by
//! another: a cross-thread wake-up each way, per request, the very cost the workers exist to
//! avoid. So each thread builds its own client from the same connector on first use, and keeps
//! it as long as the [`PerThread`] it came from lives. The gateway builds one for its life; a
//! program embedding it may build and drop several, and a dropped one's clients go when
//! another is first used on that thread.

use std::cell::RefCell;
use std::sync::{Arc, Weak};

use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::{Builder, Client};

use crate::body::Body;

/// The client type: HTTP/1.1, or HTTP/2 when an https registry offers it.
pub type HttpClient = Client<HttpsConnector<HttpConnector>, Body>;

/// How to build a client; each thread builds its own from it.
pub struct PerThread {
    builder: Builder,
    connector: HttpsConnector<HttpConnector>,
}

thread_local! {
    /// This thread's clients, by the `PerThread` they were built from (usually one).
    static CLIENTS: RefCell<Vec<(Weak<PerThread>, HttpClient)>> = const { RefCell::new(Vec::new()) };
}

impl PerThread {
    pub fn new(builder: Builder, connector: HttpsConnector<HttpConnector>) -> Arc<PerThread> {
        Arc::new(PerThread { builder, connector })
    }

    /// Run `f` with this thread's client, building it on first use.
    pub fn with<R>(self: &Arc<Self>, f: impl FnOnce(&HttpClient) -> R) -> R {
        CLIENTS.with_borrow_mut(|clients| {
            // A `Weak` keeps its allocation, so no new `PerThread` can share a dead one's address.
            let index = match clients
                .iter()
                .position(|(owner, _)| std::ptr::eq(owner.as_ptr(), Arc::as_ptr(self)))
            {
                Some(index) => index,
                None => {
                    // First use on this thread: drop the clients of dropped `PerThread`s.
                    clients.retain(|(owner, _)| owner.strong_count() > 0);
                    let client = self.builder.build(self.connector.clone());
                    clients.push((Arc::downgrade(self), client));
                    clients.len() - 1
                }
            };
            f(&clients[index].1)
        })
    }
}
