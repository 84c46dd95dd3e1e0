//! Fan-out and gather: a request from a connection on this shard, split by
//! owning shard, served locally or routed, and gathered back.

use super::local::{append_in_order, await_acks, fetch_local, offsets_local};
use super::Shard;
use crate::protocol::messages::Acks;
use crate::router::ops::*;
use crate::router::{reply_channel, ShardMsg};
use bytes::BytesMut;
use futures::stream::{FuturesUnordered, StreamExt};
use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::time::{Duration, Instant};

type LocalFuture<T> = Pin<Box<dyn Future<Output = T>>>;

impl Shard {
    fn group_by_owner<T>(
        &self,
        items: Vec<T>,
        key: impl Fn(&T) -> (&str, u32),
    ) -> BTreeMap<usize, Vec<T>> {
        let mut groups: BTreeMap<usize, Vec<T>> = BTreeMap::new();
        let topics = self.topics();
        for it in items {
            let (t, p) = key(&it);
            let owner = self.serving_shard_in(&topics, t, p);
            groups.entry(owner).or_default().push(it);
        }
        groups
    }

    /// Route a message and wait for its reply; a vanished shard yields None.
    fn route<T: Send + 'static>(
        &self,
        shard: usize,
        make: impl FnOnce(crate::router::Reply<T>) -> ShardMsg,
    ) -> LocalFuture<Option<T>> {
        let (tx, rx) = reply_channel();
        let sent = self.router.send(shard, make(tx)).is_ok();
        Box::pin(async move {
            if !sent {
                return None;
            }
            rx.recv_async().await.ok()
        })
    }

    /// Produce to any partitions; results come back per partition.
    ///
    /// The appends are *issued* when this is called, not when the future is
    /// first polled: local ones take their place in the append order and
    /// routed ones are sent. A caller that must keep its requests in order
    /// (a connection's produces) may let the next request go as soon as
    /// this returns.
    pub fn produce(
        self: &Rc<Self>,
        mut parts: Vec<ProducePart>,
        acks: Acks,
        timeout_ms: u32,
    ) -> LocalFuture<Vec<ProducePartResult>> {
        detach_small_parts(&mut parts);
        let groups = self.group_by_owner(parts, |p| (p.topic.as_str(), p.partition));
        let mut waits: Vec<LocalFuture<Vec<ProducePartResult>>> = Vec::new();
        for (owner, parts) in groups {
            if owner == self.id {
                let appended = append_in_order(self, parts);
                waits.push(Box::pin(async move {
                    await_acks(appended.await, acks, timeout_ms).await
                }));
            } else {
                let keys: Vec<(String, u32)> = parts
                    .iter()
                    .map(|p| (p.topic.clone(), p.partition))
                    .collect();
                let f = self.route(owner, |reply| ShardMsg::Produce {
                    parts,
                    acks,
                    timeout_ms,
                    reply,
                });
                waits.push(Box::pin(async move {
                    f.await.unwrap_or_else(|| {
                        keys.into_iter()
                            .map(|(topic, partition)| ProducePartResult {
                                topic,
                                partition,
                                result: Err(OpError::ShuttingDown),
                            })
                            .collect()
                    })
                }));
            }
        }
        Box::pin(async move {
            futures::future::join_all(waits)
                .await
                .into_iter()
                .flatten()
                .collect()
        })
    }

    fn fetch_group(
        self: &Rc<Self>,
        owner: usize,
        parts: Vec<FetchPart>,
        max_bytes: usize,
        wait_until: Option<Instant>,
        cancel: Option<flume::Receiver<()>>,
    ) -> LocalFuture<Vec<FetchPartResult>> {
        if owner == self.id {
            let s = self.clone();
            return Box::pin(
                async move { fetch_local(&s, parts, max_bytes, wait_until, cancel).await },
            );
        }
        let keys: Vec<(String, u32)> = parts
            .iter()
            .map(|p| (p.topic.clone(), p.partition))
            .collect();
        let f = self.route(owner, |reply| ShardMsg::Fetch {
            parts,
            max_bytes,
            wait_until,
            cancel,
            reply,
        });
        Box::pin(async move {
            f.await.unwrap_or_else(|| {
                keys.into_iter()
                    .map(|(topic, partition)| FetchPartResult {
                        topic,
                        partition,
                        result: Err(OpError::ShuttingDown),
                    })
                    .collect()
            })
        })
    }

    /// Fetch from any partitions: one result per distinct partition, in
    /// request order, holding at most `max_bytes` of frames in all, except
    /// that the answer's first frame always goes (a batch larger than the
    /// limits must not stall a consumer), as in Kafka. A partition whose
    /// data no longer fits keeps its offsets and gets no frames. Long poll:
    /// if fewer than `min_bytes` are available, wait up to `max_wait_ms`
    /// for more; the first shard that sees enough data cancels the others'
    /// waits.
    pub async fn fetch(
        self: &Rc<Self>,
        parts: Vec<FetchPart>,
        max_wait_ms: u32,
        min_bytes: u32,
        max_bytes: usize,
    ) -> Vec<FetchPartResult> {
        let order: Vec<(String, u32)> = parts
            .iter()
            .map(|p| (p.topic.clone(), p.partition))
            .collect();
        let start = self.clock.now();
        let results = self
            .fetch_unordered(parts, max_wait_ms, min_bytes, max_bytes)
            .await;
        let took = self.clock.now().saturating_duration_since(start);
        if took >= Duration::from_secs(1) {
            tracing::debug!(
                took_ms = took.as_millis() as u64,
                max_wait_ms,
                partitions = order.len(),
                "a fetch took long to read"
            );
        }
        in_request_order_within(order, results, max_bytes)
    }

    /// [`Shard::fetch`]'s reads, in the order the shards answer. Each shard
    /// stops reading once its part of the answer holds its share of
    /// `max_bytes` (a read may pass it by one window of reads).
    async fn fetch_unordered(
        self: &Rc<Self>,
        parts: Vec<FetchPart>,
        max_wait_ms: u32,
        min_bytes: u32,
        max_bytes: usize,
    ) -> Vec<FetchPartResult> {
        let start = self.clock.now();
        let groups = self.group_by_owner(parts.clone(), |p| (p.topic.as_str(), p.partition));
        // Each shard reads its share, so that together they read about
        // the answer's size rather than `max_bytes` each (the excess was
        // read, then trimmed away).
        let max_bytes = (max_bytes / groups.len().max(1)).max(1);
        let first = futures::future::join_all(
            groups
                .into_iter()
                .map(|(owner, parts)| self.fetch_group(owner, parts, max_bytes, None, None)),
        )
        .await;
        let results: Vec<FetchPartResult> = first.into_iter().flatten().collect();
        let bytes: usize = results
            .iter()
            .map(|r| r.result.as_ref().map(|o| o.bytes).unwrap_or(0))
            .sum();
        if max_wait_ms == 0 || bytes >= min_bytes.max(1) as usize {
            return results;
        }
        let deadline = start + Duration::from_millis(max_wait_ms as u64);
        let groups = self.group_by_owner(parts, |p| (p.topic.as_str(), p.partition));
        let mut cancels = Vec::new();
        let mut pending: FuturesUnordered<_> = groups
            .into_iter()
            .map(|(owner, parts)| {
                let (tx, rx) = flume::bounded::<()>(1);
                cancels.push(tx);
                self.fetch_group(owner, parts, max_bytes, Some(deadline), Some(rx))
            })
            .collect();
        let mut out = Vec::new();
        let mut got = 0usize;
        while let Some(rs) = pending.next().await {
            got += rs
                .iter()
                .map(|r| r.result.as_ref().map(|o| o.bytes).unwrap_or(0))
                .sum::<usize>();
            out.extend(rs);
            if got >= min_bytes.max(1) as usize {
                // Dropping the senders wakes every waiting shard.
                cancels.clear();
            }
        }
        out
    }

    /// Offsets of any partitions.
    pub async fn offsets(self: &Rc<Self>, parts: Vec<OffsetsPart>) -> Vec<OffsetsPartResult> {
        let groups = self.group_by_owner(parts, |p| (p.topic.as_str(), p.partition));
        let futs =
            groups
                .into_iter()
                .map(|(owner, parts)| -> LocalFuture<Vec<OffsetsPartResult>> {
                    if owner == self.id {
                        let s = self.clone();
                        return Box::pin(async move { offsets_local(&s, parts).await });
                    }
                    let keys: Vec<(String, u32)> = parts
                        .iter()
                        .map(|p| (p.topic.clone(), p.partition))
                        .collect();
                    let f = self.route(owner, |reply| ShardMsg::Offsets { parts, reply });
                    Box::pin(async move {
                        f.await.unwrap_or_else(|| {
                            keys.into_iter()
                                .map(|(topic, partition)| OffsetsPartResult {
                                    topic,
                                    partition,
                                    result: Err(OpError::ShuttingDown),
                                })
                                .collect()
                        })
                    })
                });
        futures::future::join_all(futs)
            .await
            .into_iter()
            .flatten()
            .collect()
    }

    /// Run an admin operation on the controller (shard 0).
    pub async fn admin(self: &Rc<Self>, op: AdminOp) -> AdminResult {
        if self.id == 0 {
            return super::admin::execute(self, op).await;
        }
        self.route(0, |reply| ShardMsg::Admin { op, reply })
            .await
            .unwrap_or(Err(AdminError::ShuttingDown))
    }

    /// Run `f` on shard `target` (a local future there) and return its result.
    pub fn call_on<T, F, Fut>(self: &Rc<Self>, target: usize, f: F) -> LocalFuture<Option<T>>
    where
        T: Send + 'static,
        F: FnOnce(Rc<Shard>) -> Fut + Send + 'static,
        Fut: Future<Output = T> + 'static,
    {
        if target == self.id {
            let s = self.clone();
            return Box::pin(async move { Some(f(s).await) });
        }
        let (tx, rx) = reply_channel::<T>();
        let msg = ShardMsg::Task(Box::new(move || {
            let shard = Shard::current();
            glommio::spawn_local(async move {
                let _ = tx.send(f(shard).await);
            })
            .detach();
        }));
        let sent = self.router.send(target, msg).is_ok();
        Box::pin(async move {
            if !sent {
                return None;
            }
            rx.recv_async().await.ok()
        })
    }
}

