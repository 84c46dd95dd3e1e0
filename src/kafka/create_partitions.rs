//! CreatePartitions (v0-3): grow a topic's partition count. Replica
//! assignments are ignored (one broker holds every replica).

use super::{errors, str_bytes, Ctx};
use crate::metadata::INTERNAL_PREFIX;
use crate::router::ops::AdminOp;
use kafka_protocol::messages::create_partitions_response::CreatePartitionsTopicResult;
use kafka_protocol::messages::{CreatePartitionsRequest, CreatePartitionsResponse};

pub async fn handle(ctx: &Ctx, req: CreatePartitionsRequest) -> CreatePartitionsResponse {
    let mut results = Vec::with_capacity(req.topics.len());
    for t in req.topics {
        let name = t.name.to_string();
        let r = CreatePartitionsTopicResult::default().with_name(t.name.clone());
        let topics = ctx.shard.topics();
        let failure: Option<(i16, String)> = match topics.get(&name) {
            _ if name.starts_with(INTERNAL_PREFIX) => Some((
                errors::internal_topic(),
                format!("'{name}' is an internal topic"),
            )),
            None => Some((errors::unknown_topic(), format!("unknown topic '{name}'"))),
            Some(m) if t.count <= m.partitions as i32 => Some((
                errors::invalid_partitions(),
                format!(
                    "topic '{name}' has {} partitions; the count can only grow",
                    m.partitions
                ),
            )),
            Some(_) if req.validate_only => None,
            Some(_) => ctx
                .shard
                .admin(AdminOp::CreatePartitions {
                    name: name.clone(),
                    total: t.count as u32,
                })
                .await
                .err()
                .map(|e| (errors::admin(&e), e.to_string())),
        };
        results.push(match failure {
            None => r.with_error_code(errors::NONE),
            Some((code, msg)) => r
                .with_error_code(code)
                .with_error_message(Some(str_bytes(&msg))),
        });
    }
    CreatePartitionsResponse::default().with_results(results)
}
