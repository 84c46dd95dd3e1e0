//! The write pipeline: queued chunks to segment files, space reservations,
//! and closing rolled segments.
//!
//! Owns the order of disk writes: chunks are written `write_behind` at a
//! time in a sliding window, and a roll marker is processed only after
//! every chunk queued before it (the old segment is synced, cut to its
//! exact length and indexed before the new file is created). Writes are
//! idempotent, so on a failure the unwritten items go back to the front of
//! the queue in order and the next round rewrites them.
//!
//! Runs only inside the flusher task (see [`super::flusher`]); state is
//! borrowed between awaits, never across one.

use super::super::appender::Chunk;
use super::super::file::{is_no_space, IoBuf, SegmentFile};
use super::super::index::TimeEntry;
use super::super::segment;
use super::super::StorageError;
use super::index_files;
use super::{io_err, Buf, Disk, Log, Pending};
use futures::stream::{FuturesUnordered, StreamExt};
use std::collections::VecDeque;
use std::rc::Rc;

/// A new segment's first reservation ahead of its writes (see
/// `Log::reserve`): one default write chunk.
pub const PREALLOCATE_FIRST_BYTES: u64 = 1 << 20;

impl<D: Disk> Log<D> {
    /// Write the chunks pending now and process their rolls. Chunks queued
    /// meanwhile wait for the flusher's next round. Why not loop until none
    /// are left: under a steady stream of appends there always are, and the
    /// round's sync (the only thing that moves the visible end with acks=1)
    /// waited behind them for seconds, while consumers saw nothing new and
    /// the data they would next read left the cache (issue 14).
    pub(super) async fn write_pending(&self) -> Result<(), StorageError> {
        let items = std::mem::take(&mut self.st.borrow_mut().pending);
        if items.is_empty() {
            return Ok(());
        }
        self.write_items(items).await
    }

    /// Put unwritten items back at the front of the queue, in order.
    fn put_back(&self, rest: VecDeque<Pending<Buf<D>>>) {
        let mut st = self.st.borrow_mut();
        for item in rest.into_iter().rev() {
            st.pending.push_front(item);
        }
    }

    /// Write `items` in order: runs of chunks `write_behind` at a time,
    /// rolls one by one. On failure the unwritten items go back to the
    /// front of the pending queue, in order, for a retry.
    pub(super) async fn write_items(
        &self,
        mut items: VecDeque<Pending<Buf<D>>>,
    ) -> Result<(), StorageError> {
        while let Some(front) = items.front() {
            if let Pending::Roll {
                old_base,
                old_len,
                new_base,
            } = *front
            {
                if let Err(e) = self.process_roll(old_base, old_len, new_base).await {
                    self.put_back(items);
                    return Err(e);
                }
                items.pop_front();
                continue;
            }
            let mut run = Vec::new();
            while let Some(Pending::Chunk(_)) = items.front() {
                match items.pop_front() {
                    Some(Pending::Chunk(c)) => run.push(c),
                    _ => unreachable!(),
                }
            }
            if let Err((e, back)) = self.write_run(run).await {
                let mut back: VecDeque<_> = back.into_iter().map(Pending::Chunk).collect();
                back.extend(items);
                self.put_back(back);
                return Err(e);
            }
        }
        Ok(())
    }

    /// Close the rolled segment and create the new one; everything below
    /// the new base is then durable.
    async fn process_roll(
        &self,
        old_base: u64,
        old_len: u64,
        new_base: u64,
    ) -> Result<(), StorageError> {
        self.close_segment(old_base, old_len).await?;
        self.ensure_file(new_base).await?;
        let mut st = self.st.borrow_mut();
        if let Some(seg) = st.segments.get_mut(old_base) {
            seg.sealed = true;
        }
        st.offsets.synced(new_base);
        let flushed = st.offsets.flushed();
        st.unwritten.written_up_to(flushed);
        st.assert_invariants();
        drop(st);
        self.notify_durable();
        Ok(())
    }

