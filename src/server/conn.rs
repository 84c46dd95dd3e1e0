//! The connection skeleton both protocols share: read length-prefixed
//! frames under budgets and timeouts, hand each to a request handler task,
//! write responses in completion order.

use super::budget::{ConnBudget, Permit};
use crate::clock::Clock;
use crate::config::BrokerConfig;
use crate::shard::memory::{Class, SMALL_REQUEST_BYTES};
use crate::shard::Shard;
use bytes::{Bytes, BytesMut};
use futures::channel::mpsc;
use futures::{AsyncReadExt, AsyncWriteExt, StreamExt};
use glommio::net::TcpStream;
use std::cell::Cell;
use std::rc::Rc;
use std::time::{Duration, Instant};
use tracing::{debug, warn};

/// How a protocol frames and serves requests.
pub trait Protocol: 'static {
    /// Total length of the frame starting at `buf` (prefix included) as
    /// soon as its length prefix is readable, even if the rest has not
    /// arrived; Ok(None) if the prefix is incomplete; Err (with an optional
    /// error frame to send before closing) if the stream cannot go on.
    fn frame_len(&self, buf: &[u8], max: usize) -> Result<Option<usize>, Option<BytesMut>>;
    /// Bytes of budget a request holds while in flight: its own size, plus
    /// (for requests with large answers, such as fetches) what its answer may
    /// take. The answer's real size is added when it is ready.
    fn request_cost(&self, frame: &[u8], _config: &BrokerConfig) -> usize {
        frame.len()
    }
    /// Whether the frame's work grows with the data it carries or asks for
    /// (produce, fetch): its handler runs in the shard's bulk task queue,
    /// so that small requests do not wait behind it (`shard::queues`).
    fn is_bulk(&self, _frame: &[u8]) -> bool {
        false
    }
    /// Serve one frame; return the response bytes, if any. Called in frame
    /// order; the future runs as its own task (in the bulk or the control
    /// queue, see [`Protocol::is_bulk`]), many concurrently per connection.
    fn handle(
        self: Rc<Self>,
        shard: Rc<Shard>,
        frame: BytesMut,
    ) -> impl std::future::Future<Output = Handled> + 'static;
}

pub enum Handled {
    Respond(BytesMut),
    /// A response in parts, written in order (see `protocol::gather`).
    RespondParts(Vec<Bytes>),
    NoResponse,
    /// Send this, then close the connection.
    Close(Option<BytesMut>),
}

/// What the writer task sends next.
enum Out {
    Nothing,
    One(BytesMut),
    Parts(Vec<Bytes>),
}

impl Out {
    fn len(&self) -> usize {
        match self {
            Out::Nothing => 0,
            Out::One(b) => b.len(),
            Out::Parts(parts) => parts.iter().map(|p| p.len()).sum(),
        }
    }

    /// Write it to `w`, whose socket is `fd` (parts go out gathered, see
    /// `server::vectored`).
    async fn write_to(
        &self,
        fd: std::os::fd::RawFd,
        w: &mut (impl futures::AsyncWrite + Unpin),
    ) -> std::io::Result<()> {
        match self {
            Out::Nothing => Ok(()),
            Out::One(buf) => w.write_all(buf).await,
            Out::Parts(parts) => super::vectored::write_parts(fd, parts, w).await,
        }
    }
}

impl From<Option<BytesMut>> for Out {
    fn from(b: Option<BytesMut>) -> Out {
        b.map_or(Out::Nothing, Out::One)
    }
}

/// Bytes read at a time for small frames.
const READ_BYTES: usize = 64 << 10;

enum ReadOutcome {
    Data(usize),
    Closed,
    TimedOut,
}

/// One read into `into`, unless `deadline` passes first.
async fn read_before(
    reader: &mut (impl futures::AsyncRead + Unpin),
    into: &mut [u8],
    deadline: Instant,
    clock: &dyn Clock,
) -> ReadOutcome {
    let Some(left) = deadline.checked_duration_since(clock.now()) else {
        return ReadOutcome::TimedOut;
    };
    let read = futures_lite::future::or(async { Some(reader.read(into).await) }, async {
        clock.sleep(left).await;
        None
    })
    .await;
    match read {
        Some(Ok(0)) | Some(Err(_)) => ReadOutcome::Closed,
        Some(Ok(n)) => ReadOutcome::Data(n),
        None => ReadOutcome::TimedOut,
    }
}

/// When the connection's next read times out: `partial` after the first
/// byte of an incomplete frame arrived, else `idle` after the last request.
fn read_deadline(
    frame_started: Option<Instant>,
    last_request: Instant,
    idle: Duration,
    partial: Duration,
) -> Instant {
    match frame_started {
        Some(t) => t + partial,
        None => last_request + idle,
    }
}

