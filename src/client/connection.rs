//! One pipelined connection to a broker: many requests in flight, answers
//! matched by request id. A reader task owns the read half; writes go
//! through a mutex-guarded write half so request order on the wire is the
//! order of `send` calls.

use super::read_buffer::{ReadBuffers, READ_CHUNK, READ_ROOM_MIN};
use super::ClientError;
use crate::protocol::codec::Reader;
use crate::protocol::frame::{ApiKey, FrameHeader, ResponseHeader, LEN_PREFIX};
use crate::protocol::{ErrorCode, API_VERSION};
use bytes::{Bytes, BytesMut};
use std::collections::HashMap;
use std::io::IoSlice;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::OwnedWriteHalf;
use tokio::net::TcpStream;
use tokio::sync::oneshot;

/// The answer to one request: its header and a reader over its body.
pub type Answer = oneshot::Receiver<Result<(ResponseHeader, Reader), ClientError>>;

type Waiters = Arc<
    Mutex<Option<HashMap<u32, oneshot::Sender<Result<(ResponseHeader, Reader), ClientError>>>>>,
>;

pub struct Connection {
    writer: tokio::sync::Mutex<OwnedWriteHalf>,
    /// The socket's descriptor, to shut it down when a request times out
    /// while another task may hold `writer`. Valid for the connection's
    /// life: `writer` owns the socket until the connection drops.
    fd: std::os::fd::RawFd,
    waiters: Waiters,
    next_id: AtomicU32,
    pub addr: SocketAddr,
    reader: tokio::task::JoinHandle<()>,
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

/// Largest response the client accepts.
const RESPONSE_MAX_BYTES: usize = 512 << 20;

/// How long [`Connection::call`] waits for its answer, writing included:
/// Kafka's `request.timeout.ms` default. Without it a broker that accepts
/// the connection but never answers (stopped, wedged, a black-holed peer)
/// held a caller forever: loadgen hung in its setup for 10 minutes
/// against a SIGSTOPped broker. Long-poll fetches add their `max_wait`.
pub const REQUEST_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

impl Connection {
    pub async fn connect(addr: &str) -> Result<Connection, ClientError> {
        let stream = TcpStream::connect(addr)
            .await
            .map_err(|e| ClientError::Connect {
                addr: addr.to_string(),
                source: Arc::new(e),
            })?;
        stream.set_nodelay(true).ok();
        let peer = stream.peer_addr()?;
        let fd = std::os::fd::AsRawFd::as_raw_fd(&stream);
        let (mut rd, wr) = stream.into_split();
        let waiters: Waiters = Arc::new(Mutex::new(Some(HashMap::new())));
        let w2 = waiters.clone();
        let reader = tokio::spawn(async move {
            let mut bufs = ReadBuffers::default();
            let fail = |e: ClientError, rd: &tokio::net::tcp::OwnedReadHalf| {
                tracing::debug!(%peer, error = %e, "connection failed; requests in flight fail");
                // Close the socket, not only this half: the broker must see
                // the connection end and free what it holds for it (an
                // answer nobody reads would keep its memory charged).
                let _ = socket2::SockRef::from(rd.as_ref()).shutdown(std::net::Shutdown::Both);
                if let Some(map) = w2.lock().unwrap().take() {
                    for (_, tx) in map {
                        let _ = tx.send(Err(e.clone()));
                    }
                }
            };
            loop {
                let buf = &mut bufs.cur;
                // Bytes still to come of a partial answer.
                let mut rest = None;
                while buf.len() >= LEN_PREFIX {
                    let len = u32::from_le_bytes(buf[..4].try_into().unwrap()) as usize;
                    if len > RESPONSE_MAX_BYTES {
                        fail(
                            ClientError::Protocol(format!("response of {len} bytes is too large")),
                            &rd,
                        );
                        return;
                    }
                    if buf.len() < LEN_PREFIX + len {
                        rest = Some(LEN_PREFIX + len - buf.len());
                        break;
                    }
                    let mut frame = buf.split_to(LEN_PREFIX + len);
                    let _ = frame.split_to(LEN_PREFIX);
                    let mut r = Reader::new(frame);
                    match ResponseHeader::decode(&mut r) {
                        Ok(h) => {
                            let tx = w2
                                .lock()
                                .unwrap()
                                .as_mut()
                                .and_then(|m| m.remove(&h.request_id));
                            if let Some(tx) = tx {
                                let _ = tx.send(Ok((h, r)));
                            }
                        }
                        Err(e) => {
                            fail(ClientError::Protocol(e.to_string()), &rd);
                            return;
                        }
                    }
                }
                // Room for the rest of a partial answer, and at least
                // READ_ROOM_MIN for the read.
                let room = buf.capacity() - buf.len();
                match rest {
                    Some(rest) if rest > room => bufs.make_room(rest),
                    _ if room < READ_ROOM_MIN => bufs.make_room(READ_CHUNK),
                    _ => {}
                }
                match rd.read_buf(&mut bufs.cur).await {
                    Ok(0) => {
                        fail(ClientError::Closed, &rd);
                        return;
                    }
                    Ok(_) => {}
                    Err(e) => {
                        fail(ClientError::Io(Arc::new(e)), &rd);
                        return;
                    }
                }
            }
        });
        Ok(Connection {
            writer: tokio::sync::Mutex::new(wr),
            fd,
            waiters,
            next_id: AtomicU32::new(1),
            addr: peer,
            reader,
        })
    }

