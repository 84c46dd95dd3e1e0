//! SyncGroup (v0-5): the leader hands in every member's assignment; each
//! member gets its own back (followers wait for the leader).

use super::{errors, str_bytes, Ctx};
use crate::groups::{self, MemberRef};
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
    let instance = req.group_instance_id.as_ref().map(|s| s.to_string());
    let result = groups::with_coordinator(&ctx.shard, &group_id, move |s, c, p| async move {
        let member = MemberRef {
            member_id: &member_id,
            instance_id: instance.as_deref(),
        };
        c.sync(&s, p, &gid, member, generation, assignments).await
    })
    .await;
    // v5+: Kafka checks the protocol type and name the member believes in.
    let result = result.and_then(|o| {
        let differs = |asked: &Option<kafka_protocol::protocol::StrBytes>, ours: &str| {
            asked.as_ref().is_some_and(|a| a.as_str() != ours)
        };
        if differs(&req.protocol_type, &o.protocol_type)
            || differs(&req.protocol_name, &o.protocol_name)
        {
            Err(groups::GroupError::InconsistentProtocol)
        } else {
            Ok(o)
        }
    });
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
