//! CreateTopics (v2-7). Partition count -1 means the broker default
//! (`default_partitions`); replication factor must be 1 or -1 (one broker).
//! Kafka config names are mapped by [`crate::config::TopicConfig::with_overrides`];
//! unknown ones are INVALID_CONFIG. Names starting with `__` are reserved.

use super::{errors, str_bytes, topic_uuid, Ctx};
use crate::metadata::{validate_name, INTERNAL_PREFIX};
use crate::router::ops::{AdminError, AdminOp};
use kafka_protocol::messages::create_topics_response::CreatableTopicResult;
use kafka_protocol::messages::{CreateTopicsRequest, CreateTopicsResponse};
use std::collections::BTreeMap;

pub async fn handle(ctx: &Ctx, req: CreateTopicsRequest) -> CreateTopicsResponse {
    let mut results = Vec::with_capacity(req.topics.len());
    for t in req.topics {
        let name = t.name.to_string();
        let partitions = match t.num_partitions {
            -1 if !t.assignments.is_empty() => t.assignments.len() as i32,
            -1 => ctx.shard.config.default_partitions as i32,
            n => n,
        };
        let config: BTreeMap<String, String> = t
            .configs
            .iter()
            .filter_map(|c| {
                c.value
                    .as_ref()
                    .map(|v| (c.name.to_string(), v.to_string()))
            })
            .collect();
        let failure: Option<(i16, String)> = if name.starts_with(INTERNAL_PREFIX) {
            Some((
                errors::invalid_topic(),
                format!("topic names starting with '{INTERNAL_PREFIX}' are reserved for shardlog"),
            ))
        } else if let Err(e) = validate_name(&name) {
            Some((errors::invalid_topic(), e.to_string()))
        } else if t.replication_factor == 0
            || t.replication_factor < -1
            || t.replication_factor > i16::from(u8::MAX)
        {
            Some((
                errors::invalid_replication_factor(),
                format!(
                    "replication factor {} is not possible",
                    t.replication_factor
                ),
            ))
        } else if partitions <= 0 {
            Some((
                errors::invalid_partitions(),
                format!("partition count {partitions} must be positive"),
            ))
        } else if req.validate_only {
            let exists = ctx.shard.topics().get(&name).is_some();
            let cfg = ctx
                .shard
                .config
                .topic_defaults
                .clone()
                .with_overrides(&config);
            match (exists, cfg) {
                (true, _) => {
                    let e = AdminError::TopicExists(name.clone());
                    Some((errors::admin(&e), e.to_string()))
                }
                (false, Err(e)) => {
                    let e = AdminError::InvalidConfig(e.into());
                    Some((errors::admin(&e), e.to_string()))
                }
                (false, Ok(_)) => None,
            }
        } else {
            let op = AdminOp::CreateTopic {
                name: name.clone(),
                partitions: partitions as u32,
                config,
                // -1: the broker's default.
                replication_factor: u16::try_from(t.replication_factor).ok(),
            };
            ctx.shard
                .admin(op)
                .await
                .err()
                .map(|e| (errors::admin(&e), e.to_string()))
        };
        let mut r = CreatableTopicResult::default().with_name(t.name.clone());
        match failure {
            None => {
                r = r.with_error_code(errors::NONE);
                if ctx.version >= 5 {
                    r = r.with_num_partitions(partitions).with_replication_factor(1);
                }
                if let Some(m) = ctx.shard.topics().get(&name) {
                    r = r.with_topic_id(topic_uuid(&m.id));
                }
            }
            Some((code, msg)) => {
                r = r
                    .with_error_code(code)
                    .with_error_message(Some(str_bytes(&msg)));
            }
        }
        results.push(r);
    }
    CreateTopicsResponse::default().with_topics(results)
}
