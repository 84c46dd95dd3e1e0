//! InitProducerId (v0-5): hands out idempotent producer ids. Ids come from
//! the controller ([`AdminOp::AllocateProducerId`]), which reserves them in
//! durable blocks, so an id is never handed out twice, across restarts too.
//!
//! A client that already has an id and asks again with it (v3+, KIP-360:
//! after an unknown-producer or sequence error) gets the same id with the
//! epoch bumped; the log then expects sequence 0 from it. Transactional ids
//! are refused: shardlog has no transactions.

use super::{errors, Ctx};
use crate::router::ops::{AdminOk, AdminOp};
use kafka_protocol::messages::{InitProducerIdRequest, InitProducerIdResponse, ProducerId};
use tracing::{debug, warn};

pub async fn handle(ctx: &Ctx, req: InitProducerIdRequest) -> InitProducerIdResponse {
    let resp = InitProducerIdResponse::default()
        .with_producer_id(ProducerId(-1))
        .with_producer_epoch(-1);
    if req.transactional_id.as_ref().is_some_and(|t| !t.is_empty()) {
        warn!(client_id = %ctx.client_id, "kafka: refusing a transactional producer: shardlog has no transactions");
        return resp.with_error_code(errors::transactions_unsupported());
    }
    // An exhausted epoch gets a fresh id instead, as in Kafka.
    let bump = ctx.version >= 3 && req.producer_id.0 >= 0 && req.producer_epoch >= 0;
    if bump && req.producer_epoch < i16::MAX - 1 {
        let epoch = req.producer_epoch + 1;
        debug!(client_id = %ctx.client_id, producer_id = req.producer_id.0, epoch, "kafka: producer epoch bumped");
        return resp
            .with_error_code(errors::NONE)
            .with_producer_id(req.producer_id)
            .with_producer_epoch(epoch);
    }
    match ctx.shard.admin(AdminOp::AllocateProducerId).await {
        Ok(AdminOk::ProducerId(pid)) => {
            debug!(client_id = %ctx.client_id, producer_id = pid, "kafka: producer id allocated");
            resp.with_error_code(errors::NONE)
                .with_producer_id(ProducerId(pid))
                .with_producer_epoch(0)
        }
        Ok(AdminOk::Done) => resp.with_error_code(errors::unknown_server_error()),
        Err(e) => resp.with_error_code(errors::admin(&e)),
    }
}
