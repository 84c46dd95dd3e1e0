//! JoinGroup (v0-9), answered by the group's coordinator shard once the
//! rebalance completes. A member that joins with no id gets one directly
//! (no MEMBER_ID_REQUIRED round trip). Static members (v5+
//! `group_instance_id`) follow Kafka's rules, see `crate::groups::state`.

use super::{errors, str_bytes, Ctx};
use crate::groups::{self, JoinParams};
use kafka_protocol::messages::join_group_response::JoinGroupResponseMember;
use kafka_protocol::messages::{JoinGroupRequest, JoinGroupResponse};

pub async fn handle(ctx: &Ctx, req: JoinGroupRequest) -> JoinGroupResponse {
    let group_id = req.group_id.to_string();
    let params = JoinParams {
        group_id: group_id.clone(),
        member_id: req.member_id.to_string(),
        instance_id: req.group_instance_id.as_ref().map(|s| s.to_string()),
        client_id: ctx.client_id.clone(),
        session_timeout_ms: req.session_timeout_ms,
        rebalance_timeout_ms: if ctx.version >= 1 {
            req.rebalance_timeout_ms
        } else {
            req.session_timeout_ms
        },
        protocol_type: req.protocol_type.to_string(),
        protocols: req
            .protocols
            .iter()
            .map(|p| (p.name.to_string(), p.metadata.clone()))
            .collect(),
    };
    let result =
        groups::with_coordinator(&ctx.shard, &group_id, move |s, c, partition| async move {
            c.join(&s, partition, params).await
        })
        .await;
    let v = ctx.version;
    match result {
        Ok(o) => {
            let members = o
                .members
                .into_iter()
                .map(|(id, instance, meta)| {
                    let m = JoinGroupResponseMember::default()
                        .with_member_id(str_bytes(&id))
                        .with_metadata(meta);
                    if v >= 5 {
                        m.with_group_instance_id(instance.as_deref().map(str_bytes))
                    } else {
                        m
                    }
                })
                .collect();
            let mut r = JoinGroupResponse::default()
                .with_error_code(errors::NONE)
                .with_generation_id(o.generation)
                .with_protocol_name(Some(str_bytes(&o.protocol_name)))
                .with_leader(str_bytes(&o.leader))
                .with_member_id(str_bytes(&o.member_id))
                .with_members(members);
            if v >= 7 {
                r = r.with_protocol_type(Some(str_bytes(&o.protocol_type)));
            }
            if v >= 9 {
                r = r.with_skip_assignment(o.skip_assignment);
            }
            r
        }
        Err(e) => JoinGroupResponse::default()
            .with_error_code(errors::group(&e))
            .with_generation_id(-1)
            .with_protocol_name(if v >= 7 { None } else { Some(str_bytes("")) })
            .with_leader(str_bytes(""))
            .with_member_id(req.member_id.clone()),
    }
}