/// `results` in the order of `order` (a partition listed twice is answered
/// once), their frames kept while they fit in what is left of `max_bytes`;
/// the first frame of the answer always fits. Once a partition's frame does
/// not fit, that partition's later frames are dropped too, so a consumer
/// never sees a gap inside a partition; a later partition's smaller frames
/// may still fit.
fn in_request_order_within(
    order: Vec<(String, u32)>,
    results: Vec<FetchPartResult>,
    max_bytes: usize,
) -> Vec<FetchPartResult> {
    let mut by_key: std::collections::HashMap<(String, u32), FetchPartResult> = results
        .into_iter()
        .map(|r| ((r.topic.clone(), r.partition), r))
        .collect();
    let mut budget = max_bytes;
    let mut first_sent = false;
    let mut out = Vec::with_capacity(order.len());
    for key in order {
        let Some(mut r) = by_key.remove(&key) else {
            continue;
        };
        if let Ok(o) = &mut r.result {
            let mut kept = 0;
            for f in &o.frames {
                if first_sent && f.len() > budget {
                    break;
                }
                budget = budget.saturating_sub(f.len());
                first_sent = true;
                kept += 1;
            }
            o.frames.truncate(kept);
            o.bytes = o.frames.iter().map(|f| f.len()).sum();
        }
        out.push(r);
    }
    out
}

