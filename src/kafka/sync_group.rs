//! SyncGroup (v0-5): the leader hands in every member's assignment; each
//! member gets its own back (followers wait for the leader).

use super::{errors, str_bytes, Ctx};
use crate::groups;
use bytes::Bytes;
use kafka_protocol::messages::{SyncGroupRequest, SyncGroupResponse};

pub async fn handle(ctx: &Ctx, req: SyncGroupRequest) -> SyncGroupResponse {
    let group_id = req.group_id.to_string();
    let member_id = req.member_id.to_string();
    let generation = req.generation_id;
    let assignments: Vec<(String, Bytes)> = req
        .assignments
        .iter()
        .map(|a| (a.member_id.to_string(), a.assignment.clone()))
        .collect();
    let gid = group_id.clone();
    let result = groups::with_coordinator(&ctx.shard, &group_id, move |_, c, _| async move {
        c.sync(&gid, &member_id, generation, assignments).await
    })
    .await;
    match result {
        Ok(o) => {
            let r = SyncGroupResponse::default()
                .with_error_code(errors::NONE)
                .with_assignment(o.assignment);
            if ctx.version >= 5 {
                r.with_protocol_type(Some(str_bytes(&o.protocol_type)))
                    .with_protocol_name(Some(str_bytes(&o.protocol_name)))
            } else {
                r
            }
        }
        Err(e) => SyncGroupResponse::default()
            .with_error_code(errors::group(&e))
            .with_assignment(Bytes::new()),
    }
}
