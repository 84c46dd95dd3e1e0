//! The connection skeleton both protocols share: read length-prefixed
//! frames under budgets and timeouts, hand each to a request handler task,
//! write responses in completion order.

use super::budget::{ConnBudget, Permit};
use crate::shard::Shard;
use bytes::BytesMut;
use futures::channel::mpsc;
use futures::{AsyncReadExt, AsyncWriteExt, StreamExt};
use glommio::net::TcpStream;
use std::rc::Rc;
use std::time::{Duration, Instant};
use tracing::debug;

/// How a protocol frames and serves requests.
pub trait Protocol: 'static {
    /// Total length of the complete frame at the start of `buf`, Ok(None)
    /// if more bytes are needed, Err (with an optional error frame to send
    /// before closing) if the stream cannot go on.
    fn frame_len(&self, buf: &[u8], max: usize) -> Result<Option<usize>, Option<BytesMut>>;
    /// Bytes of budget a request holds while in flight: its own size, plus
    /// (for requests with large answers, such as fetches) what its answer may
    /// take. The answer's real size is added when it is ready.
    fn request_cost(&self, frame: &[u8]) -> usize {
        frame.len()
    }
    /// Serve one frame; return the response bytes, if any. Runs as its own
    /// task; many run concurrently per connection.
    fn handle(
        self: Rc<Self>,
        shard: Rc<Shard>,
        frame: BytesMut,
    ) -> impl std::future::Future<Output = Handled> + 'static;
}

pub enum Handled {
    Respond(BytesMut),
    NoResponse,
    /// Send this, then close the connection.
    Close(Option<BytesMut>),
}

/// Serve a connection until the peer closes, misbehaves or times out.
pub async fn run<P: Protocol>(shard: Rc<Shard>, stream: TcpStream, proto: Rc<P>, peer: String) {
    let _ = stream.set_nodelay(true);
    let (mut reader, mut writer) = futures::io::AsyncReadExt::split(stream);
    let (tx, mut rx) = mpsc::unbounded::<(Option<BytesMut>, bool, Option<Permit>)>();
    let writer_task = glommio::spawn_local(async move {
        while let Some((buf, close, permit)) = rx.next().await {
            if let Some(buf) = buf {
                if writer.write_all(&buf).await.is_err() {
                    return;
                }
            }
            drop(permit);
            if close {
                let _ = writer.close().await;
                return;
            }
        }
    })
    .detach();
    let budget = ConnBudget::new(shard.clone());
    let max = shard.config.max_request_bytes;
    let idle = Duration::from_millis(shard.config.idle_timeout_ms);
    let partial = Duration::from_millis(shard.config.partial_frame_timeout_ms);
    let mut buf = BytesMut::with_capacity(64 << 10);
    let mut frame_started: Option<Instant> = None;
    let mut last_request = Instant::now();
    'conn: loop {
        // Serve every complete frame in the buffer.
        loop {
            match proto.frame_len(&buf, max) {
                Ok(Some(len)) => {
                    let frame = buf.split_to(len);
                    frame_started = None;
                    last_request = Instant::now();
                    let permit = budget.acquire(proto.request_cost(&frame)).await;
                    let (p, s, tx) = (proto.clone(), shard.clone(), tx.clone());
                    glommio::spawn_local(async move {
                        match p.handle(s, frame).await {
                            Handled::Respond(b) => {
                                // Queued answers count too: a client that does
                                // not read stops us reading, not us buffering.
                                let mut permit = permit;
                                permit.grow(b.len());
                                let _ = tx.unbounded_send((Some(b), false, Some(permit)));
                            }
                            Handled::NoResponse => drop(permit),
                            Handled::Close(b) => {
                                let _ = tx.unbounded_send((b, true, Some(permit)));
                            }
                        }
                    })
                    .detach();
                }
                Ok(None) => break,
                Err(reply) => {
                    debug!(%peer, "closing connection: unreadable frame");
                    let _ = tx.unbounded_send((reply, true, None));
                    break 'conn;
                }
            }
        }
        if shard.shutting_down.get() {
            break;
        }
        // Backpressure: do not read while over budget.
        budget.wait_for_room().await;
        if !buf.is_empty() && frame_started.is_none() {
            frame_started = Some(Instant::now());
        }
        let deadline = match frame_started {
            Some(t) => t + partial,
            None => last_request + idle,
        };
        let now = Instant::now();
        if now >= deadline {
            debug!(%peer, partial = frame_started.is_some(), "closing connection: timed out");
            break;
        }
        // Read directly into the buffer's spare room.
        if buf.capacity() - buf.len() < 16 << 10 {
            // Doubling keeps a large frame to a few reads and reallocations.
            buf.reserve((64 << 10).max(buf.len()));
        }
        let at = buf.len();
        let room = buf.capacity() - at;
        buf.resize(at + room, 0);
        let read =
            futures_lite::future::or(async { Some(reader.read(&mut buf[at..]).await) }, async {
                glommio::timer::sleep(deadline - now).await;
                None
            })
            .await;
        match read {
            Some(Ok(0)) | Some(Err(_)) => {
                buf.truncate(at);
                break;
            }
            Some(Ok(n)) => buf.truncate(at + n),
            None => buf.truncate(at),
        }
    }
    drop(tx);
    // The writer drains responses of requests still in flight, then ends.
    let _ = writer_task.await;
    shard.connections.set(shard.connections.get() - 1);
    debug!(%peer, "connection closed");
}