    /// The reader saw the connection fail or close: no answer will come.
    pub fn is_closed(&self) -> bool {
        self.waiters.lock().unwrap().is_none()
    }

    /// Encode and send a request. With `expect_response`, the returned
    /// receiver yields the response; otherwise (acks=0) nothing comes back.
    pub async fn send(
        &self,
        api: ApiKey,
        body: impl FnOnce(&mut BytesMut),
        expect_response: bool,
    ) -> Result<Option<Answer>, ClientError> {
        self.send_version(api, API_VERSION, body, expect_response)
            .await
    }

    /// [`Connection::send`] at an explicit API version.
    pub async fn send_version(
        &self,
        api: ApiKey,
        api_version: u16,
        body: impl FnOnce(&mut BytesMut),
        expect_response: bool,
    ) -> Result<Option<Answer>, ClientError> {
        self.send_parts(api, api_version, |b, _| body(b), expect_response)
            .await
    }

    /// Send a request whose payload stays in the caller's buffers: `body`
    /// encodes everything else into `b` and lists each payload buffer with
    /// the position in `b` where it belongs (ascending). One vectored
    /// write sends it all. Why: a produce request copied its frames into
    /// one buffer, grown by doubling, before the kernel copied them again
    /// (at 1 MiB batches, closed loop, memmove on loadgen's client threads
    /// was a tenth of the CPU samples of loadgen and its embedded broker).
    pub async fn send_parts(
        &self,
        api: ApiKey,
        api_version: u16,
        body: impl FnOnce(&mut BytesMut, &mut Vec<(usize, Bytes)>),
        expect_response: bool,
    ) -> Result<Option<Answer>, ClientError> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let mut b = BytesMut::with_capacity(1024);
        let start = FrameHeader {
            api_key: api as u16,
            api_version,
            request_id: id,
        }
        .begin(&mut b);
        let mut payload = Vec::new();
        body(&mut b, &mut payload);
        let payload_len: usize = payload.iter().map(|(_, p)| p.len()).sum();
        let len = b.len() - start - LEN_PREFIX + payload_len;
        let len = u32::try_from(len).map_err(|_| {
            ClientError::Invalid(format!(
                "a request of {len} bytes is over the 4 GiB frame limit"
            ))
        })?;
        b[start..start + LEN_PREFIX].copy_from_slice(&len.to_le_bytes());
        let head = b.freeze();
        let mut segments = Vec::with_capacity(2 * payload.len() + 1);
        let mut at = 0;
        for (pos, p) in payload {
            assert!(
                pos >= at && pos <= head.len(),
                "payload positions ascend within the body"
            );
            if pos > at {
                segments.push(head.slice(at..pos));
            }
            segments.push(p);
            at = pos;
        }
        if at < head.len() {
            segments.push(head.slice(at..));
        }
        let rx = if expect_response {
            let (tx, rx) = oneshot::channel();
            match self.waiters.lock().unwrap().as_mut() {
                Some(m) => {
                    m.insert(id, tx);
                }
                None => return Err(ClientError::Closed),
            }
            Some(rx)
        } else {
            None
        };
        let mut w = self.writer.lock().await;
        write_all_vectored(&mut w, &segments)
            .await
            .map_err(|e| ClientError::Io(Arc::new(e)))?;
        Ok(rx)
    }

