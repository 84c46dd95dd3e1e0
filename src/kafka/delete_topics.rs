//! DeleteTopics (v1-6): by name (v1-6) or by topic id (v6). Internal topics
//! (`__` prefix) cannot be deleted.

use super::{errors, str_bytes, topic_name, topic_uuid, Ctx};
use crate::metadata::INTERNAL_PREFIX;
use crate::router::ops::AdminOp;
use kafka_protocol::messages::delete_topics_response::DeletableTopicResult;
use kafka_protocol::messages::{DeleteTopicsRequest, DeleteTopicsResponse};

pub async fn handle(ctx: &Ctx, req: DeleteTopicsRequest) -> DeleteTopicsResponse {
    // (name if given, id if given)
    let wanted: Vec<(Option<String>, uuid::Uuid)> = if ctx.version >= 6 {
        req.topics
            .iter()
            .map(|t| (t.name.as_ref().map(|n| n.to_string()), t.topic_id))
            .collect()
    } else {
        req.topic_names
            .iter()
            .map(|n| (Some(n.to_string()), uuid::Uuid::nil()))
            .collect()
    };
    let mut responses = Vec::with_capacity(wanted.len());
    for (name, id) in wanted {
        let topics = ctx.shard.topics();
        let resolved = match &name {
            Some(n) => topics.get(n).map(|m| (m.name.clone(), topic_uuid(&m.id))),
            None => topics
                .topics
                .values()
                .find(|m| topic_uuid(&m.id) == id)
                .map(|m| (m.name.clone(), id)),
        };
        let mut r = DeletableTopicResult::default()
            .with_name(name.as_deref().map(topic_name))
            .with_topic_id(id);
        let failure = match resolved {
            None => Some((errors::unknown_topic(), "unknown topic".to_string())),
            Some((n, _)) if n.starts_with(INTERNAL_PREFIX) => Some((
                errors::internal_topic(),
                format!("'{n}' is an internal topic"),
            )),
            Some((n, tid)) => {
                r = r.with_name(Some(topic_name(&n))).with_topic_id(tid);
                ctx.shard
                    .admin(AdminOp::DeleteTopic { name: n })
                    .await
                    .err()
                    .map(|e| (errors::admin(&e), e.to_string()))
            }
        };
        r = match failure {
            None => r.with_error_code(errors::NONE),
            Some((code, msg)) => {
                let r = r.with_error_code(code);
                if ctx.version >= 5 {
                    r.with_error_message(Some(str_bytes(&msg)))
                } else {
                    r
                }
            }
        };
        responses.push(r);
    }
    DeleteTopicsResponse::default().with_responses(responses)
}