/// Read once into `buf`'s spare capacity (at most `max` bytes), unless
/// `deadline` passes first; the bytes read extend `buf`.
///
/// Why not `resize(len + room, 0)` and read into that: zero-filling every
/// byte before the socket overwrites it cost ~10% of a shard's CPU under a
/// produce flood (glibc's calloc memsets large buffers once its mmap
/// threshold has grown). The spare capacity is handed to the read as a
/// byte slice without initialising it first.
async fn read_into_spare(
    reader: &mut (impl futures::AsyncRead + Unpin),
    buf: &mut BytesMut,
    max: usize,
    deadline: Instant,
    clock: &dyn Clock,
) -> ReadOutcome {
    let spare = buf.spare_capacity_mut();
    let n = spare.len().min(max);
    assert!(n > 0, "reading into a full buffer");
    // SAFETY: the pointer and length come from `spare` (allocated, aligned
    // for u8, not aliased while `buf` is borrowed here). The bytes are not
    // initialised; a socket read only writes into the slice and never reads
    // it, and `set_len` below covers only the bytes the read reported.
    let dst = unsafe { std::slice::from_raw_parts_mut(spare.as_mut_ptr().cast::<u8>(), n) };
    let outcome = read_before(reader, dst, deadline, clock).await;
    if let ReadOutcome::Data(got) = outcome {
        assert!(got <= n, "a read reported more bytes than it was given");
        // SAFETY: the read initialised the first `got` bytes of the spare
        // capacity.
        unsafe { buf.set_len(buf.len() + got) };
    }
    outcome
}

