//! A consumer of one topic: fetches partitions in offset order, decodes
//! (decompressing) batches, and hands out records.
//!
//! Each partition keeps a position (next offset to read). A fetch asks for
//! every assigned partition at once; the broker long-polls up to
//! `max_wait_ms` when nothing is new. Batches that start before the
//! position (a fetch from the middle of a batch) are trimmed.

use super::{Client, ClientError};
use crate::format::read_records;
use crate::protocol::messages::{FetchPartition, FetchRequest, EARLIEST, LATEST};
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
            high_watermarks,
        })
    }

    pub fn positions(&self) -> &BTreeMap<u32, u64> {
        &self.positions
    }

    pub fn seek(&mut self, partition: u32, offset: u64) {
        self.positions.insert(partition, offset);
    }

    /// Every partition's position has reached the last seen high watermark.
    pub fn caught_up(&self) -> bool {
        self.positions
            .iter()
            .all(|(p, pos)| self.high_watermarks.get(p).is_some_and(|hw| pos >= hw))
    }

    /// One fetch round: whatever records arrived (maybe none, after max_wait).
    pub async fn poll(&mut self) -> Result<Vec<Message>, ClientError> {
        let req = FetchRequest {
            max_wait_ms: self.cfg.max_wait_ms,
            min_bytes: self.cfg.min_bytes,
            max_bytes: self.cfg.max_bytes,
            topics: vec![(
                self.topic.to_string(),
                self.positions
                    .iter()
                    .map(|(p, o)| FetchPartition {
                        partition: *p,
                        offset: *o,
                        max_bytes: self.cfg.partition_max_bytes,
                    })
                    .collect(),
            )],
        };
        let resp = self.client.fetch(&req).await?;
        let mut out = Vec::new();
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
                    return Err(ClientError::Broker {
                        code: p.result.error,
                        message: p.result.message,
                    });
                }
                self.high_watermarks.insert(part, p.high_watermark);
                let Some(pos) = self.positions.get_mut(&part) else {
                    continue;
                };
                for chunk in p.frames {
                    for item in crate::format::frame::FrameIter::new(chunk) {
                        let (_, frame) = item.map_err(|e| {
                            ClientError::Protocol(format!("bad batch from the broker: {e}"))
                        })?;
                        let (h, recs) =
                            read_records(&frame, self.cfg.decompress_limit).map_err(|e| {
                                ClientError::Protocol(format!("bad batch at partition {part}: {e}"))
                            })?;
                        for r in recs {
                            if r.offset < *pos {
                                continue;
                            }
                            out.push(Message {
                                topic: self.topic.clone(),
                                partition: part,
                                offset: r.offset,
                                timestamp_ms: r.timestamp_ms,
                                key: r.key,
                                value: r.value,
                                headers: r.headers,
                            });
                        }
                        *pos = (*pos).max(h.last_offset() + 1);
                    }
                }
            }
        }
        Ok(out)
    }
}
