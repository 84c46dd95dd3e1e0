//! A consumer of one topic: fetches partitions in offset order, decodes
//! (decompressing) batches, and hands out records.
//!
//! Each partition keeps a position (next offset to read). A fetch asks for
//! every assigned partition at once; the broker long-polls up to
//! `max_wait_ms` when nothing is new. Batches that start before the
//! position (a fetch from the middle of a batch) are trimmed.
//!
//! **One fetch ahead.** As soon as an answer is absorbed (positions moved
//! past its records), the next fetch is sent from the new positions, so the
//! broker reads and sends it while the caller handles the records just
//! returned. With one fetch in flight the broker idles during the client's
//! decode and the consumer fell behind a max-rate producer (issue 14: 368
//! of 491 MiB/s on one partition). Kafka's consumer does the same (a fetch
//! is sent for partitions whose buffered records are being handed out). At
//! most two answers are held: the one being handed out and the one ahead.

use super::routes::{retry_backoff, ROUTED_ATTEMPTS_MAX};
use super::{Client, ClientError};
use crate::format::frame::FrameIter;
use crate::format::{for_each_batch_record, BatchRecord};
use crate::protocol::messages::{FetchPartition, FetchRequest, FetchResponse, EARLIEST, LATEST};
use crate::protocol::ErrorCode;
use bytes::Bytes;
use std::collections::BTreeMap;
use std::sync::Arc;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartAt {
    Earliest,
    Latest,
    Offset(u64),
    Timestamp(i64),
}

#[derive(Debug, Clone)]
pub struct ConsumerConfig {
    pub max_wait_ms: u32,
    pub min_bytes: u32,
    pub max_bytes: u32,
    pub partition_max_bytes: u32,
    /// Largest decompressed batch accepted.
    pub decompress_limit: usize,
}

