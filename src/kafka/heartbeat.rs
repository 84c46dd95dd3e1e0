//! Heartbeat (v0-4): keeps a member's session alive; answers
//! REBALANCE_IN_PROGRESS when the member must rejoin.

use super::{errors, Ctx};
use crate::groups;
use kafka_protocol::messages::{HeartbeatRequest, HeartbeatResponse};

pub async fn handle(ctx: &Ctx, req: HeartbeatRequest) -> HeartbeatResponse {
    let group_id = req.group_id.to_string();
    let gid = group_id.clone();
    let member_id = req.member_id.to_string();
    let generation = req.generation_id;
    let result = groups::with_coordinator(&ctx.shard, &group_id, move |_, c, _| async move {
        c.heartbeat(&gid, &member_id, generation)
    })
    .await;
    HeartbeatResponse::default().with_error_code(match result {
        Ok(()) => errors::NONE,
        Err(e) => errors::group(&e),
    })
}