/// A part whose frames hold less than this fraction of the request's
/// record bytes gets frames of its own ([`detach_small_parts`]).
const DETACH_BELOW_FRACTION: usize = 4;

/// Copy the frames of each part that holds under a quarter of the
/// request's record bytes into allocations of their own.
///
/// Why: a request is read into one allocation and its frames are slices
/// of it, so the batch cache (which charges each batch only its own bytes)
/// keeps the whole request alive until the last of its batches is evicted,
/// and partitions evict at different times. With 1,000 partitions (loadgen,
/// no consumer) the broker's peak RSS was 2.60-2.78 GiB against its
/// 2,465 MiB bound; with every batch copied, 2.20-2.26 GiB at the same
/// throughput and CPU per GB; with this rule, 2.51-2.57 GiB (README,
/// "Against the disk"). Why not copy every batch: that is a second copy
/// of the payload, and a request of a few large batches (4 partitions)
/// loses them from the cache together. Requests of many small batches
/// (Kafka clients' default 16 KiB batches over many partitions) are the
/// case this is for.
///
/// Since the cache evicts shard-wide, oldest first (`storage::cache`), a
/// request's batches on one shard leave together, so this matters less;
/// it still spares a part of a request read on the other shard from
/// waiting for that shard's evictions. Kept because without it, in one
/// set of interleaved runs with 4 partitions, 3 of 4 runs were 10-17%
/// slower (1,645, 1,340, 1,289 and 1,401 against 1,630, 1,603, 1,520
/// and 1,551 MiB/s), and with it equal; not shown to matter beyond noise.
fn detach_small_parts(parts: &mut [ProducePart]) {
    let bytes = |p: &ProducePart| p.frames.iter().map(|f| f.len()).sum::<usize>();
    let total: usize = parts.iter().map(bytes).sum();
    for p in parts.iter_mut() {
        if bytes(p) * DETACH_BELOW_FRACTION < total {
            for f in &mut p.frames {
                *f = BytesMut::from(&f[..]);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn only_parts_under_a_quarter_of_the_request_get_their_own_frames() {
        // Frames that share the request's allocation, as decoded.
        let mut request = BytesMut::from(&[7u8; 1000][..]);
        let frames: Vec<BytesMut> = [700, 100, 100, 100]
            .iter()
            .map(|&n| request.split_to(n))
            .collect();
        let part = |i: u32, frames: &[BytesMut]| ProducePart {
            topic: "t".into(),
            partition: i,
            frames: frames.to_vec(),
        };
        let mut parts = vec![
            part(0, &frames[..1]),
            part(1, &frames[1..3]),
            part(2, &frames[3..]),
        ];
        let at = |parts: &[ProducePart]| -> Vec<*const u8> {
            parts
                .iter()
                .flat_map(|p| p.frames.iter().map(|f| f.as_ptr()))
                .collect()
        };
        let before = at(&parts);
        detach_small_parts(&mut parts);
        let after = at(&parts);
        // 700 of 1,000 bytes stay where they were; 200 and 100 move.
        assert_eq!(after[0], before[0]);
        assert!(after[1..].iter().zip(&before[1..]).all(|(a, b)| a != b));
        let lens: Vec<usize> = parts
            .iter()
            .map(|p| p.frames.iter().map(|f| f.len()).sum())
            .collect();
        assert_eq!(lens, vec![700, 200, 100]);
        assert!(parts
            .iter()
            .all(|p| p.frames.iter().all(|f| f.iter().all(|&b| b == 7))));
    }

    use super::*;
    use crate::partition::FetchOutcome;
    use bytes::Bytes;

    fn result(partition: u32, frames: &[usize]) -> FetchPartResult {
        let frames: Vec<Bytes> = frames.iter().map(|n| Bytes::from(vec![0u8; *n])).collect();
        FetchPartResult {
            topic: "t".into(),
            partition,
            result: Ok(FetchOutcome {
                bytes: frames.iter().map(|f| f.len()).sum(),
                frames,
                high_watermark: 9,
                last_stable_offset: 9,
                log_start_offset: 0,
            }),
        }
    }

    fn sizes(rs: &[FetchPartResult]) -> Vec<(u32, Vec<usize>)> {
        rs.iter()
            .map(|r| {
                let o = r.result.as_ref().unwrap();
                (r.partition, o.frames.iter().map(|f| f.len()).collect())
            })
            .collect()
    }

    #[test]
    fn an_answer_is_trimmed_to_max_bytes_in_request_order_but_its_first_frame_goes() {
        let order: Vec<(String, u32)> = [2, 0, 1].iter().map(|p| ("t".into(), *p)).collect();
        // The shards answered in another order.
        let rs = vec![result(0, &[40, 40]), result(1, &[10]), result(2, &[100, 5])];
        let got = in_request_order_within(order.clone(), rs.clone(), 60);
        // Partition 2's first frame (100 > 60) goes; nothing after fits.
        assert_eq!(sizes(&got), vec![(2, vec![100]), (0, vec![]), (1, vec![])]);
        let got = in_request_order_within(order, rs, 150);
        assert_eq!(
            sizes(&got),
            vec![(2, vec![100, 5]), (0, vec![40]), (1, vec![])],
            "a frame that does not fit ends the answer, so no partition has a gap"
        );
        assert_eq!(got[1].result.as_ref().unwrap().bytes, 40);
    }

    #[test]
    fn a_partition_listed_twice_is_answered_once() {
        let order: Vec<(String, u32)> = [0, 0].iter().map(|p| ("t".into(), *p)).collect();
        let got = in_request_order_within(order, vec![result(0, &[1])], 10);
        assert_eq!(sizes(&got), vec![(0, vec![1])]);
    }
}