    /// Write a run of consecutive chunks through a sliding window of
    /// `write_behind` writes: a new one starts as soon as one ends. On
    /// failure, returns the run's chunks to be rewritten.
    async fn write_run(
        &self,
        run: Vec<Chunk<Buf<D>>>,
    ) -> Result<(), (StorageError, Vec<Chunk<Buf<D>>>)> {
        let files = match self.files_for(&run).await {
            Ok(f) => f,
            Err(e) => return Err((e, run)),
        };
        let shared: Vec<_> = run
            .into_iter()
            .map(|c| (c.pos, Rc::new(c.buf), c.end_offset, c.segment_base))
            .collect();
        let mut in_flight = FuturesUnordered::new();
        let mut next = 0;
        let mut err = None;
        loop {
            while err.is_none() && next < shared.len() && in_flight.len() < self.cfg.write_behind {
                let (pos, buf, _, _) = &shared[next];
                in_flight.push(self.write_all(&files[next], buf.clone(), *pos));
                next += 1;
            }
            match in_flight.next().await {
                Some(Ok(())) => {}
                Some(Err(e)) => {
                    err.get_or_insert(e);
                }
                None => break,
            }
        }
        drop(in_flight);
        if let Some(err) = err {
            // Rewrite the whole run later: writes are idempotent.
            let back = shared
                .into_iter()
                .map(|(pos, buf, end_offset, segment_base)| Chunk {
                    segment_base,
                    pos,
                    buf: self.unshare(buf),
                    end_offset,
                })
                .collect();
            return Err((err, back));
        }
        let end = shared.iter().map(|c| c.2).max().unwrap_or(0);
        for (_, buf, _, _) in shared {
            if let Ok(b) = Rc::try_unwrap(buf) {
                self.disk.recycle(b);
            }
        }
        let mut st = self.st.borrow_mut();
        st.offsets.written(end);
        let flushed = st.offsets.flushed();
        st.unwritten.written_up_to(flushed);
        Ok(())
    }

    /// Each chunk's file, open and with space reserved for it.
    async fn files_for(&self, run: &[Chunk<Buf<D>>]) -> Result<Vec<Rc<D::File>>, StorageError> {
        let mut files = Vec::with_capacity(run.len());
        for c in run {
            let end = c.pos + c.buf.as_bytes().len() as u64;
            let f = self.ensure_file(c.segment_base).await?;
            self.reserve(c.segment_base, &f, end).await?;
            files.push(f);
        }
        Ok(files)
    }

    /// The buffer back from a write, copied if a failed write still holds it.
    fn unshare(&self, buf: Rc<Buf<D>>) -> Buf<D> {
        Rc::try_unwrap(buf).unwrap_or_else(|rc| {
            let mut b = self.disk.alloc(rc.as_bytes().len());
            b.as_bytes_mut().copy_from_slice(rc.as_bytes());
            b
        })
    }

    /// Make sure segment `base`'s file has space reserved up to `end`,
    /// reserving ahead (but not past the segment's nominal size) so most
    /// writes land in reserved space.
    ///
    /// How far ahead adapts to the partition: as far as the segment has
    /// already been written (at least [`PREALLOCATE_FIRST_BYTES`]), at most
    /// `preallocate_bytes`. A busy partition reaches the full step after a
    /// few writes; a quiet one reserves at most about twice what it holds,
    /// so 1,000 partitions with a batch each do not take 1,000 full steps
    /// (32 GB at the default) of disk.
    pub(super) async fn reserve(
        &self,
        base: u64,
        file: &Rc<D::File>,
        end: u64,
    ) -> Result<(), StorageError> {
        let step = self.cfg.preallocate_bytes;
        let reserved = {
            let st = self.st.borrow();
            st.segments
                .get(base)
                .map(|s| s.reserved)
                .unwrap_or(u64::MAX)
        };
        if step == 0 || end <= reserved {
            return Ok(());
        }
        let align = self.disk.alignment() as u64;
        let nominal = self.topic.borrow().segment_bytes.div_ceil(align) * align;
        let lead = end.clamp(PREALLOCATE_FIRST_BYTES.min(step), step);
        let mut ahead = (end + lead).min(nominal).max(end);
        // Near a full disk, reserve only what this write needs: a large
        // reservation would take the last free blocks from everyone else
        // (and a failed fallocate may keep part of what it allocated).
        if self
            .disk
            .free_bytes(&self.dir)
            .is_some_and(|free| free < 4 * (ahead - reserved.min(ahead)))
        {
            ahead = end;
        }
        let path = segment::log_path(&self.dir, base);
        let got = match self
            .timed("preallocate", &path, 0, file.preallocate(ahead))
            .await
        {
            Ok(()) => ahead,
            Err(e) if is_no_space(&e) && ahead > end => {
                // Give back whatever the failed reservation took, then try the minimum.
                let _ = file.truncate(reserved).await;
                file.preallocate(end)
                    .await
                    .map_err(io_err("preallocate", &path))?;
                end
            }
            Err(e) => return Err(StorageError::io("preallocate", &path, e)),
        };
        if let Some(seg) = self.st.borrow_mut().segments.get_mut(base) {
            seg.reserved = seg.reserved.max(got);
        }
        Ok(())
    }

