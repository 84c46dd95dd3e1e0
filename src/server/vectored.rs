//! Writing a response's parts with one `sendmsg` per up to [`IOV_MAX`]
//! parts, instead of one write per part.
//!
//! Why: a Fetch answer is a list of parts (`protocol::gather`): small owned
//! fields between shared batches. Written one part at a time, each batch
//! cost a system call, so batches up to 16 KiB were copied into the
//! response instead; at 100 B records in 10 KB batches that copy and its
//! buffer's growth were ~15% of a shard's CPU (perf, README "Against the
//! disk"). Gathered into one `sendmsg`, a part costs an `iovec`, and batches
//! are referenced as they are.
//!
//! The socket is written directly, without waiting (`MSG_DONTWAIT`). When
//! it is full, the rest of the current part goes through the stream's own
//! `write`, which waits for room under the connection's write timeout; the
//! next `sendmsg` follows once that made progress. So the stream never has
//! a write of its own in flight while this writes.
//!
//! Owned by the connection's writer task on the connection's shard.

use bytes::Bytes;
use futures::{AsyncWrite, AsyncWriteExt};
use std::io;
use std::os::fd::RawFd;

/// Parts per `sendmsg` (Linux's `UIO_MAXIOV`).
pub const IOV_MAX: usize = 1024;

/// Where the writing stands: the part, and the bytes of it already written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Cursor {
    part: usize,
    off: usize,
}

impl Cursor {
    /// Move past `n` written bytes, and past any empty parts after them.
    fn advance(&mut self, parts: &[Bytes], mut n: usize) {
        while self.part < parts.len() {
            let left = parts[self.part].len() - self.off;
            if n < left {
                self.off += n;
                return;
            }
            n -= left;
            self.part += 1;
            self.off = 0;
        }
        assert_eq!(n, 0, "the kernel wrote no more than it was given");
    }
}

/// Write all of `parts`, in order, to the socket `fd` that `w` writes to.
///
/// `fd` must be the socket under `w`, open for as long as this runs, with
/// no write of `w`'s own in flight.
pub async fn write_parts(
    fd: RawFd,
    parts: &[Bytes],
    w: &mut (impl AsyncWrite + Unpin),
) -> io::Result<()> {
    let mut at = Cursor::default();
    at.advance(parts, 0);
    let mut iov: Vec<libc::iovec> = Vec::with_capacity(parts.len().min(IOV_MAX));
    while at.part < parts.len() {
        iov.clear();
        for (k, p) in parts[at.part..].iter().enumerate() {
            if iov.len() == IOV_MAX {
                break;
            }
            let s = if k == 0 { &p[at.off..] } else { &p[..] };
            if !s.is_empty() {
                iov.push(libc::iovec {
                    iov_base: s.as_ptr() as *mut libc::c_void,
                    iov_len: s.len(),
                });
            }
        }
        // SAFETY: a zeroed msghdr is valid (no address, no control data);
        // the iovecs point into `parts`, which outlive the call.
        let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
        msg.msg_iov = iov.as_mut_ptr();
        msg.msg_iovlen = iov.len() as _;
        // SAFETY: `fd` is the caller's open socket; `msg` is valid above.
        let r = unsafe { libc::sendmsg(fd, &msg, libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL) };
        if r >= 0 {
            at.advance(parts, r as usize);
            continue;
        }
        let e = io::Error::last_os_error();
        match e.kind() {
            io::ErrorKind::Interrupted => {}
            io::ErrorKind::WouldBlock => {
                // Full: wait for room through the stream, which also keeps
                // the connection's write timeout.
                let n = w.write(&parts[at.part][at.off..]).await?;
                if n == 0 {
                    return Err(io::ErrorKind::WriteZero.into());
                }
                at.advance(parts, n);
            }
            _ => return Err(e),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(lens: &[usize]) -> Vec<Bytes> {
        lens.iter()
            .enumerate()
            .map(|(i, &n)| Bytes::from(vec![i as u8; n]))
            .collect()
    }

    #[test]
    fn advance_crosses_parts_and_skips_empty_ones() {
        let p = parts(&[0, 3, 0, 0, 5, 2]);
        let mut c = Cursor::default();
        c.advance(&p, 0);
        assert_eq!(c, Cursor { part: 1, off: 0 });
        c.advance(&p, 2);
        assert_eq!(c, Cursor { part: 1, off: 2 });
        c.advance(&p, 1);
        assert_eq!(c, Cursor { part: 4, off: 0 });
        c.advance(&p, 6);
        assert_eq!(c, Cursor { part: 5, off: 1 });
        c.advance(&p, 1);
        assert_eq!(c, Cursor { part: 6, off: 0 });
    }

    /// Over a real loopback socket whose reader is slow: more parts than
    /// one `sendmsg` takes, and more bytes than the socket buffers hold, so
    /// both the gathered writes and the stream's waiting write are used.
    #[test]
    fn writes_every_part_in_order_through_a_full_socket() {
        use std::io::Read;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        // 3,000 parts of 1 B to 17 KiB, some empty: about 26 MB.
        let lens: Vec<usize> = (0..3000).map(|i| (i * 7919) % (17 << 10)).collect();
        let p = parts(&lens);
        let want: Vec<u8> = p.iter().flat_map(|b| b.iter().copied()).collect();
        let reader = std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            let mut got = Vec::new();
            let mut buf = vec![0u8; 64 << 10];
            loop {
                // Slow at first, so that the socket fills up.
                if got.len() < (4 << 20) {
                    std::thread::sleep(std::time::Duration::from_millis(2));
                }
                match s.read(&mut buf).unwrap() {
                    0 => return got,
                    n => got.extend_from_slice(&buf[..n]),
                }
            }
        });
        let ex = glommio::LocalExecutorBuilder::default().make().unwrap();
        ex.run(async move {
            let mut stream = glommio::net::TcpStream::connect(addr).await.unwrap();
            let fd = std::os::fd::AsRawFd::as_raw_fd(&stream);
            write_parts(fd, &p, &mut stream).await.unwrap();
            stream.close().await.unwrap();
        });
        let got = reader.join().unwrap();
        assert_eq!(got.len(), want.len());
        assert!(got == want, "the bytes arrived as the parts were given");
    }

    #[test]
    #[should_panic(expected = "no more than it was given")]
    fn advance_past_the_end_is_a_bug() {
        let p = parts(&[2]);
        let mut c = Cursor::default();
        c.advance(&p, 3);
    }
}
