//! FindCoordinator (v0-6): every group's coordinator is this broker (the
//! owning shard behind it is an internal matter: any connection forwards).
//! Creates the offsets topic on first use so the first JoinGroup does not
//! pay for it. Transaction coordinators do not exist here.

use super::{errors, str_bytes, Ctx, NODE_ID};
use crate::groups;
use kafka_protocol::messages::find_coordinator_response::Coordinator;
use kafka_protocol::messages::{BrokerId, FindCoordinatorRequest, FindCoordinatorResponse};
use kafka_protocol::protocol::StrBytes;

/// FindCoordinator key types.
const KEY_TYPE_GROUP: i8 = 0;

pub async fn handle(ctx: &Ctx, req: FindCoordinatorRequest) -> FindCoordinatorResponse {
    let keys: Vec<StrBytes> = if ctx.version >= 4 {
        req.coordinator_keys.clone()
    } else {
        vec![req.key.clone()]
    };
    let (host, port) = super::advertised_addr(&ctx.shard).await;
    let failure: Option<(i16, String)> = if req.key_type != KEY_TYPE_GROUP {
        Some((
            errors::transactions_unsupported(),
            "shardlog has no transactions: there is no transaction coordinator".into(),
        ))
    } else {
        groups::offsets_partitions(&ctx.shard)
            .await
            .err()
            .map(|e| (errors::coordinator_not_available(), e.to_string()))
    };
    let (code, message) = match &failure {
        Some((c, m)) => (*c, Some(str_bytes(m))),
        None => (errors::NONE, None),
    };
    let node = if failure.is_some() { -1 } else { NODE_ID };
    let (host, port) = if failure.is_some() {
        (String::new(), -1)
    } else {
        (host, port)
    };
    if ctx.version >= 4 {
        FindCoordinatorResponse::default().with_coordinators(
            keys.into_iter()
                .map(|k| {
                    Coordinator::default()
                        .with_key(k)
                        .with_node_id(BrokerId(node))
                        .with_host(str_bytes(&host))
                        .with_port(port)
                        .with_error_code(code)
                        .with_error_message(message.clone())
                })
                .collect(),
        )
    } else {
        let r = FindCoordinatorResponse::default()
            .with_error_code(code)
            .with_node_id(BrokerId(node))
            .with_host(str_bytes(&host))
            .with_port(port);
        if ctx.version >= 1 {
            r.with_error_message(message)
        } else {
            r
        }
    }
}