impl Default for ConsumerConfig {
    fn default() -> Self {
        ConsumerConfig {
            max_wait_ms: 500,
            min_bytes: 1,
            max_bytes: 32 << 20,
            partition_max_bytes: 4 << 20,
            decompress_limit: 256 << 20,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Message {
    pub topic: Arc<str>,
    pub partition: u32,
    pub offset: u64,
    pub timestamp_ms: i64,
    pub key: Option<Bytes>,
    pub value: Option<Bytes>,
    pub headers: Vec<(String, Option<Bytes>)>,
}

pub struct Consumer {
    client: Client,
    topic: Arc<str>,
    cfg: ConsumerConfig,
    positions: BTreeMap<u32, u64>,
    high_watermarks: BTreeMap<u32, u64>,
    /// Where the next fetch's partition list starts: after the last
    /// partition the previous answer moved, so that when answers fill up
    /// before the list ends (the broker reads in request order), every
    /// partition still gets its turn, as Kafka's consumers rotate theirs.
    rotation: usize,
    /// The next round's fetches, already sent (see "one fetch ahead").
    /// Dropped (and its task aborted) by [`Consumer::seek`] and on drop.
    ahead: Option<Round>,
}

/// A fetch round at least this long is logged (debug): a consumer that
/// stands still while producers go on is the broker's visible end not
/// moving, the answer's way back, or the consumer itself away.
const SLOW_ROUND: std::time::Duration = std::time::Duration::from_millis(500);

/// One round of fetches in flight: the positions it asked from, in request
/// order, and the answers (one per leader) of the task that sends them.
struct Round {
    start: usize,
    asked: Vec<(u32, u64)>,
    /// When it was sent: a round that takes long is logged (debug).
    sent: std::time::Instant,
    answers: tokio::task::JoinHandle<Vec<Result<FetchResponse, ClientError>>>,
}

impl Round {
    /// Wait for the round's answers.
    async fn answers_now(
        &mut self,
    ) -> Result<Vec<Result<FetchResponse, ClientError>>, ClientError> {
        // Only an abort (never while we hold the round) or a panic in the
        // task ends it without answers; a panic is a bug in this module.
        (&mut self.answers)
            .await
            .map_err(|e| ClientError::Protocol(format!("fetch task failed: {e}")))
    }
}

impl Drop for Round {
    fn drop(&mut self) {
        self.answers.abort();
    }
}

impl Consumer {
    /// Consume `partitions` (None: all) of `topic`, starting at `start`.
    pub async fn new(
        client: Client,
        topic: &str,
        partitions: Option<Vec<u32>>,
        start: StartAt,
        cfg: ConsumerConfig,
    ) -> Result<Consumer, ClientError> {
        let meta = client.topic(topic).await?;
        let parts = match partitions {
            Some(ps) => {
                if let Some(bad) = ps.iter().find(|p| **p >= meta.partitions) {
                    return Err(ClientError::Invalid(format!(
                        "topic '{topic}' has {} partitions; there is no partition {bad}",
                        meta.partitions
                    )));
                }
                ps
            }
            None => (0..meta.partitions).collect(),
        };
        let mut positions = BTreeMap::new();
        let mut high_watermarks = BTreeMap::new();
        for p in parts {
            let hw = client.list_offset(topic, p, LATEST).await?;
            let pos = match start {
                StartAt::Earliest => client.list_offset(topic, p, EARLIEST).await?,
                StartAt::Latest => hw,
                StartAt::Offset(o) => o,
                StartAt::Timestamp(ts) => client.list_offset(topic, p, ts).await?,
            };
            positions.insert(p, pos);
            high_watermarks.insert(p, hw);
        }
        Ok(Consumer {
            client,
            topic: Arc::from(topic),
            cfg,
            positions,
            rotation: 0,
            high_watermarks,
            ahead: None,
        })
    }

    pub fn positions(&self) -> &BTreeMap<u32, u64> {
        &self.positions
    }

    pub fn seek(&mut self, partition: u32, offset: u64) {
        // A fetch sent ahead asked from the old position.
        self.ahead = None;
        self.positions.insert(partition, offset);
    }

    /// Every partition's position has reached the last seen high watermark.
    pub fn caught_up(&self) -> bool {
        self.positions
            .iter()
            .all(|(p, pos)| self.high_watermarks.get(p).is_some_and(|hw| pos >= hw))
    }

    /// One fetch round: whatever records arrived (maybe none, after
    /// max_wait). Each partition is fetched from its leader, one request
    /// per leader, all at once. A partition whose leader answers
    /// `NotLeader` (or, in a cluster, whose connection fails) makes the consumer refresh
    /// its routes and, if nothing arrived, fetch again after a backoff, at
    /// most [`ROUTED_ATTEMPTS_MAX`] times before the error is returned.
    pub async fn poll(&mut self) -> Result<Vec<Message>, ClientError> {
        let mut out = Vec::new();
        let topic = self.topic.clone();
        self.poll_with(|partition, r| {
            let r = r.owned();
            out.push(Message {
                topic: topic.clone(),
                partition,
                offset: r.offset,
                timestamp_ms: r.timestamp_ms,
                key: r.key,
                value: r.value,
                headers: r.headers,
            })
        })
        .await?;
        Ok(out)
    }

    /// [`Consumer::poll`], handing each record to `visit` (with its
    /// partition) borrowed from the answer, rather than as an owned
    /// [`Message`]: nothing is allocated or reference-counted per record.
    /// Returns how many records it visited.
    pub async fn poll_with(
        &mut self,
        mut visit: impl FnMut(u32, &BatchRecord<'_>),
    ) -> Result<usize, ClientError> {
        let mut attempt = 0;
        let mut visited = 0;
        loop {
            let seen = self.client.routes().refresh_count();
            let stale = self
                .fetch_round(&mut |p, r| {
                    visited += 1;
                    visit(p, r)
                })
                .await?;
            let Some(err) = stale else {
                return Ok(visited);
            };
            attempt += 1;
            if attempt >= ROUTED_ATTEMPTS_MAX {
                return Err(err);
            }
            let _ = self.client.refresh_routes(seen, &[&self.topic]).await;
            if visited > 0 {
                return Ok(visited);
            }
            tokio::time::sleep(retry_backoff(attempt)).await;
        }
    }

    /// Fetch every partition from its leader once (or take the round sent
    /// ahead) and send the next round ahead; then check and visit this
    /// round's records. Returns the error of a partition that must be
    /// rerouted.
    ///
    /// Why the next round goes out before the records are visited: the
    /// positions it asks from follow from the frames' headers alone, and
    /// checking every batch's CRC and walking its records took a consumer
    /// of 1,000 partitions 2-5 ms of each 15-42 ms round, with nothing in
    /// flight meanwhile (README, "Against the disk").
    async fn fetch_round(
        &mut self,
        visit: &mut impl FnMut(u32, &BatchRecord<'_>),
    ) -> Result<Option<ClientError>, ClientError> {
        // The round stays in `ahead` while awaited: a caller that gives up
        // on this poll (a timeout) finds it still in flight next time.
        if self.ahead.is_none() {
            self.ahead = Some(self.send_round());
        }
        let answers = self.ahead.as_mut().expect("just set").answers_now().await;
        let round = self.ahead.take().expect("still set");
        let answers = answers?;
        let took = round.sent.elapsed();
        if took >= SLOW_ROUND {
            let parts = || {
                answers
                    .iter()
                    .flatten()
                    .flat_map(|r| r.topics.iter().flat_map(|(_, ps)| ps.iter()))
            };
            let bytes: usize = parts().flat_map(|p| &p.frames).map(|f| f.len()).sum();
            let high_watermark = parts().map(|p| p.high_watermark).max();
            tracing::debug!(
                took_ms = took.as_millis() as u64,
                partitions = round.asked.len(),
                bytes,
                first = ?round.asked.first(),
                ?high_watermark,
                "a fetch round took long (sent ahead: includes the time the caller was away)"
            );
        }
        let mut stale = None;
        let mut moved = Vec::new();
        for resp in answers {
            let failed = match resp {
                Ok(resp) => match self.advance(resp, &mut moved) {
                    Ok(e) => {
                        stale = e.or(stale);
                        None
                    }
                    Err(e) => Some(e),
                },
                Err(e) if self.client.routes().is_reroutable(&e) => {
                    stale = Some(e);
                    None
                }
                Err(e) => Some(e),
            };
            if let Some(e) = failed {
                // No record of this round was visited: none counts as read.
                self.rewind(&moved);
                return Err(e);
            }
        }
        // The next fetch starts after the last partition that moved.
        let n = self.positions.len().max(1);
        if let Some(i) = round
            .asked
            .iter()
            .rposition(|(p, o)| self.positions.get(p).is_some_and(|now| now > o))
        {
            self.rotation = (round.start + i + 1) % n;
        }
        // Routes must be refreshed first when some partition moved.
        if stale.is_none() {
            self.ahead = Some(self.send_round());
        }
        for (i, m) in moved.iter().enumerate() {
            if let Err((at, e)) = m.visit(self.cfg.decompress_limit, visit) {
                // Nothing from the bad batch on counts as read: its
                // partition and the ones after it go back, and the round
                // sent ahead (which asked from past them) is dropped.
                self.ahead = None;
                self.rewind(&moved[i..]);
                self.positions.insert(m.partition, at);
                return Err(e);
            }
        }
        Ok(stale)
    }

    /// Send one fetch per leader for every partition from its position,
    /// starting the list at `rotation`, on a task of its own.
    fn send_round(&self) -> Round {
        let routes = self.client.routes();
        let mut by_leader: BTreeMap<u32, Vec<FetchPartition>> = BTreeMap::new();
        let n = self.positions.len().max(1);
        let start = self.rotation % n;
        let asked: Vec<(u32, u64)> = self
            .positions
            .iter()
            .skip(start)
            .chain(self.positions.iter().take(start))
            .map(|(p, o)| (*p, *o))
            .collect();
        for (p, o) in &asked {
            by_leader
                .entry(routes.leader(&self.topic, *p))
                .or_default()
                .push(FetchPartition {
                    partition: *p,
                    offset: *o,
                    max_bytes: self.cfg.partition_max_bytes,
                });
        }
        let fetches: Vec<_> = by_leader
            .into_iter()
            .map(|(node, parts)| {
                let req = FetchRequest {
                    max_wait_ms: self.cfg.max_wait_ms,
                    min_bytes: self.cfg.min_bytes,
                    max_bytes: self.cfg.max_bytes,
                    topics: vec![(self.topic.to_string(), parts)],
                };
                let client = self.client.clone();
                async move {
                    let conn = client.routes().node(node).await?;
                    client.fetch_from(&conn, &req).await
                }
            })
            .collect();
        Round {
            start,
            asked,
            sent: std::time::Instant::now(),
            answers: tokio::spawn(futures::future::join_all(fetches)),
        }
    }

    /// Put the partitions of `moved` back where their round asked from.
    fn rewind(&mut self, moved: &[Moved]) {
        for m in moved {
            self.positions.insert(m.partition, m.from);
        }
    }

    /// Take one Fetch answer's positions: each partition that returned
    /// frames moves past their last offset (read from the frames' headers;
    /// the records are checked and visited later, [`Moved::visit`]).
    /// Returns a `NotLeader` error if some partition has moved.
    fn advance(
        &mut self,
        resp: FetchResponse,
        moved: &mut Vec<Moved>,
    ) -> Result<Option<ClientError>, ClientError> {
        let mut stale = None;
        for (_, parts) in resp.topics {
            for p in parts {
                let part = p.result.partition;
                if p.result.error == ErrorCode::OffsetOutOfRange {
                    // Retention moved the start past us (or we asked beyond the end): resume at a valid offset.
                    let pos = self.positions.get(&part).copied().unwrap_or(0);
                    let reset = if pos < p.log_start_offset {
                        p.log_start_offset
                    } else {
                        p.high_watermark
                    };
                    tracing::warn!(
                        partition = part,
                        from = pos,
                        to = reset,
                        "offset out of range; resetting"
                    );
                    self.positions.insert(part, reset);
                    continue;
                }
                if p.result.error != ErrorCode::None {
                    let e = ClientError::Broker {
                        code: p.result.error,
                        message: p.result.message,
                    };
                    // Another leader, or one that does not know the
                    // partition yet: refresh the routes and ask again.
                    if self
                        .client
                        .routes()
                        .is_reroutable_for(&e, &self.topic, part)
                    {
                        stale = Some(e);
                        continue;
                    }
                    return Err(e);
                }
                self.high_watermarks.insert(part, p.high_watermark);
                let Some(pos) = self.positions.get_mut(&part) else {
                    continue;
                };
                // The position moves only once every header parsed: on a
                // bad one, `fetch_round` rewinds what `moved` holds, which
                // is not yet this partition.
                let from = *pos;
                let mut next = from;
                for chunk in &p.frames {
                    for item in FrameIter::new(chunk.clone()) {
                        let (h, _) = item.map_err(|e| {
                            ClientError::Protocol(format!("bad batch from the broker: {e}"))
                        })?;
                        next = next.max(h.last_offset() + 1);
                    }
                }
                *pos = next;
                if next > from {
                    moved.push(Moved {
                        partition: part,
                        from,
                        frames: p.frames,
                    });
                }
            }
        }
        Ok(stale)
    }
}

/// One partition's frames of a fetch round, taken ([`Consumer::advance`])
/// but not yet checked and visited.
struct Moved {
    partition: u32,
    /// The position the round asked from.
    from: u64,
    frames: Vec<Bytes>,
}

impl Moved {
    /// Check each batch and hand its records at or past `from` to `visit`.
    /// On a bad batch: the position it starts at, and the error.
    fn visit(
        &self,
        decompress_limit: usize,
        visit: &mut impl FnMut(u32, &BatchRecord<'_>),
    ) -> Result<(), (u64, ClientError)> {
        let (part, from) = (self.partition, self.from);
        let mut at = from;
        for chunk in &self.frames {
            for item in FrameIter::new(chunk.clone()) {
                // Headers were parsed by `advance` already.
                let (_, frame) = item.expect("a header advance parsed");
                // Records before the position (a fetch from the middle of
                // a batch) are skipped. Control batches (a replicated
                // partition's Raft entries) take offsets but carry no
                // messages, as in Kafka.
                let h = for_each_batch_record(&frame, decompress_limit, |r| {
                    let control = r.header.attributes & crate::format::header::attr::CONTROL != 0;
                    if r.offset >= from && !control {
                        visit(part, r)
                    }
                })
                .map_err(|e| {
                    (
                        at,
                        ClientError::Protocol(format!("bad batch at partition {part}: {e}")),
                    )
                })?;
                at = at.max(h.last_offset() + 1);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::{frame, BatchBuilder, Compression, ProducerIds};
    use bytes::BytesMut;

    /// A batch of `n` records at `base`.
    fn batch(base: u64, n: i64) -> BytesMut {
        let mut b = BatchBuilder::new();
        for i in 0..n {
            b.push(
                1000 + i,
                None,
                Some(format!("v{}", base + i as u64).as_bytes()),
                &[],
            );
        }
        let mut m = BytesMut::from(&b.finish(Compression::None, ProducerIds::NONE)[..]);
        frame::stamp(&mut m, base, 0);
        m
    }

    #[test]
    fn a_round_visits_records_from_its_position_across_frames() {
        let mut two = batch(10, 5);
        two.extend_from_slice(&batch(15, 5));
        let m = Moved {
            partition: 3,
            from: 12,
            frames: vec![two.freeze()],
        };
        let mut seen = Vec::new();
        m.visit(1 << 20, &mut |p, r| seen.push((p, r.offset)))
            .unwrap();
        assert_eq!(seen, (12..20).map(|o| (3, o)).collect::<Vec<_>>());
    }

    #[test]
    fn a_bad_batch_reports_where_it_starts() {
        let good = batch(10, 5);
        let mut bad = batch(15, 5);
        let last = bad.len() - 1;
        bad[last] ^= 0xff; // the CRC no longer matches
        let m = Moved {
            partition: 0,
            from: 10,
            frames: vec![good.freeze(), bad.freeze()],
        };
        let mut seen = 0;
        let (at, e) = m.visit(1 << 20, &mut |_, _| seen += 1).unwrap_err();
        assert_eq!((at, seen), (15, 5), "the good batch was visited: {e}");
        assert!(e.to_string().contains("bad batch at partition 0"), "{e}");
    }
}