    /// Send and wait for the answer; a request-level error becomes `Err`.
    pub async fn call(
        &self,
        api: ApiKey,
        body: impl FnOnce(&mut BytesMut),
    ) -> Result<Reader, ClientError> {
        self.call_version(api, API_VERSION, body).await
    }

    /// [`Connection::call`] at an explicit API version.
    pub async fn call_version(
        &self,
        api: ApiKey,
        api_version: u16,
        body: impl FnOnce(&mut BytesMut),
    ) -> Result<Reader, ClientError> {
        self.call_within(api, api_version, body, REQUEST_TIMEOUT)
            .await
    }

    /// [`Connection::call_version`] with its own deadline. A request that
    /// misses it closes the connection, as Kafka's clients do: it may have
    /// been cut off halfway onto the wire, so nothing more can follow it,
    /// and its answer may still come. Every other request in flight on the
    /// connection fails with [`ClientError::Closed`]; the client's routes
    /// reconnect for the next one.
    pub async fn call_within(
        &self,
        api: ApiKey,
        api_version: u16,
        body: impl FnOnce(&mut BytesMut),
        timeout: std::time::Duration,
    ) -> Result<Reader, ClientError> {
        let exchange = async {
            let rx = self
                .send_version(api, api_version, body, true)
                .await?
                .expect("asked for a response");
            rx.await.map_err(|_| ClientError::Closed)?
        };
        let (h, r) = match tokio::time::timeout(timeout, exchange).await {
            Ok(answer) => answer?,
            Err(_) => {
                // SAFETY: `fd` is the socket `writer` owns, open for as
                // long as `self` lives (see the field).
                let fd = unsafe { std::os::fd::BorrowedFd::borrow_raw(self.fd) };
                let _ = socket2::SockRef::from(&fd).shutdown(std::net::Shutdown::Both);
                return Err(ClientError::Timeout {
                    api,
                    addr: self.addr,
                    after: timeout,
                });
            }
        };
        if h.error != ErrorCode::None {
            return Err(ClientError::Broker {
                code: h.error,
                message: h.message,
            });
        }
        Ok(r)
    }
}

