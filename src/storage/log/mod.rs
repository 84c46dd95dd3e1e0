//! The log of one partition: its segments, appender, batch cache, producer
//! state and offsets, and the flusher task that does its I/O.
//!
//! One concept per file:
//! - this file: the [`Log`] handle, its state, and the operations that only
//!   look at or wait on that state (offsets, `wait_durable`, `close`);
//! - [`replayer`]: [`Log::open`], recovery of the segments on disk;
//! - [`append`]: appends (leader: offsets assigned here; follower: offsets
//!   kept) and segment rolls, all synchronous;
//! - [`writer`] and [`flusher`]: the write pipeline (chunk writes, space
//!   reservations, closing rolled segments) and the task that drives it
//!   (group commit, timed flushes, checkpoints);
//! - [`reader`]: reads from the cache or the segment files, checked;
//! - [`truncate`]: retention (prefix) and divergent-tail (suffix) truncation;
//! - [`slow_disk`]: every disk operation of the flusher and the readers
//!   timed, and the slow ones counted and logged.
//!
//! Lifecycle: [`Log::open`] recovers (or creates) the partition directory
//! and returns the log; the owning shard spawns [`Log::run_flusher`].
//! Appends and reads serve requests; [`Log::close`] drains, syncs, writes
//! indexes and a checkpoint, after which the flusher exits.
//!
//! Ownership and concurrency: a log lives on exactly one shard (the owner of
//! its partition) and is shared there through `Rc`. All state is in a
//! `RefCell` that is never borrowed across an `.await`: appends and cache
//! reads are synchronous; only the flusher and disk reads await, on `Rc`'d
//! file handles taken out of the state first. That makes appends ordered
//! (they happen in the order requests reach the shard) and keeps the I/O
//! pipeline (write-behind, group commit) in one place.
//!
//! Durability contract:
//! - after an append returns, the batches are readable (cache) but in memory only;
//! - [`Log::wait_durable`] resolves once an fdatasync covers the given offset;
//!   concurrent waiters share one sync (group commit);
//! - the flusher syncs on its own at most `flush_interval_ms` after data
//!   becomes dirty (as measured by the log's [`Clock`]).
//!
//! Visibility is not decided here: reads take the visible end (`max_offset`)
//! from the partition layer above, which today passes the durable offset.

mod append;
mod flusher;
mod index_files;
mod reader;
mod replayer;
mod slow_disk;
mod truncate;
mod writer;

pub use append::{sync_trigger_bytes, SYNC_TRIGGER_MIN_BYTES};

use super::appender::{Appender, Chunk};
use super::cache::BatchCache;
use super::file::{Disk, SegmentFile};
use super::offsets::LogOffsets;
use super::producer_state::{ProducerEntry, ProducerTable};
use super::segment_set::SegmentSet;
use super::write_budget::Unwritten;
use super::StorageError;
use crate::clock::Clock;
use crate::config::TopicConfig;
use crate::event::LocalEvent;
use bytes::Bytes;
use std::cell::RefCell;
use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::Instant;

/// Settings of one partition log.
#[derive(Debug, Clone)]
pub struct LogConfig {
    pub topic: TopicConfig,
    pub write_chunk_bytes: usize,
    pub write_behind: usize,
    pub flush_interval_ms: u64,
    /// See `BrokerConfig::sync_min_interval_us`.
    pub sync_min_interval: std::time::Duration,
    pub checkpoint_interval_ms: u64,
    /// Reserve segment file space this far ahead of the writes (0: never).
    pub preallocate_bytes: u64,
}

impl LogConfig {
    pub fn from_broker(b: &crate::config::BrokerConfig, topic: TopicConfig) -> Self {
        LogConfig {
            topic,
            write_chunk_bytes: b.write_chunk_bytes,
            write_behind: b.write_behind,
            flush_interval_ms: b.flush_interval_ms,
            sync_min_interval: std::time::Duration::from_micros(b.sync_min_interval_us),
            checkpoint_interval_ms: b.recovery_point_interval_ms,
            preallocate_bytes: b.segment_preallocate_bytes,
        }
    }
}

/// Result of an append.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppendOutcome {
    /// Offset of the first record appended (or, for a pure duplicate, originally appended).
    pub base_offset: u64,
    pub last_offset: u64,
    pub log_start_offset: u64,
    /// Every batch was a duplicate of an earlier idempotent append.
    pub duplicate: bool,
}

