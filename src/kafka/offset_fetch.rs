//! OffsetFetch (v1-9): committed offsets of one group (v1-7) or several
//! (v8+); partitions without a commit answer offset -1. v9 names the
//! member: for a consumer-protocol group (KIP-848) it must exist at that
//! epoch (UNKNOWN_MEMBER_ID / STALE_MEMBER_EPOCH), unless the epoch is -1
//! (an admin read), as Kafka checks.

use super::{errors, str_bytes, Ctx};
use crate::groups::{self, OffsetMap};
use kafka_protocol::messages::offset_fetch_response::{
    OffsetFetchResponseGroup, OffsetFetchResponsePartition, OffsetFetchResponsePartitions,
    OffsetFetchResponseTopic, OffsetFetchResponseTopics,
};
use kafka_protocol::messages::{GroupId, OffsetFetchRequest, OffsetFetchResponse, TopicName};

/// (group, requested topics and partitions or None for all)
type Wanted = (String, Option<Vec<(String, Vec<i32>)>>);

/// v9's (member id, member epoch); None before v9.
type Asker = Option<(String, i32)>;

/// (partition, committed offset, leader epoch, metadata)
type Row = (i32, i64, i32, Option<String>);

/// Per group: the error code, and the rows of each topic.
struct Answer {
    code: i16,
    rows: Vec<(String, Vec<Row>)>,
}

async fn answer(ctx: &Ctx, (group, topics): Wanted, asker: Asker) -> Answer {
    let gid = group.clone();
    let wanted = topics.clone();
    let result = groups::with_coordinator(&ctx.shard, &group, move |_, c, _| async move {
        if let Some((member, epoch)) = asker {
            c.consumer_check_fetch(&gid, &member, epoch)?;
        }
        Ok(c.fetch_offsets(&gid, wanted))
    })
    .await;
    let found: OffsetMap = match result {
        Ok(m) => m,
        Err(e) => {
            return Answer {
                code: errors::group(&e),
                rows: Vec::new(),
            }
        }
    };
    let rows = match topics {
        // Every requested partition, committed or not.
        Some(ts) => ts
            .into_iter()
            .map(|(t, parts)| {
                let got = found.get(&t);
                let rows = parts
                    .into_iter()
                    .map(|p| match got.and_then(|g| g.get(&p)) {
                        Some(c) => (p, c.offset, c.leader_epoch, c.metadata.clone()),
                        None => (p, -1, -1, Some(String::new())),
                    })
                    .collect();
                (t, rows)
            })
            .collect(),
        None => found
            .into_iter()
            .map(|(t, ps)| {
                let rows = ps
                    .into_iter()
                    .map(|(p, c)| (p, c.offset, c.leader_epoch, c.metadata))
                    .collect();
                (t, rows)
            })
            .collect(),
    };
    Answer {
        code: errors::NONE,
        rows,
    }
}

pub async fn handle(ctx: &Ctx, req: OffsetFetchRequest) -> OffsetFetchResponse {
    let v = ctx.version;
    if v >= 8 {
        let mut out = Vec::with_capacity(req.groups.len());
        for g in &req.groups {
            let topics = g.topics.as_ref().map(|ts| {
                ts.iter()
                    .map(|t| (t.name.to_string(), t.partition_indexes.clone()))
                    .collect()
            });
            let asker = (v >= 9).then(|| {
                let member = g
                    .member_id
                    .as_ref()
                    .map(|m| m.to_string())
                    .unwrap_or_default();
                (member, g.member_epoch)
            });
            let a = answer(ctx, (g.group_id.to_string(), topics), asker).await;
            let topics = a
                .rows
                .into_iter()
                .map(|(t, rows)| {
                    OffsetFetchResponseTopics::default()
                        .with_name(TopicName(str_bytes(&t)))
                        .with_partitions(
                            rows.into_iter()
                                .map(|(p, off, epoch, meta)| {
                                    OffsetFetchResponsePartitions::default()
                                        .with_partition_index(p)
                                        .with_committed_offset(off)
                                        .with_committed_leader_epoch(epoch)
                                        .with_metadata(meta.as_deref().map(str_bytes))
                                        .with_error_code(errors::NONE)
                                })
                                .collect(),
                        )
                })
                .collect();
            out.push(
                OffsetFetchResponseGroup::default()
                    .with_group_id(GroupId(str_bytes(&g.group_id)))
                    .with_topics(topics)
                    .with_error_code(a.code),
            );
        }
        return OffsetFetchResponse::default().with_groups(out);
    }
    let topics = req.topics.as_ref().map(|ts| {
        ts.iter()
            .map(|t| (t.name.to_string(), t.partition_indexes.clone()))
            .collect()
    });
    let a = answer(ctx, (req.group_id.to_string(), topics), None).await;
    let topics = a
        .rows
        .into_iter()
        .map(|(t, rows)| {
            OffsetFetchResponseTopic::default()
                .with_name(TopicName(str_bytes(&t)))
                .with_partitions(
                    rows.into_iter()
                        .map(|(p, off, epoch, meta)| {
                            let r = OffsetFetchResponsePartition::default()
                                .with_partition_index(p)
                                .with_committed_offset(off)
                                .with_metadata(Some(str_bytes(meta.as_deref().unwrap_or(""))))
                                .with_error_code(errors::NONE);
                            if v >= 5 {
                                r.with_committed_leader_epoch(epoch)
                            } else {
                                r
                            }
                        })
                        .collect(),
                )
        })
        .collect();
    let r = OffsetFetchResponse::default().with_topics(topics);
    if v >= 2 {
        r.with_error_code(a.code)
    } else {
        r
    }
}
