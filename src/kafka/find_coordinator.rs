//! FindCoordinator (v0-6). A group's coordinator is the broker that leads
//! its partition of the offsets topic: on a single node, this broker (the
//! owning shard behind it is an internal matter: any connection forwards);
//! in a cluster, whichever broker the controller placed that partition on.
//! Creates the offsets topic on first use so the first JoinGroup does not
//! pay for it. Transaction coordinators do not exist here.

use super::{errors, host_port, node_id, str_bytes, Ctx};
use crate::groups::{self, OFFSETS_TOPIC};
use crate::router::Location;
use kafka_protocol::messages::find_coordinator_response::Coordinator;
use kafka_protocol::messages::{BrokerId, FindCoordinatorRequest, FindCoordinatorResponse};
use kafka_protocol::protocol::StrBytes;

/// FindCoordinator key types.
const KEY_TYPE_GROUP: i8 = 0;

/// One key's answer: (error code, message, node, host, port).
type Answer = (i16, Option<StrBytes>, i32, String, i32);

pub async fn handle(ctx: &Ctx, req: FindCoordinatorRequest) -> FindCoordinatorResponse {
    let keys: Vec<StrBytes> = if ctx.version >= 4 {
        req.coordinator_keys.clone()
    } else {
        vec![req.key.clone()]
    };
    let failed =
        |code: i16, why: String| -> Answer { (code, Some(str_bytes(&why)), -1, String::new(), -1) };
    let common: Result<u32, Answer> = if req.key_type != KEY_TYPE_GROUP {
        Err(failed(
            errors::transactions_unsupported(),
            "shardlog has no transactions: there is no transaction coordinator".into(),
        ))
    } else {
        groups::offsets_partitions(&ctx.shard)
            .await
            .map_err(|e| failed(errors::coordinator_not_available(), e.to_string()))
    };
    let (host, port) = super::advertised_addr(&ctx.shard).await;
    let me = node_id(&ctx.shard);
    let answer = |key: &StrBytes| -> Answer {
        let partitions = match &common {
            Ok(n) => *n,
            Err(a) => return a.clone(),
        };
        let topics = ctx.shard.topics();
        let Some(meta) = topics.get(OFFSETS_TOPIC) else {
            return failed(
                errors::coordinator_not_available(),
                "the offsets topic is being created".into(),
            );
        };
        let partition = groups::partition_of(key, partitions);
        match ctx.shard.locate(meta, partition) {
            Location::Here(_) => (errors::NONE, None, me, host.clone(), port),
            Location::Elsewhere { node } => match topics
                .brokers
                .get(&node)
                .filter(|b| b.live)
                .and_then(|b| host_port(&b.kafka_addr))
            {
                Some((h, p)) => (errors::NONE, None, node as i32, h, p),
                None => failed(
                    errors::coordinator_not_available(),
                    format!("broker {node}, the group's coordinator, is not live"),
                ),
            },
        }
    };
    if ctx.version >= 4 {
        FindCoordinatorResponse::default().with_coordinators(
            keys.into_iter()
                .map(|k| {
                    let (code, message, node, host, port) = answer(&k);
                    Coordinator::default()
                        .with_key(k)
                        .with_node_id(BrokerId(node))
                        .with_host(str_bytes(&host))
                        .with_port(port)
                        .with_error_code(code)
                        .with_error_message(message)
                })
                .collect(),
        )
    } else {
        let (code, message, node, host, port) = answer(&keys[0]);
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