/// Serve a connection until the peer closes, misbehaves or times out.
pub async fn run<P: Protocol>(shard: Rc<Shard>, stream: TcpStream, proto: Rc<P>, peer: String) {
    let _ = stream.set_nodelay(true);
    // Each write must make progress within the stall timeout: a client that
    // stops reading otherwise keeps its queued answers charged to the
    // shard's in-flight budget for good, and stops every connection of the
    // shard once that is spent.
    let stall = Duration::from_millis(shard.config.write_stall_timeout_ms);
    let _ = stream.set_write_timeout(Some(stall));
    let fd = std::os::fd::AsRawFd::as_raw_fd(&stream);
    let (mut reader, mut writer) = futures::io::AsyncReadExt::split(stream);
    let (tx, mut rx) = mpsc::unbounded::<(Out, bool, Option<Permit>)>();
    // Set when the writer gave up: the reading side stops too.
    let write_failed = Rc::new(Cell::new(false));
    let writer_failed = write_failed.clone();
    let writer_peer = peer.clone();
    let queues = shard.queues;
    let writer_task = glommio::spawn_local(async move {
        while let Some((out, close, permit)) = rx.next().await {
            // A large answer is written by a bulk task (the kernel's copy
            // happens in the writing task), a small one here: the same
            // reason as the large request bodies below.
            let written = if out.len() > SMALL_REQUEST_BYTES {
                let (back, r) = queues
                    .spawn_bulk(async move {
                        let mut w = writer;
                        let r = out.write_to(fd, &mut w).await;
                        (w, r)
                    })
                    .await;
                writer = back;
                r
            } else {
                out.write_to(fd, &mut writer).await
            };
            if let Err(e) = written {
                if e.kind() == std::io::ErrorKind::TimedOut {
                    warn!(peer = %writer_peer, stall_ms = stall.as_millis() as u64,
                        "closing connection: the client read none of its answers for write_stall_timeout_ms");
                }
                // Dropping the queue frees the answers and their charges.
                writer_failed.set(true);
                // Both directions, on the socket itself: the reading side
                // may be waiting for a request that never comes, and a
                // close of this half would first try to flush.
                // SAFETY: `fd` belongs to the stream whose halves this task
                // and the reading side still hold, so it is open and ours.
                unsafe { libc::shutdown(fd, libc::SHUT_RDWR) };
                return;
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
    // Small frames are read through this buffer (several may arrive in one
    // read) and copied out of it; a large frame is read into a buffer of
    // its own, of exactly its size. Either way a frame owns its memory.
    let mut buf = BytesMut::with_capacity(READ_BYTES);
    let mut frame_started: Option<Instant> = None;
    let mut last_request = shard.clock.now();
    let spawn_handler = |frame: BytesMut, permit: Permit| {
        let (p, s, tx) = (proto.clone(), shard.clone(), tx.clone());
        let bulk = proto.is_bulk(&frame);
        let frame_len = frame.len();
        // Called here, not in the task: whatever the handler orders
        // (Kafka's response turns) is taken in frame order, whichever
        // queue's task runs first.
        let handled = p.handle(s, frame);
        let task = async move {
            match handled.await {
                Handled::Respond(b) => {
                    // Queued answers count too: a client that does
                    // not read stops us reading, not us buffering. The
                    // answer takes the place of what a fetch was charged
                    // for the answer it might return.
                    let mut permit = permit;
                    permit.resize(frame_len + b.len());
                    let _ = tx.unbounded_send((Out::One(b), false, Some(permit)));
                }
                Handled::RespondParts(parts) => {
                    let mut permit = permit;
                    permit.resize(frame_len + parts.iter().map(|p| p.len()).sum::<usize>());
                    let _ = tx.unbounded_send((Out::Parts(parts), false, Some(permit)));
                }
                Handled::NoResponse => drop(permit),
                Handled::Close(b) => {
                    let _ = tx.unbounded_send((Out::from(b), true, Some(permit)));
                }
            }
        };
        if bulk {
            shard.queues.spawn_bulk(task).detach();
        } else {
            shard.queues.spawn_control(task).detach();
        }
    };
    'conn: loop {
        // Serve every complete frame in the buffer.
        loop {
            match proto.frame_len(&buf, max) {
                Ok(Some(total)) if buf.len() >= total => {
                    // A small frame gets its own allocation too (a copy of
                    // at most SMALL_REQUEST_BYTES): a slice of the shared
                    // read buffer would pin all of it for as long as any
                    // batch of the frame stays cached, far more memory than
                    // the cache is charged for.
                    let frame = BytesMut::from(&buf[..total]);
                    bytes::Buf::advance(&mut buf, total);
                    frame_started = None;
                    last_request = shard.clock.now();
                    // A cost beyond the frame is an answer it may
                    // return: a read, for the shard's turns.
                    let cost = proto.request_cost(&frame, &shard.config);
                    let class = if cost > frame.len() {
                        Class::Reads
                    } else {
                        Class::Requests
                    };
                    let permit = budget.acquire(cost, class).await;
                    spawn_handler(frame, permit);
                }
                Ok(Some(total)) if total > SMALL_REQUEST_BYTES => {
                    // A large frame: charge its full size before allocating
                    // it (waiting, without reading, while the budget is
                    // spent), then read the body straight into place.
                    let mut permit = budget.acquire(total, Class::Requests).await;
                    if shard.shutting_down.get() {
                        break 'conn;
                    }
                    // Exactly the frame's size, filled by the socket (no
                    // zero-fill first: see read_into_spare).
                    let mut frame = BytesMut::with_capacity(total);
                    frame.extend_from_slice(&buf);
                    buf.clear();
                    let deadline = shard.clock.now() + partial;
                    // The body is read by a bulk task, and this control
                    // task waits for it. Why: the kernel's copy of a large
                    // body (and the faults on its fresh pages) happens in
                    // the task that reads; in the control queue, a produce
                    // flood's bodies took the control queue's turns from
                    // fresh clients (issue 10).
                    let clock = shard.clock.clone();
                    let (back, filled, ended) = shard
                        .queues
                        .spawn_bulk(async move {
                            let (mut reader, mut frame) = (reader, frame);
                            while frame.len() < total {
                                let want = total - frame.len();
                                match read_into_spare(
                                    &mut reader,
                                    &mut frame,
                                    want,
                                    deadline,
                                    &*clock,
                                )
                                .await
                                {
                                    ReadOutcome::Data(_) => {}
                                    ended => return (reader, frame, Some(ended)),
                                }
                            }
                            (reader, frame, None)
                        })
                        .await;
                    reader = back;
                    let frame = filled;
                    match ended {
                        None => {}
                        Some(ReadOutcome::TimedOut) => {
                            debug!(%peer, filled = frame.len(), total, "closing connection: frame timed out");
                            break 'conn;
                        }
                        Some(_) => break 'conn,
                    }
                    assert_eq!(frame.len(), total);
                    frame_started = None;
                    last_request = shard.clock.now();
                    let cost = proto.request_cost(&frame, &shard.config);
                    permit.grow(cost.saturating_sub(total));
                    spawn_handler(frame, permit);
                }
                Ok(_) => break,
                Err(reply) => {
                    debug!(%peer, "closing connection: unreadable frame");
                    let _ = tx.unbounded_send((Out::from(reply), true, None));
                    break 'conn;
                }
            }
        }
        if shard.shutting_down.get() || write_failed.get() {
            break;
        }
        // Backpressure: do not read while over budget.
        budget.wait_for_room().await;
        if !buf.is_empty() && frame_started.is_none() {
            frame_started = Some(shard.clock.now());
        }
        let deadline = read_deadline(frame_started, last_request, idle, partial);
        if shard.clock.now() >= deadline {
            debug!(%peer, partial = frame_started.is_some(), "closing connection: timed out");
            break;
        }
        // Read into the buffer's spare room. It holds at most one small
        // frame plus one read, so it stays near READ_BYTES.
        if buf.capacity() - buf.len() < READ_BYTES / 4 {
            buf.reserve(READ_BYTES);
        }
        match read_into_spare(&mut reader, &mut buf, READ_BYTES, deadline, &*shard.clock).await {
            ReadOutcome::Data(_) | ReadOutcome::TimedOut => {}
            ReadOutcome::Closed => break,
        }
    }
    drop(tx);
    // The writer drains responses of requests still in flight, then ends.
    let _ = writer_task.await;
    shard.connections.set(shard.connections.get() - 1);
    debug!(%peer, "connection closed");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;
    use std::cell::Cell;
    use std::pin::Pin;
    use std::task::{Context, Poll};

    /// A peer that sends `data`, then nothing more, and never closes.
    struct Stalling {
        data: Vec<u8>,
    }

    impl futures::AsyncRead for Stalling {
        fn poll_read(
            mut self: Pin<&mut Self>,
            _cx: &mut Context<'_>,
            buf: &mut [u8],
        ) -> Poll<std::io::Result<usize>> {
            if self.data.is_empty() {
                return Poll::Pending;
            }
            let n = buf.len().min(self.data.len());
            buf[..n].copy_from_slice(&self.data[..n]);
            self.data.drain(..n);
            Poll::Ready(Ok(n))
        }
    }

    const IDLE: Duration = Duration::from_secs(10);
    const PARTIAL: Duration = Duration::from_secs(1);

    /// Read from `peer` into `buf` until `deadline` (`after` from now, as
    /// the connection loop sets it), in a task, and check that the read
    /// times out exactly then: still waiting 1 ms before. Returns `buf`.
    async fn times_out_after(
        clock: &Rc<ManualClock>,
        mut peer: Stalling,
        mut buf: BytesMut,
        deadline: Instant,
        after: Duration,
    ) -> BytesMut {
        assert_eq!(deadline, clock.now() + after);
        let (c, done) = (clock.clone(), Rc::new(Cell::new(false)));
        let d = done.clone();
        let t = glommio::spawn_local(async move {
            let out = read_into_spare(&mut peer, &mut buf, READ_BYTES, deadline, &*c).await;
            d.set(true);
            (matches!(out, ReadOutcome::TimedOut), buf)
        })
        .detach();
        glommio::executor().yield_task_queue_now().await;
        clock.advance(after - Duration::from_millis(1));
        glommio::executor().yield_task_queue_now().await;
        assert!(!done.get(), "timed out 1 ms early");
        clock.advance(Duration::from_millis(1));
        let (timed_out, buf) = t.await.unwrap();
        assert!(timed_out, "the read did not time out");
        buf
    }

    #[test]
    fn a_silent_connection_times_out_at_the_idle_timeout_of_the_clock() {
        let ex = glommio::LocalExecutorBuilder::default().make().unwrap();
        ex.run(async {
            let clock = ManualClock::new();
            let last_request = clock.now();
            let deadline = read_deadline(None, last_request, IDLE, PARTIAL);
            let buf = BytesMut::with_capacity(READ_BYTES);
            let buf = times_out_after(&clock, Stalling { data: vec![] }, buf, deadline, IDLE).await;
            assert!(buf.is_empty());
        });
    }

    #[test]
    fn a_partial_frame_times_out_at_the_partial_frame_timeout_of_the_clock() {
        let ex = glommio::LocalExecutorBuilder::default().make().unwrap();
        ex.run(async {
            let clock = ManualClock::new();
            let last_request = clock.now();
            clock.advance(Duration::from_secs(3));
            // Three bytes of a frame arrive, then nothing.
            let mut peer = Stalling {
                data: vec![0, 0, 1],
            };
            let mut buf = BytesMut::with_capacity(READ_BYTES);
            let first = read_deadline(None, last_request, IDLE, PARTIAL);
            let got = read_into_spare(&mut peer, &mut buf, READ_BYTES, first, &*clock).await;
            assert!(matches!(got, ReadOutcome::Data(3)));
            let frame_started = Some(clock.now());
            // The partial-frame timeout, not what is left of the idle one, bounds the wait.
            let deadline = read_deadline(frame_started, last_request, IDLE, PARTIAL);
            let buf = times_out_after(&clock, peer, buf, deadline, PARTIAL).await;
            assert_eq!(&buf[..], &[0, 0, 1]);
        });
    }
}
