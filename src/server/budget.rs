//! A connection's in-flight bytes: backpressure by not reading.
//!
//! A connection counts the bytes of requests it has read (or started to
//! read) but not yet answered, including answers waiting to be written;
//! its shard counts the same across connections in its
//! [`RequestMemory`](crate::shard::memory::RequestMemory). Over either
//! bound, the connection stops reading its socket until responses go out,
//! so TCP flow control pushes back on the client. Every large request is
//! charged *before* its body is read or allocated (see `conn.rs`).
//!
//! Bound per shard: `max_inflight_bytes_per_shard`, plus one oversized
//! request when nothing else is in flight, plus, per connection, one small
//! request ([`SMALL_REQUEST_BYTES`]) and its answer.

use crate::shard::memory::{Class, Grant, SMALL_REQUEST_BYTES};
use crate::shard::Shard;
use std::cell::Cell;
use std::rc::Rc;

/// A connection's share. Owned by the connection's reader task.
pub struct ConnBudget {
    shard: Rc<Shard>,
    bytes: Rc<Cell<usize>>,
    max_bytes: usize,
}

/// Bytes one request holds; dropping it returns them to the connection
/// and to the shard.
pub struct Permit {
    conn: Rc<Cell<usize>>,
    grant: Grant,
}

impl Drop for Permit {
    fn drop(&mut self) {
        self.conn.set(self.conn.get() - self.grant.bytes());
    }
}

impl Permit {
    /// Hold `more` bytes too (an answer waiting to be written; its size was
    /// bounded when the request was admitted).
    pub fn grow(&mut self, more: usize) {
        self.conn.set(self.conn.get() + more);
        self.grant.grow(more);
    }

    /// Hold exactly `bytes` from now on (see [`Grant::resize`]).
    pub fn resize(&mut self, bytes: usize) {
        self.conn.set(self.conn.get() - self.grant.bytes() + bytes);
        self.grant.resize(bytes);
    }
}

impl ConnBudget {
    pub fn new(shard: Rc<Shard>) -> Self {
        let max_bytes = shard.config.max_inflight_bytes_per_connection;
        ConnBudget {
            shard,
            bytes: Rc::new(Cell::new(0)),
            max_bytes,
        }
    }

    /// Over a bound: something is in flight on this connection and either
    /// the connection or the shard is full. (With nothing in flight, one
    /// small request always goes, so a fresh client is served.)
    fn over(&self) -> bool {
        self.bytes.get() > 0 && (self.bytes.get() >= self.max_bytes || self.shard.memory.is_spent())
    }

    /// Wait until this connection may take a request of `bytes` (of
    /// `class`, for the shard's turns), then charge it. Small requests on
    /// an idle connection are charged at once; anything else waits for room
    /// in the shard's budget.
    pub async fn acquire(&self, bytes: usize, class: Class) -> Permit {
        let start = self.shard.clock.now();
        loop {
            let l = self.shard.memory.released();
            if !self.over() {
                break;
            }
            l.await;
        }
        let grant = if bytes <= SMALL_REQUEST_BYTES && self.bytes.get() == 0 {
            self.shard.memory.charge_now(bytes)
        } else {
            self.shard.memory.acquire(bytes, class).await
        };
        let waited = self.shard.clock.now().saturating_duration_since(start);
        if waited >= std::time::Duration::from_secs(1) {
            // A request held this long is a client that stood still.
            tracing::debug!(
                bytes,
                ?class,
                waited_ms = waited.as_millis() as u64,
                shard_used = self.shard.memory.used(),
                "a request waited long for request memory"
            );
        }
        self.bytes.set(self.bytes.get() + bytes);
        Permit {
            conn: self.bytes.clone(),
            grant,
        }
    }

    /// Wait until the connection may read again.
    pub async fn wait_for_room(&self) {
        loop {
            let l = self.shard.memory.released();
            if !self.over() {
                return;
            }
            l.await;
        }
    }
}
