//! A one-way link to a peer broker's RPC port: frames written on one
//! long-lived connection, no answers read. Raft's traffic (the
//! controller's messages and the partition groups' batches) goes this
//! way: a frame that cannot be written is dropped and reported, and Raft
//! resends.
//!
//! Lifecycle and cores: owned by one sender task on the executor that
//! created it; the connection is made on first use and again after a
//! failure, waiting `retry_after` first so a peer that is down is not
//! hammered.

use futures::AsyncWriteExt;
use glommio::net::TcpStream;
use std::future::Future;
use std::time::Duration;
use tracing::{info, warn};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// `fut`, or None once `d` passes.
pub async fn within<T>(d: Duration, fut: impl Future<Output = T>) -> Option<T> {
    futures_lite::future::or(async { Some(fut.await) }, async {
        glommio::timer::sleep(d).await;
        None
    })
    .await
}

pub struct PeerLink {
    /// For log lines: what travels on this link ("controller", "replication").
    what: &'static str,
    peer: u32,
    conn: Option<TcpStream>,
    failing: bool,
    retry_after: Duration,
    write_timeout: Duration,
}

impl PeerLink {
    pub fn new(
        what: &'static str,
        peer: u32,
        retry_after: Duration,
        write_timeout: Duration,
    ) -> Self {
        PeerLink {
            what,
            peer,
            conn: None,
            failing: false,
            retry_after,
            write_timeout,
        }
    }

    /// Write one frame to `addr`, connecting first if needed; false when
    /// it could not be written (the connection is dropped, and the first
    /// failure of a run is logged, as is the recovery).
    pub async fn send(&mut self, addr: &str, frame: &[u8]) -> bool {
        if self.conn.is_none() {
            if self.failing {
                glommio::timer::sleep(self.retry_after).await;
            }
            self.conn = match within(
                CONNECT_TIMEOUT,
                TcpStream::connect_timeout(addr, CONNECT_TIMEOUT),
            )
            .await
            {
                Some(Ok(s)) => {
                    let _ = s.set_nodelay(true);
                    Some(s)
                }
                _ => None,
            };
        }
        let ok = match self.conn.as_mut() {
            Some(c) => matches!(
                within(self.write_timeout, c.write_all(frame)).await,
                Some(Ok(()))
            ),
            None => false,
        };
        let (peer, what) = (self.peer, self.what);
        if !ok {
            self.conn = None;
            if !self.failing {
                warn!(peer, %addr, "{what} peer unreachable; retrying");
            }
        } else if self.failing {
            info!(peer, %addr, "{what} peer reachable again");
        }
        self.failing = !ok;
        ok
    }
}
