//! The receive buffer of a client connection: answers are read into it and
//! split off as `Bytes` that the caller keeps while it reads them.
//!
//! **Why two buffers.** A split-off answer shares its buffer's allocation,
//! so when the reader needs room while the caller still holds an answer,
//! the buffer cannot be reused in place and `BytesMut::reserve` takes a
//! new allocation; the old one is freed when the answer is dropped. A
//! consumer holds one answer while the next is read, so that happened for
//! almost every buffer's worth of answers, and the new memory was rarely
//! memory the allocator still had mapped: with 100 B messages,
//! `clear_page_erms` (the kernel zeroing a fresh huge page on the first
//! write into it) was 22% of loadgen's consumer thread. Here the buffer the
//! reader moved away from is kept as the spare. By the time the current
//! one fills, the caller has usually dropped the answers in the spare, and
//! the reader moves back to it without allocating.
//!
//! **Bound.** New buffers are rounded up to a power of two so that answers
//! of a similar size fit the spare, and only buffers up to
//! [`SPARE_MAX_BYTES`] are kept: the reader holds at most that much beyond
//! the answers in flight. A buffer for a larger answer is allocated to its
//! size and freed with the answer, as before.
//!
//! Lifecycle: owned by the connection's reader task, dropped with it.

use bytes::BytesMut;

/// Capacity a fresh buffer starts with, and the room the reader asks for
/// when less than [`READ_ROOM_MIN`] is left.
pub const READ_CHUNK: usize = 256 << 10;
/// Below this much free room the reader makes more before its next read.
pub const READ_ROOM_MIN: usize = 64 << 10;
/// Largest buffer kept as the spare. At 8 MiB, loadgen's consumer (50 MiB
/// fetches) got answers of 9-11 MiB with 100 B messages, and each took a
/// fresh buffer that the kernel zeroed: about a hundred in a 15 s run,
/// most of the consumer thread's `clear_page_erms`. A buffer of up to
/// 32 MiB is kept only by a connection whose answers are that large.
pub const SPARE_MAX_BYTES: usize = 32 << 20;

/// The current buffer (`cur`, which holds the unread bytes) and a spare,
/// each with the size of the allocation it sits in (a view split off to
/// its end reports almost no capacity, yet keeps the whole allocation).
pub struct ReadBuffers {
    pub cur: BytesMut,
    cur_alloc: usize,
    spare: Option<(BytesMut, usize)>,
}

impl Default for ReadBuffers {
    fn default() -> Self {
        ReadBuffers {
            cur: BytesMut::with_capacity(READ_CHUNK),
            cur_alloc: READ_CHUNK,
            spare: None,
        }
    }
}

impl ReadBuffers {
    /// Make room in `cur` for `additional` more bytes after its unread
    /// ones, reusing memory when the answers split from it (or from the
    /// spare) have all been dropped. Never allocates when either can be
    /// reused (`try_reclaim` does not allocate).
    pub fn make_room(&mut self, additional: usize) {
        if self.cur.try_reclaim(additional) {
            return;
        }
        let want = self.cur.len() + additional;
        if let Some((mut spare, alloc)) = self.spare.take() {
            if alloc >= want {
                spare.clear();
                if spare.try_reclaim(want) {
                    spare.extend_from_slice(&self.cur);
                    let old = std::mem::replace(&mut self.cur, spare);
                    let old_alloc = std::mem::replace(&mut self.cur_alloc, alloc);
                    self.keep_as_spare(old, old_alloc);
                    return;
                }
                // Its answers are still held: keep it for later.
                self.spare = Some((spare, alloc));
            }
            // Too small for this answer: let it go (it is freed with the
            // last answer that holds it), and keep the current one below.
        }
        // Rounded up to a power of two, so that the next answers, of a
        // similar size, fit in this buffer once it is the spare. A buffer
        // too large to be kept is allocated to size: rounding a 300 MiB
        // answer's up to 512 MiB would only raise the peak.
        let alloc = if want <= SPARE_MAX_BYTES {
            want.next_power_of_two().max(READ_CHUNK)
        } else {
            want
        };
        let mut fresh = BytesMut::with_capacity(alloc);
        fresh.extend_from_slice(&self.cur);
        let old = std::mem::replace(&mut self.cur, fresh);
        let old_alloc = std::mem::replace(&mut self.cur_alloc, alloc);
        if self.spare.is_none() {
            self.keep_as_spare(old, old_alloc);
        }
    }