/// Result of a read.
#[derive(Debug, Clone, Default)]
pub struct ReadOutcome {
    /// Whole frames; the first contains the requested offset.
    pub frames: Vec<Bytes>,
    pub bytes: usize,
    pub log_start_offset: u64,
}

#[derive(Debug, Clone)]
enum Health {
    Ok,
    /// Writes failed with ENOSPC; the data stays queued and is retried.
    NoSpace,
    /// A write or sync failed: no more writes until the log is reopened.
    Failed(Box<StorageError>),
}

/// Work queued for the flusher, in order.
enum Pending<B> {
    Chunk(Chunk<B>),
    /// Close segment `old_base` at `old_len` bytes and start `new_base`.
    Roll {
        old_base: u64,
        old_len: u64,
        new_base: u64,
    },
}

type Buf<D> = <<D as Disk>::File as SegmentFile>::Buf;

struct LogState<D: Disk> {
    segments: SegmentSet<D::File>,
    offsets: LogOffsets,
    appender: Appender<Buf<D>>,
    pending: VecDeque<Pending<Buf<D>>>,
    cache: BatchCache,
    /// Appended batches not yet written, charged to the shard's write budget.
    unwritten: Unwritten,
    producers: ProducerTable,
    /// Highest offset an acks=all waiter is waiting to see durable.
    sync_wanted_offset: u64,
    /// Bytes appended since the last sync point: what consumers cannot see
    /// yet (the visible end is the durable offset).
    unsynced_bytes: usize,
    dirty_since: Option<Instant>,
    /// When the last sync point was taken: an asked-for sync waits until
    /// `sync_min_interval` after it.
    last_sync_at: Option<Instant>,
    /// A reader found nothing new and waits: the next append asks for a sync.
    reader_waiting: bool,
    health: Health,
    /// Corruption found in durable data on a read: everything is refused.
    offline: Option<StorageError>,
    closing: bool,
    /// The closing sync finished: everything is durable, indexed and checkpointed.
    closed: bool,
    last_checkpoint: Option<Instant>,
    /// The flusher is in a round of writes and syncs (it holds file handles).
    flusher_busy: bool,
    /// A suffix truncation owns the files: appends are refused and the
    /// flusher stays idle until it is done.
    truncating: bool,
}

impl<D: Disk> LogState<D> {
    /// The offsets' order, and that they agree with the segments and the
    /// appender. O(1): called after every append, sync, roll, truncation
    /// and retention step.
    fn assert_invariants(&self) {
        self.offsets.assert_invariants();
        let active = self.segments.active();
        // DeleteRecords may put the log start inside the first segment
        // (or past sealed segments retention has not removed yet).
        assert!(
            self.offsets.log_start() >= self.segments.log_start(),
            "the log start is in a stored segment or at the log end"
        );
        assert_eq!(
            self.offsets.next(),
            active.next_offset,
            "the active segment ends at the log end"
        );
        assert_eq!(self.appender.segment_base(), active.base_offset);
        assert_eq!(
            self.appender.position(),
            active.len,
            "appender and segment agree on the end"
        );
    }
}

/// The file holding a partition's DeleteRecords floor (a decimal offset):
/// records below it are gone even while their segment is still on disk.
pub const LOG_START_FILE: &str = "log-start";

pub struct Log<D: Disk> {
    disk: D,
    dir: PathBuf,
    cfg: LogConfig,
    /// The topic config in force: starts as `cfg.topic`, replaced live by
    /// [`Log::set_topic_config`] when an admin alters the topic.
    topic: RefCell<TopicConfig>,
    clock: Rc<dyn Clock>,
    st: RefCell<LogState<D>>,
    /// Fires when data becomes durable: long-poll fetches wait on it.
    pub data_event: Rc<LocalEvent>,
    durable_event: Rc<LocalEvent>,
    flusher_event: Rc<LocalEvent>,
}

fn io_err<'a>(
    op: &'static str,
    path: &'a Path,
) -> impl FnOnce(std::io::Error) -> StorageError + 'a {
    move |e| StorageError::io(op, path, e)
}

impl<D: Disk> Log<D> {
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn config(&self) -> &LogConfig {
        &self.cfg
    }

    /// The log end: the offset the next appended record gets.
    pub fn next_offset(&self) -> u64 {
        self.st.borrow().offsets.next()
    }

