//! LeaveGroup (v0-5): one member (v0-2) or a batch (v3+) leaves; the rest
//! of the group rebalances at once instead of waiting for a session timeout.

use super::{errors, Ctx};
use crate::groups;
use kafka_protocol::messages::leave_group_response::MemberResponse;
use kafka_protocol::messages::{LeaveGroupRequest, LeaveGroupResponse};

pub async fn handle(ctx: &Ctx, req: LeaveGroupRequest) -> LeaveGroupResponse {
    let group_id = req.group_id.to_string();
    // (member id, group.instance.id): v3+ batches, static members by instance id.
    let ids: Vec<(String, Option<String>)> = if ctx.version >= 3 {
        req.members
            .iter()
            .map(|m| {
                (
                    m.member_id.to_string(),
                    m.group_instance_id.as_ref().map(|s| s.to_string()),
                )
            })
            .collect()
    } else {
        vec![(req.member_id.to_string(), None)]
    };
    let gid = group_id.clone();
    let asked = ids.clone();
    let result = groups::with_coordinator(&ctx.shard, &group_id, move |s, c, _| async move {
        Ok(c.leave(&s, &gid, &asked))
    })
    .await;
    match result {
        Err(e) => LeaveGroupResponse::default().with_error_code(errors::group(&e)),
        Ok(per_member) if ctx.version >= 3 => {
            let members = req
                .members
                .iter()
                .zip(per_member)
                .map(|(m, r)| {
                    MemberResponse::default()
                        .with_member_id(m.member_id.clone())
                        .with_group_instance_id(m.group_instance_id.clone())
                        .with_error_code(match r {
                            Ok(()) => errors::NONE,
                            Err(e) => errors::group(&e),
                        })
                })
                .collect();
            LeaveGroupResponse::default()
                .with_error_code(errors::NONE)
                .with_members(members)
        }
        Ok(per_member) => {
            LeaveGroupResponse::default().with_error_code(match per_member.into_iter().next() {
                Some(Err(e)) => errors::group(&e),
                _ => errors::NONE,
            })
        }
    }
}
