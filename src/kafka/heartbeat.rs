//! Heartbeat (v0-4): keeps a member's session alive; answers
//! REBALANCE_IN_PROGRESS when the member must rejoin, FENCED_INSTANCE_ID to
//! a static member whose instance id another member took over (v3+).

use super::{errors, Ctx};
use crate::groups::{self, MemberRef};
use kafka_protocol::messages::{HeartbeatRequest, HeartbeatResponse};

pub async fn handle(ctx: &Ctx, req: HeartbeatRequest) -> HeartbeatResponse {
    let group_id = req.group_id.to_string();
    let gid = group_id.clone();
    let member_id = req.member_id.to_string();
    let generation = req.generation_id;
    let instance = req.group_instance_id.as_ref().map(|s| s.to_string());
    let result = groups::with_coordinator(&ctx.shard, &group_id, move |_, c, _| async move {
        let member = MemberRef {
            member_id: &member_id,
            instance_id: instance.as_deref(),
        };
        c.heartbeat(&gid, member, generation)
    })
    .await;
    HeartbeatResponse::default().with_error_code(match result {
        Ok(()) => errors::NONE,
        Err(e) => errors::group(&e),
    })
}
