//! In-flight byte budgets: backpressure by not reading.
//!
//! A connection counts the bytes of requests it has read but not yet
//! answered, and so does its shard, across connections. Over either bound,
//! the connection stops reading its socket until responses go out, so TCP
//! flow control pushes back on the client and memory stays bounded (at most
//! the budget plus one frame per connection).

use crate::shard::Shard;
use std::cell::Cell;
use std::rc::Rc;

/// A connection's share; dropping a [`Permit`] returns its bytes.
pub struct ConnBudget {
    shard: Rc<Shard>,
    bytes: Rc<Cell<usize>>,
    max_bytes: usize,
}

pub struct Permit {
    shard: Rc<Shard>,
    conn: Rc<Cell<usize>>,
    bytes: usize,
}

impl Drop for Permit {
    fn drop(&mut self) {
        self.conn.set(self.conn.get() - self.bytes);
        self.shard
            .inflight_bytes
            .set(self.shard.inflight_bytes.get() - self.bytes);
        self.shard.inflight_event.notify();
    }
}

impl Permit {
    /// Hold `more` bytes too (an answer waiting to be written).
    pub fn grow(&mut self, more: usize) {
        self.conn.set(self.conn.get() + more);
        self.shard
            .inflight_bytes
            .set(self.shard.inflight_bytes.get() + more);
        self.bytes += more;
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

    fn over(&self) -> bool {
        let shard_max = self.shard.config.max_inflight_bytes_per_shard;
        // Something in flight and over a bound: wait. (With nothing in
        // flight, one frame always goes, so a frame bigger than a budget cannot deadlock.)
        self.bytes.get() > 0
            && (self.bytes.get() >= self.max_bytes || self.shard.inflight_bytes.get() >= shard_max)
    }

    /// Wait until this connection may take more, then account `bytes`.
    pub async fn acquire(&self, bytes: usize) -> Permit {
        loop {
            let l = self.shard.inflight_event.listen();
            if !self.over() {
                break;
            }
            l.await;
        }
        self.bytes.set(self.bytes.get() + bytes);
        self.shard
            .inflight_bytes
            .set(self.shard.inflight_bytes.get() + bytes);
        Permit {
            shard: self.shard.clone(),
            conn: self.bytes.clone(),
            bytes,
        }
    }

    /// Whether the next read must wait for budget (used to apply backpressure before reading).
    pub async fn wait_for_room(&self) {
        loop {
            let l = self.shard.inflight_event.listen();
            if !self.over() {
                return;
            }
            l.await;
        }
    }
}