    fn keep_as_spare(&mut self, old: BytesMut, alloc: usize) {
        if alloc <= SPARE_MAX_BYTES {
            self.spare = Some((old, alloc));
        }
    }

    #[cfg(test)]
    fn cur_ptr(&self) -> *const u8 {
        self.cur.as_ptr()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Read `n` bytes of value `v` into `cur`, as the socket would.
    fn fill(b: &mut ReadBuffers, n: usize, v: u8) {
        b.make_room(n);
        assert!(
            b.cur.capacity() - b.cur.len() >= n,
            "make_room left too little room"
        );
        b.cur.extend_from_slice(&vec![v; n]);
    }

    #[test]
    fn a_dropped_answer_gives_its_buffer_back() {
        let mut b = ReadBuffers::default();
        fill(&mut b, READ_CHUNK, 1);
        let first = b.cur.split_to(READ_CHUNK).freeze();
        let first_ptr = first.as_ptr();
        // The answer is held: room must come from elsewhere.
        fill(&mut b, READ_CHUNK, 2);
        let second = b.cur.split_to(READ_CHUNK).freeze();
        assert_ne!(second.as_ptr(), first_ptr);
        assert_eq!(
            &first[..],
            &vec![1; READ_CHUNK][..],
            "a held answer was overwritten"
        );
        drop(first);
        // The first buffer's answer is gone: the reader moves back to it.
        fill(&mut b, READ_CHUNK, 3);
        assert_eq!(b.cur_ptr(), first_ptr, "the spare was not reused");
        assert_eq!(
            &second[..],
            &vec![2; READ_CHUNK][..],
            "a held answer was overwritten"
        );
        assert_eq!(&b.cur[..], &vec![3; READ_CHUNK][..]);
    }

    #[test]
    fn unread_bytes_move_with_the_buffer() {
        let mut b = ReadBuffers::default();
        fill(&mut b, READ_CHUNK - 10, 1);
        let held = b.cur.split_to(READ_CHUNK - 20).freeze();
        // 10 bytes of a partial answer are left; ask for more than fits.
        b.make_room(READ_CHUNK);
        assert_eq!(&b.cur[..], &[1; 10][..]);
        assert!(b.cur.capacity() - b.cur.len() >= READ_CHUNK);
        drop(held);
        b.cur.extend_from_slice(&[2; 5]);
        let mut want = vec![1; 10];
        want.extend_from_slice(&[2; 5]);
        assert_eq!(&b.cur[..], &want[..]);
    }

    #[test]
    fn answers_larger_than_the_spare_get_a_buffer_that_is_kept() {
        let mut b = ReadBuffers::default();
        let answer_len = 3 * READ_CHUNK;
        let mut held = Vec::new();
        for round in 0..4u8 {
            fill(&mut b, answer_len, round);
            let a = b.cur.split_to(answer_len).freeze();
            // The consumer holds this answer while the next is read, then
            // drops the one before.
            if held.len() == 2 {
                held.remove(0);
            }
            held.push(a);
        }
        let ptrs: Vec<*const u8> = held.iter().map(|a| a.as_ptr()).collect();
        for (i, a) in held.iter().enumerate() {
            assert_eq!(&a[..], &vec![2 + i as u8; answer_len][..]);
        }
        // Rounds 2 and 3 reused the buffers of rounds 0 and 1.
        held.clear();
        fill(&mut b, answer_len, 9);
        assert!(
            ptrs.contains(&b.cur_ptr()),
            "a fifth answer of the same size did not reuse a kept buffer"
        );
    }

    #[test]
    fn a_large_buffer_is_not_kept() {
        let mut b = ReadBuffers::default();
        let big = SPARE_MAX_BYTES + 1;
        fill(&mut b, big, 1);
        assert!(
            b.cur.capacity() <= big + READ_CHUNK,
            "a buffer too large to keep was rounded up to {}",
            b.cur.capacity()
        );
        let first = b.cur.split_to(big).freeze();
        // The first answer is held, and the second does not fit after it:
        // a new buffer, and the first one's (over the cap) is not kept.
        fill(&mut b, big, 2);
        assert!(b.spare.is_none(), "a buffer over SPARE_MAX_BYTES was kept");
        assert_eq!(&first[..], &vec![1; big][..]);
    }
}