/// Write every segment in order with vectored writes (as few system calls
/// as the socket allows), resuming mid-segment after a short write.
async fn write_all_vectored(w: &mut OwnedWriteHalf, segments: &[Bytes]) -> std::io::Result<()> {
    let mut slices: Vec<IoSlice<'_>> = segments
        .iter()
        .filter(|s| !s.is_empty())
        .map(|s| IoSlice::new(s))
        .collect();
    let mut rest = &mut slices[..];
    while !rest.is_empty() {
        let n = w.write_vectored(rest).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        IoSlice::advance_slices(&mut rest, n);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::frame::finish_frame;
    use crate::protocol::messages::{encode_produce, encode_produce_deferred, Acks};
    use std::time::Duration;
    use tokio::io::AsyncReadExt;

    /// The vectored produce path puts on the wire exactly the bytes the
    /// copying encoder builds, also when the socket takes them in pieces
    /// (6 MiB in 2 topics, more than the socket buffers hold; the peer
    /// reads in small chunks).
    #[tokio::test]
    async fn send_parts_writes_what_the_copying_encoder_builds() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let peer = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut got = Vec::new();
            let mut chunk = vec![0u8; 7919];
            loop {
                let n = s.read(&mut chunk).await.unwrap();
                if n == 0 {
                    return got;
                }
                got.extend_from_slice(&chunk[..n]);
            }
        });
        // Large frames go out from their own buffers, small ones (every
        // fourth) are copied into the head: both kinds, interleaved.
        let frames: Vec<Bytes> = (0..64u8)
            .map(|i| {
                let len = if i % 4 == 0 {
                    100 + i as usize
                } else {
                    (128 << 10) + i as usize
                };
                Bytes::from(vec![i; len])
            })
            .collect();
        let topics = [
            ("alpha", vec![(0u32, &frames[..10]), (3, &frames[10..11])]),
            ("b", vec![(1u32, &frames[11..])]),
        ];
        let conn = Connection::connect(&addr).await.unwrap();
        let sent = conn
            .send_parts(
                ApiKey::Produce,
                API_VERSION,
                |b, payload| encode_produce_deferred(b, payload, Acks::All, 1234, &topics),
                false,
            )
            .await
            .unwrap();
        assert!(sent.is_none());
        drop(conn);
        let got = peer.await.unwrap();

        let mut want = BytesMut::new();
        let start = FrameHeader {
            api_key: ApiKey::Produce as u16,
            api_version: API_VERSION,
            request_id: 1,
        }
        .begin(&mut want);
        encode_produce(&mut want, Acks::All, 1234, &topics);
        finish_frame(&mut want, start);
        assert!(want.len() > 6 << 20);
        assert_eq!(got.len(), want.len());
        assert!(got == want[..], "the bytes differ");
    }

    /// A peer that accepts and reads but never answers: the call fails
    /// with a timeout that names the request and the peer, the connection
    /// closes (the peer sees EOF), and a request that was waiting beside
    /// it fails as closed instead of waiting on.
    #[tokio::test]
    async fn a_call_the_peer_never_answers_times_out_and_closes_the_connection() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let peer = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut sink = Vec::new();
            // Returns at EOF: when the client shuts the socket down.
            s.read_to_end(&mut sink).await.unwrap();
            sink.len()
        });
        let conn = Connection::connect(&addr).await.unwrap();
        let beside = conn
            .send(ApiKey::Metadata, |_| {}, true)
            .await
            .unwrap()
            .unwrap();
        let t0 = std::time::Instant::now();
        let err = conn
            .call_within(
                ApiKey::Metadata,
                API_VERSION,
                |_| {},
                Duration::from_millis(200),
            )
            .await
            .err()
            .expect("no answer can come");
        assert!(t0.elapsed() >= Duration::from_millis(200));
        assert!(
            matches!(
                err,
                ClientError::Timeout {
                    api: ApiKey::Metadata,
                    ..
                }
            ),
            "{err}"
        );
        assert!(err.to_string().contains(&addr), "{err}");
        let read = tokio::time::timeout(Duration::from_secs(10), peer)
            .await
            .expect("the peer saw no EOF")
            .unwrap();
        assert!(read > 0, "both requests reached the peer");
        let other = tokio::time::timeout(Duration::from_secs(10), beside)
            .await
            .expect("the other request still waits");
        match other {
            Ok(Err(ClientError::Closed)) => {}
            Ok(Err(e)) => panic!("the other request failed with {e}, not as closed"),
            Ok(Ok(_)) => panic!("the other request got an answer"),
            Err(_) => panic!("the other request's sender was dropped unanswered"),
        }
        assert!(conn.is_closed());
    }
}