    /// Every offset below this is covered by an fdatasync.
    pub fn durable_offset(&self) -> u64 {
        self.st.borrow().offsets.durable()
    }

    pub fn log_start_offset(&self) -> u64 {
        self.st.borrow().offsets.log_start()
    }

    /// The idempotent producers this partition remembers (appended, maybe
    /// not yet durable), by producer id.
    pub fn producers(&self) -> Vec<(i64, ProducerEntry)> {
        self.st.borrow().producers.sorted()
    }

    /// A replicated partition's replica: bring in the producer table as of
    /// the log start (the batches before it are gone; see
    /// [`ProducerTable::merge_start`]). After open, a suffix truncation or
    /// a restart, which rebuild the table from the log's files.
    pub fn merge_start_producers(&self, start: &ProducerTable) {
        self.st.borrow_mut().producers.merge_start(start)
    }

    /// The largest batch max timestamp of any segment (appended, maybe not
    /// yet durable), or -1 for an empty log.
    pub fn max_timestamp(&self) -> i64 {
        let st = self.st.borrow();
        st.segments
            .iter()
            .map(|s| s.max_timestamp)
            .max()
            .unwrap_or(-1)
    }

    /// The topic config in force now.
    pub fn topic_config(&self) -> TopicConfig {
        self.topic.borrow().clone()
    }

    /// Apply an altered topic config from now on (segment rolls, index
    /// spacing, batch limit, retention).
    pub fn set_topic_config(&self, t: TopicConfig) {
        *self.topic.borrow_mut() = t;
    }

    pub fn segment_count(&self) -> usize {
        self.st.borrow().segments.len()
    }

    pub fn size_bytes(&self) -> u64 {
        self.st.borrow().segments.total_bytes()
    }

    pub fn cache_bytes(&self) -> usize {
        self.st.borrow().cache.bytes()
    }

    /// The error writes get in this health state, if any.
    fn check_health(&self, health: &Health) -> Result<(), StorageError> {
        match health {
            Health::Ok => Ok(()),
            Health::NoSpace => Err(StorageError::NoSpace {
                path: self.dir.clone(),
            }),
            Health::Failed(cause) => Err(StorageError::Failed {
                dir: self.dir.clone(),
                cause: cause.clone(),
            }),
        }
    }

    /// Durable progress (or a failure): wake acks=all waiters and long polls.
    fn notify_durable(&self) {
        self.durable_event.notify();
        self.data_event.notify();
    }

    /// Wait until every offset up to and including `last_offset` is durable.
    /// Asks the flusher for a sync; concurrent waiters share it.
    pub async fn wait_durable(&self, last_offset: u64) -> Result<(), StorageError> {
        loop {
            let listener = self.durable_event.listen();
            {
                let mut st = self.st.borrow_mut();
                if st.offsets.durable() > last_offset {
                    return Ok(());
                }
                self.check_health(&st.health)?;
                if st.sync_wanted_offset <= last_offset {
                    st.sync_wanted_offset = last_offset + 1;
                    self.flusher_event.notify();
                }
            }
            listener.await;
        }
    }

    /// A reader waits at the visible end: make what is appended durable
    /// soon (group-committed with any acks=all waiters), now and on the
    /// next append, rather than at the flush interval.
    pub fn reader_waiting_at_end(&self) {
        let mut st = self.st.borrow_mut();
        st.reader_waiting = true;
        let next = st.offsets.next();
        if next > st.offsets.durable() && st.sync_wanted_offset < next {
            st.sync_wanted_offset = next;
            self.flusher_event.notify();
        }
    }

    /// Mark written batches evictable, and evict the shard's oldest written
    /// batches while it is over budget.
    pub fn trim_cache(&self) -> usize {
        let mut st = self.st.borrow_mut();
        let flushed = st.offsets.flushed();
        st.cache.evict(flushed)
    }

    /// Stop accepting appends, write everything, sync, write indexes and a
    /// checkpoint. The flusher exits after this completes.
    pub async fn close(&self) -> Result<(), StorageError> {
        self.st.borrow_mut().closing = true;
        self.flusher_event.notify();
        loop {
            let l = self.durable_event.listen();
            {
                let st = self.st.borrow();
                if st.closed {
                    return Ok(());
                }
                // On a full disk, closing cannot wait for space that may
                // never come: what is unsynced stays unsynced (acks=all data
                // is durable already) and recovery sorts out the tail.
                self.check_health(&st.health)?;
            }
            l.await;
        }
    }
}