    /// Write a whole buffer, continuing after short writes.
    pub(super) async fn write_all(
        &self,
        file: &Rc<D::File>,
        buf: Rc<Buf<D>>,
        pos: u64,
    ) -> Result<(), StorageError> {
        let align = self.disk.alignment();
        let len = buf.as_bytes().len();
        let path = || self.dir.join("<segment>");
        let mut done = self
            .timed("write", &self.dir, len, file.write_at(buf.clone(), pos))
            .await
            .map_err(|e| StorageError::io("write", path(), e))?;
        while done < len {
            if done == 0 || done % align != 0 {
                return Err(StorageError::io(
                    "write",
                    path(),
                    std::io::Error::new(
                        std::io::ErrorKind::WriteZero,
                        format!("short write of {done} of {len} bytes, not block aligned"),
                    ),
                ));
            }
            let mut rest = self.disk.alloc(len - done);
            rest.as_bytes_mut().copy_from_slice(&buf.as_bytes()[done..]);
            let n = self
                .timed(
                    "write",
                    &self.dir,
                    len - done,
                    file.write_at(Rc::new(rest), pos + done as u64),
                )
                .await
                .map_err(|e| StorageError::io("write", path(), e))?;
            if n == 0 {
                return Err(StorageError::io(
                    "write",
                    path(),
                    std::io::Error::new(std::io::ErrorKind::WriteZero, "write returned 0"),
                ));
            }
            done += n;
        }
        Ok(())
    }

    /// Finish a rolled segment: exact length, synced, indexes written.
    async fn close_segment(&self, base: u64, len: u64) -> Result<(), StorageError> {
        let path = segment::log_path(&self.dir, base);
        let file = self.ensure_file(base).await?;
        self.timed("truncate", &path, 0, file.truncate(len))
            .await
            .map_err(io_err("truncate", &path))?;
        self.timed("sync", &path, 0, file.sync())
            .await
            .map_err(io_err("sync", &path))?;
        let index = {
            let mut st = self.st.borrow_mut();
            st.segments.get_mut(base).map(|seg| {
                // Make the last time-index entry the segment's max
                // timestamp, for retention after restart.
                let rel = (seg.next_offset - 1 - seg.base_offset) as u32;
                if seg
                    .index
                    .times
                    .last()
                    .is_none_or(|t| t.timestamp < seg.max_timestamp)
                {
                    seg.index.times.push(TimeEntry {
                        timestamp: seg.max_timestamp,
                        rel_offset: rel,
                    });
                }
                seg.index.clone()
            })
        };
        if let Some(index) = index {
            index_files::write(&self.disk, &self.dir, base, &index).await?;
        }
        Ok(())
    }

    /// Open (creating) the file of segment `base` if it is not open yet.
    pub(super) async fn ensure_file(&self, base: u64) -> Result<Rc<D::File>, StorageError> {
        let open = {
            let st = self.st.borrow();
            let seg = st.segments.get(base).unwrap_or_else(|| {
                panic!("opening the file of segment {base}, which is not in the log")
            });
            seg.file.clone()
        };
        if let Some(f) = open {
            return Ok(f);
        }
        let path = segment::log_path(&self.dir, base);
        let f = Rc::new(
            self.timed("create segment", &path, 0, self.disk.open_rw(&path))
                .await
                .map_err(io_err("create segment", &path))?,
        );
        self.timed("sync dir", &self.dir, 0, self.disk.sync_dir(&self.dir))
            .await
            .map_err(io_err("sync dir", &self.dir))?;
        if let Some(s) = self.st.borrow_mut().segments.get_mut(base) {
            s.file = Some(f.clone());
        }
        Ok(f)
    }
}
