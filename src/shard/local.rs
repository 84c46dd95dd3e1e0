//! Serving operations on the partitions this shard owns. Called directly
//! for local partitions, or from [`handle`] for messages routed here.

use super::Shard;
use crate::partition::Partition;
use crate::protocol::messages::Acks;
use crate::router::ops::*;
use crate::router::ShardMsg;
use crate::storage::dma::DmaDisk;
use std::rc::Rc;
use std::time::{Duration, Instant};

/// Dispatch one routed message: each runs as its own task, started in
/// arrival order (so appends from one connection stay in order).
pub fn handle(shard: &Rc<Shard>, msg: ShardMsg) {
    let s = shard.clone();
    match msg {
        ShardMsg::Produce {
            parts,
            acks,
            timeout_ms,
            reply,
        } => {
            // The append's place in line is taken now, before the task is
            // spawned, so messages are appended in the order they arrived.
            let pending = append_in_order(&s, parts);
            shard
                .queues
                .spawn_bulk(async move {
                    let r = await_acks(pending.await, acks, timeout_ms).await;
                    let _ = reply.send(r);
                })
                .detach();
        }
        ShardMsg::Fetch {
            parts,
            max_bytes,
            wait_until,
            cancel,
            reply,
        } => {
            shard
                .queues
                .spawn_bulk(async move {
                    let r = fetch_local(&s, parts, max_bytes, wait_until, cancel).await;
                    let _ = reply.send(r);
                })
                .detach();
        }
        ShardMsg::Offsets { parts, reply } => {
            glommio::spawn_local(async move {
                let _ = reply.send(offsets_local(&s, parts).await);
            })
            .detach();
        }
        ShardMsg::Admin { op, reply } => {
            glommio::spawn_local(async move {
                let _ = reply.send(super::admin::execute(&s, op).await);
            })
            .detach();
        }
        ShardMsg::ApplyTopics { topics, reply } => {
            glommio::spawn_local(async move {
                s.apply_topics(topics).await;
                let _ = reply.send(());
            })
            .detach();
        }
        ShardMsg::Adopt { stream, kind } => {
            let stream = stream.bind_to_executor();
            (s.adopt)(&s, stream, kind);
        }
        ShardMsg::Task(f) => f(),
        ShardMsg::Shutdown { .. } => unreachable!("handled by the shard loop"),
    }
}

/// A produce whose appends are done, waiting (maybe) for durability.
pub struct Appended {
    results: Vec<ProducePartResult>,
    logs: Vec<Option<Rc<Partition<DmaDisk>>>>,
    /// Per part: proposals to a replicated partition's group, whose
    /// outcome decides the part's result.
    replicated: Vec<Option<Submitted>>,
    replication: Option<Rc<super::replication::Replication>>,
    /// The shard's clock, for the acks=all timeout.
    clock: Rc<dyn crate::clock::Clock>,
}

