//! DescribeGroups (v0-6): state, protocol and members of each group, from
//! its coordinator shard. The client host is not tracked (reported empty).

use super::{authorized_ops, errors, str_bytes, Ctx};
use crate::groups::{self, GroupView};
use kafka_protocol::messages::describe_groups_response::{DescribedGroup, DescribedGroupMember};
use kafka_protocol::messages::{DescribeGroupsRequest, DescribeGroupsResponse};

pub async fn handle(ctx: &Ctx, req: DescribeGroupsRequest) -> DescribeGroupsResponse {
    let mut out = Vec::with_capacity(req.groups.len());
    for g in &req.groups {
        let id = g.to_string();
        let gid = id.clone();
        let result = groups::with_coordinator(&ctx.shard, &id, move |_, c, _| async move {
            Ok::<GroupView, groups::GroupError>(c.describe(&gid))
        })
        .await;
        let d = DescribedGroup::default().with_group_id(g.clone());
        out.push(match result {
            Err(e) => d
                .with_error_code(errors::group(&e))
                .with_group_state(str_bytes("Dead")),
            Ok(v) => {
                let members = v
                    .members
                    .into_iter()
                    .map(|m| {
                        let r = DescribedGroupMember::default()
                            .with_member_id(str_bytes(&m.member_id))
                            .with_client_id(str_bytes(&m.client_id))
                            .with_client_host(str_bytes(""))
                            .with_member_metadata(m.metadata)
                            .with_member_assignment(m.assignment);
                        if ctx.version >= 4 {
                            r.with_group_instance_id(m.instance_id.as_deref().map(str_bytes))
                        } else {
                            r
                        }
                    })
                    .collect();
                d.with_error_code(errors::NONE)
                    .with_authorized_operations(authorized_ops::if_asked(
                        req.include_authorized_operations,
                        authorized_ops::GROUP,
                    ))
                    .with_group_state(str_bytes(v.state))
                    .with_protocol_type(str_bytes(&v.protocol_type))
                    .with_protocol_data(str_bytes(&v.protocol))
                    .with_members(members)
            }
        });
    }
    DescribeGroupsResponse::default().with_groups(out)
}