/// Append `parts` in arrival order (call this when the request arrives:
/// that is when its place in line is taken). A small append happens at
/// once when nothing waits ahead of it and the shard's write budget has
/// room; otherwise (and always for a large one) in the returned future,
/// when both allow it. See [`super::append_gate`].
pub fn append_in_order(
    shard: &Rc<Shard>,
    parts: Vec<ProducePart>,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = Appended>>> {
    let ticket = shard.append_gate.ticket();
    let bytes: usize = parts.iter().flat_map(|p| &p.frames).map(|f| f.len()).sum();
    if bytes <= APPEND_AT_ONCE_BYTES && ticket.ready(&shard.write_budget, bytes) {
        let mut appended = Appended::with_capacity(shard, parts.len());
        for p in parts {
            appended.push(append_part(shard, p));
        }
        drop(ticket);
        return Box::pin(std::future::ready(appended));
    }
    let s = shard.clone();
    Box::pin(async move {
        ticket.wait(&s.write_budget, bytes).await;
        let mut appended = Appended::with_capacity(&s, parts.len());
        for p in parts {
            appended.push(append_part(&s, p));
            // Still holding the turn, so order is kept; but a fresh
            // client's request is not stuck behind a 50 MiB append.
            glommio::yield_if_needed().await;
        }
        drop(ticket);
        appended
    })
}

/// Appends up to this size run without a task switch when nothing waits;
/// larger ones run in their own task and yield between partitions (a
/// request may carry many MiB for many partitions: copying all of it in
/// one poll kept other clients waiting 100+ ms).
const APPEND_AT_ONCE_BYTES: usize = 1 << 20;

impl Appended {
    fn with_capacity(shard: &Shard, n: usize) -> Appended {
        Appended {
            results: Vec::with_capacity(n),
            logs: Vec::with_capacity(n),
            replicated: Vec::with_capacity(n),
            replication: shard.replication().cloned(),
            clock: shard.clock.clone(),
        }
    }

    fn push(&mut self, (result, log, sub): Part) {
        self.results.push(result);
        self.logs.push(log);
        self.replicated.push(sub);
    }
}

/// Frames proposed to a replicated partition's Raft group.
pub struct Submitted {
    proposals: futures::channel::oneshot::Receiver<
        Result<Vec<crate::replica::Proposed>, crate::replica::ProposeError>,
    >,
    /// Offsets the last frame takes (its record count).
    last_frame_offsets: u64,
}

type Part = (
    ProducePartResult,
    Option<Rc<Partition<DmaDisk>>>,
    Option<Submitted>,
);

/// Append one part now (the caller holds the append turn); a replicated
/// partition's frames are proposed to its Raft group instead, in the same
/// order.
fn append_part(shard: &Rc<Shard>, p: ProducePart) -> Part {
    let mut sub = None;
    let (result, log) = if shard.shutting_down.get() {
        (Err(OpError::ShuttingDown), None)
    } else {
        match shard.partition(&p.topic, p.partition) {
            // The partition knows (no table lookup on the produce path).
            Ok(log) if log.is_replicated() => {
                let r = shard
                    .replication()
                    .expect("replicated partitions are a cluster's");
                let last_frame_offsets = p.frames.last().map_or(1, |f| {
                    crate::format::frame::parse_header(f)
                        .map_or(1, |h| h.last_offset_delta as u64 + 1)
                });
                let frames = p.frames.into_iter().map(|f| f.freeze()).collect();
                sub = Some(Submitted {
                    proposals: r.submit(&p.topic, p.partition, frames),
                    last_frame_offsets,
                });
                // Filled in by `await_acks` from the proposals' outcome.
                (Err(OpError::Timeout(0)), Some(log))
            }
            // One node: no election ever changes the leader epoch.
            Ok(log) => match log.append(p.frames, log.leader_epoch()) {
                Ok(o) => (Ok(o), Some(log)),
                Err(e) => (Err(OpError::Append(e)), None),
            },
            Err(e) => (Err(e), None),
        }
    };
    let result = ProducePartResult {
        topic: p.topic,
        partition: p.partition,
        result,
    };
    (result, log, sub)
}

/// Wait for a replicated part's proposals: acks=all until committed,
/// acks=1 until the leader appended them, acks=0 not at all.
async fn await_replicated(
    r: &super::replication::Replication,
    topic: &str,
    partition: u32,
    log: &Partition<DmaDisk>,
    sub: Submitted,
    acks: Acks,
) -> Result<crate::storage::AppendOutcome, OpError> {
    use crate::replica::{Outcome, ProposeError};
    let not_leader = |leader: Option<u64>| OpError::NotLeader {
        topic: topic.to_string(),
        partition,
        leader: leader.unwrap_or(0) as u32,
    };
    let proposals = match sub.proposals.await {
        Ok(Ok(p)) => p,
        Ok(Err(ProposeError::NotLeader { leader })) => return Err(not_leader(leader)),
        Ok(Err(ProposeError::Dropped)) | Err(_) => return Err(not_leader(None)),
        Ok(Err(ProposeError::Sequence(e))) => {
            return Err(OpError::Append(crate::storage::AppendError::Sequence(e)))
        }
        // A retry of a batch too old for its entry to be known here: it is
        // acknowledged once the high watermark passed it (it is then
        // committed); before that the producer retries.
        Ok(Err(ProposeError::Duplicate { base_offset })) => {
            return if base_offset < log.high_watermark() || acks != Acks::All {
                Ok(crate::storage::AppendOutcome {
                    base_offset,
                    last_offset: base_offset + sub.last_frame_offsets - 1,
                    log_start_offset: log.log_start_offset(),
                    duplicate: true,
                })
            } else {
                Err(not_leader(None))
            };
        }
    };
    let (Some(first), Some(last)) = (proposals.first().copied(), proposals.last().copied()) else {
        return Err(not_leader(None));
    };
    // Looked up once, not at every round the wait re-checks.
    let Some(key) = r.key_of(topic, partition) else {
        return Err(not_leader(None));
    };
    loop {
        let progressed = r.progressed().listen();
        let at = |p| match acks {
            Acks::All => match r.outcome(&key, p) {
                Outcome::Committed { base_offset } => Some(Ok(base_offset)),
                Outcome::Lost => Some(Err(())),
                Outcome::Pending => None,
            },
            _ => r.appended_at(&key, p).map(Ok),
        };
        match (at(first), at(last)) {
            (Some(Ok(base)), Some(Ok(last_base))) => {
                return Ok(crate::storage::AppendOutcome {
                    base_offset: base,
                    last_offset: last_base + sub.last_frame_offsets - 1,
                    log_start_offset: log.log_start_offset(),
                    duplicate: false,
                })
            }
            (Some(Err(())), _) | (_, Some(Err(()))) => return Err(not_leader(None)),
            _ => progressed.await,
        }
    }
}

/// For acks=all, wait (up to `timeout_ms`) until every appended batch is durable.
pub async fn await_acks(a: Appended, acks: Acks, timeout_ms: u32) -> Vec<ProducePartResult> {
    let Appended {
        mut results,
        logs,
        replicated,
        replication,
        clock,
    } = a;
    if let Some(r) = replication.filter(|_| replicated.iter().any(|s| s.is_some())) {
        let waits = results
            .iter()
            .zip(&logs)
            .zip(replicated)
            .map(|((res, log), sub)| {
                let r = r.clone();
                let (topic, partition, log) = (res.topic.clone(), res.partition, log.clone());
                async move {
                    match (sub, log) {
                        (Some(sub), Some(log)) if acks != Acks::None => {
                            Some(await_replicated(&r, &topic, partition, &log, sub, acks).await)
                        }
                        (Some(_), _) => Some(Ok(crate::storage::AppendOutcome {
                            base_offset: 0,
                            last_offset: 0,
                            log_start_offset: 0,
                            duplicate: false,
                        })),
                        _ => None,
                    }
                }
            });
        let all = futures::future::join_all(waits);
        let timeout = clock.sleep(Duration::from_millis(timeout_ms.max(1) as u64));
        let outcomes = futures_lite::future::or(async { Some(all.await) }, async {
            timeout.await;
            None
        })
        .await;
        match outcomes {
            Some(outcomes) => {
                for (res, o) in results.iter_mut().zip(outcomes) {
                    if let Some(o) = o {
                        res.result = o;
                    }
                }
            }
            None => {
                for res in results.iter_mut() {
                    if matches!(res.result, Err(OpError::Timeout(0))) {
                        res.result = Err(OpError::Timeout(timeout_ms));
                    }
                }
            }
        }
        // A request mixing replicated and single-replica partitions is
        // answered once the replicated parts are; the others' durability
        // (acks=all) is covered below.
    }
    if acks != Acks::All {
        return results;
    }
    let waits = results.iter().zip(&logs).map(|(r, log)| {
        let target = r.result.as_ref().ok().map(|o| o.last_offset);
        let log = log.clone();
        async move {
            match (log, target) {
                (Some(log), Some(last)) => Some(log.wait_durable(last).await),
                _ => None,
            }
        }
    });
    let all = futures::future::join_all(waits);
    let timeout = clock.sleep(Duration::from_millis(timeout_ms.max(1) as u64));
    match futures_lite::future::or(async { Some(all.await) }, async {
        timeout.await;
        None
    })
    .await
    {
        Some(outcomes) => {
            for (r, w) in results.iter_mut().zip(outcomes) {
                if let Some(Err(e)) = w {
                    r.result = Err(OpError::Storage(e));
                }
            }
        }
        None => {
            for (r, log) in results.iter_mut().zip(&logs) {
                if let (Ok(o), Some(log)) = (&r.result, log) {
                    if log.durable_offset() <= o.last_offset {
                        r.result = Err(OpError::Timeout(timeout_ms));
                    }
                }
            }
        }
    }
    results
}

/// Partitions one fetch reads at once on one shard, at most.
const READ_WINDOW: usize = 16;

/// Read the parts in request order, up to [`READ_WINDOW`] at a time, until
/// what is left of `max_bytes` holds no frame of the size read so far
/// ([`read_window_len`]); the parts after that are answered with their
/// positions and no data (the client asks for them again). Why not all at
/// once: each read may return a whole batch larger than its partition's
/// share (the first batch always goes), so reading every partition of a
/// fetch of 1,000 partitions at once held one batch per partition,
/// 0.5–0.8 GB for a 32 MiB fetch of 1 MiB batches.
///
/// Why the window shrinks as the budget fills: the answer is trimmed to
/// `max_bytes` afterwards (`dispatch::in_request_order_within`), and
/// frames read past it are thrown away and read again by the next fetch.
/// With a full window to the end, a consumer catching up on 1,000
/// partitions of ~660 KB batches read 1.47× the data from disk. So after
/// the first window, a window holds only as many partitions as batches of
/// the size seen so far fit in what is left, and each read asks for at
/// most its part of that. The first windows, before any frame was read,
/// start at one partition and double ([`read_window_len`]).
async fn read_parts(
    shard: &Rc<Shard>,
    parts: &[FetchPart],
    max_bytes: usize,
) -> (Vec<FetchPartResult>, usize) {
    let mut results = Vec::with_capacity(parts.len());
    let mut bytes = 0usize;
    let mut frames = 0usize;
    let mut next = 0usize;
    let mut windows = 0u32;
    while next < parts.len() {
        let left = max_bytes.saturating_sub(bytes);
        let window_len = read_window_len(left, bytes, frames, windows);
        if window_len == 0 {
            break;
        }
        windows += 1;
        let window = &parts[next..(next + window_len).min(parts.len())];
        next += window.len();
        let share = (left / window.len()).max(1);
        let reads = window.iter().map(|p| {
            let s = shard.clone();
            async move {
                let result = match s.partition(&p.topic, p.partition) {
                    Ok(log) => log
                        .read(p.offset, (p.max_bytes as usize).min(share))
                        .await
                        .map_err(OpError::Read),
                    Err(e) => Err(e),
                };
                FetchPartResult {
                    topic: p.topic.clone(),
                    partition: p.partition,
                    result,
                }
            }
        });
        let got = futures::future::join_all(reads).await;
        for r in &got {
            if let Ok(o) = &r.result {
                bytes += o.bytes;
                frames += o.frames.len();
            }
        }
        results.extend(got);
    }
    // The rest are not read: their positions only.
    results.extend(parts[next..].iter().map(|p| {
        FetchPartResult {
            topic: p.topic.clone(),
            partition: p.partition,
            result: shard
                .partition(&p.topic, p.partition)
                .map(|log| log.position()),
        }
    }));
    (results, bytes)
}

/// How many partitions the next window reads, with `left` bytes of the
/// shard's share still free after `bytes` in `frames` frames and `windows`
/// windows: while nothing was read, 1, 2, 4, ... up to a full window;
/// then as many as frames of the average size so far fit in `left` (0:
/// stop reading).
fn read_window_len(left: usize, bytes: usize, frames: usize, windows: u32) -> usize {
    if left == 0 {
        return 0;
    }
    match bytes.checked_div(frames) {
        // Nothing read yet (or only empty frames): no size to go by. One
        // partition first, then twice as many each window up to a full
        // one. Why not a full window at once: every read returns at least
        // its first frame, so 16 partitions of 64 KiB batches read 1 MiB
        // for a share of 512 KiB, and the answer's trim threw the rest
        // away, to be read again (tests/broker/disk_reads: 1.5x the data).
        None | Some(0) => (1usize << windows.min(4)).min(READ_WINDOW),
        Some(frame_bytes) => (left / frame_bytes).min(READ_WINDOW),
    }
}

/// Read the parts; with `wait_until`, wait for data to arrive on any of
/// them until then (or until `cancel` fires), then read again.
pub async fn fetch_local(
    shard: &Rc<Shard>,
    parts: Vec<FetchPart>,
    max_bytes: usize,
    wait_until: Option<Instant>,
    cancel: Option<flume::Receiver<()>>,
) -> Vec<FetchPartResult> {
    loop {
        // Listen before reading, so an append between the read and the wait is not missed.
        let listeners: Vec<_> = parts
            .iter()
            .filter_map(|p| shard.partition(&p.topic, p.partition).ok())
            .map(|partition| partition.data_event().listen())
            .collect();
        let (results, bytes) = read_parts(shard, &parts, max_bytes).await;
        let any_error = results.iter().any(|r| r.result.is_err());
        let now = shard.clock.now();
        let Some(deadline) = wait_until else {
            return results;
        };
        if bytes > 0 || any_error || now >= deadline || listeners.is_empty() {
            return results;
        }
        let data = futures::future::select_all(listeners.into_iter().map(Box::pin));
        let timer = shard.clock.sleep(deadline - now);
        let cancelled = async {
            match &cancel {
                Some(c) => {
                    let _ = c.recv_async().await;
                }
                None => futures::future::pending::<()>().await,
            }
        };
        let woke_by_cancel = futures_lite::future::or(
            futures_lite::future::or(
                async {
                    data.await;
                    false
                },
                async {
                    timer.await;
                    false
                },
            ),
            async {
                cancelled.await;
                true
            },
        )
        .await;
        if woke_by_cancel {
            return read_parts(shard, &parts, max_bytes).await.0;
        }
    }
}

/// OffsetForLeaderEpoch on a replicated partition: answered from the
/// group's epoch history by its leader (the end offset and the epoch;
/// `(u64::MAX, -1)` for an epoch the log never had); NOT_LEADER_OR_FOLLOWER
/// elsewhere.
async fn replicated_epoch_end(
    shard: &Rc<Shard>,
    topic: &str,
    partition: u32,
    epoch: i32,
) -> Result<(u64, i32), OpError> {
    let not_leader = |leader: Option<u32>| OpError::NotLeader {
        topic: topic.to_string(),
        partition,
        leader: leader.unwrap_or(0),
    };
    let r = shard.replication().ok_or_else(|| not_leader(None))?;
    let key = r.key_of(topic, partition).ok_or_else(|| not_leader(None))?;
    match r.epoch_end(&key, epoch.max(0) as u64).await {
        Ok(found) => Ok(found.map_or((u64::MAX, -1), |(e, end)| (end, e as i32))),
        Err((leader, _)) => Err(not_leader(leader)),
    }
}

pub async fn offsets_local(shard: &Rc<Shard>, parts: Vec<OffsetsPart>) -> Vec<OffsetsPartResult> {
    let mut out = Vec::with_capacity(parts.len());
    for p in parts {
        let result = match shard.partition(&p.topic, p.partition) {
            Ok(log) => {
                // "Latest" includes everything appended before the question:
                // a consumer started right after an acks=1 produce must see
                // it, so sync what is pending (one group commit) first.
                if matches!(p.query, OffsetQuery::Latest | OffsetQuery::MaxTimestamp) {
                    let appended = log.log_end_offset();
                    if appended > log.high_watermark() {
                        let _ = log.wait_durable(appended - 1).await;
                    }
                }
                let log_start_offset = log.log_start_offset();
                let high_watermark = log.high_watermark();
                let epoch = log.leader_epoch();
                // (offset, the leader epoch it is answered for)
                let answer = match p.query {
                    OffsetQuery::Earliest => Ok((log_start_offset, epoch)),
                    OffsetQuery::Latest => Ok((high_watermark, epoch)),
                    OffsetQuery::Timestamp(ts) => log
                        .offset_for_timestamp(ts)
                        .await
                        .map(|o| (o.unwrap_or(high_watermark), epoch))
                        .map_err(OpError::Read),
                    OffsetQuery::MaxTimestamp => log
                        .offset_of_max_timestamp()
                        .await
                        .map(|o| (o.unwrap_or(high_watermark), epoch))
                        .map_err(OpError::Read),
                    // One node: the partition has had one epoch, ending at
                    // the high watermark.
                    OffsetQuery::EpochEnd(e) if !log.is_replicated() => Ok(if e >= epoch {
                        (high_watermark, epoch)
                    } else {
                        (u64::MAX, -1)
                    }),
                    OffsetQuery::EpochEnd(e) => {
                        replicated_epoch_end(shard, &p.topic, p.partition, e).await
                    }
                };
                answer.map(|(offset, leader_epoch)| PartitionOffsets {
                    offset,
                    log_start_offset,
                    high_watermark,
                    leader_epoch,
                })
            }
            Err(e) => Err(e),
        };
        out.push(OffsetsPartResult {
            topic: p.topic,
            partition: p.partition,
            result,
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_read_window_shrinks_to_what_still_fits_in_the_share() {
        // Nothing read yet: one partition, then 2, 4, 8, 16 while the
        // partitions read are empty.
        assert_eq!(read_window_len(25 << 20, 0, 0, 0), 1);
        assert_eq!(read_window_len(25 << 20, 0, 0, 1), 2);
        assert_eq!(read_window_len(1 << 20, 0, 0, 3), 8);
        assert_eq!(read_window_len(1 << 20, 0, 0, 4), READ_WINDOW);
        assert_eq!(read_window_len(1 << 20, 0, 0, 40), READ_WINDOW);
        // 10 MiB read in 16 frames of 640 KiB, 15 MiB left: 24 would fit,
        // the window caps it.
        assert_eq!(read_window_len(15 << 20, 10 << 20, 16, 2), READ_WINDOW);
        // 2 MiB left of frames of 640 KiB: three more partitions.
        assert_eq!(read_window_len(2 << 20, 10 << 20, 16, 2), 3);
        // Less than one frame left: stop, rather than read a batch that
        // the answer's trim would throw away.
        assert_eq!(read_window_len(300 << 10, 10 << 20, 16, 2), 0);
        assert_eq!(read_window_len(0, 10 << 20, 16, 2), 0);
    }
}
