//! ListGroups (v0-5): every group any shard coordinates, with its state
//! (v4+ filters by state, v5+ by type; all groups here are "classic").
//! Groups known only from committed offsets appear once their offsets
//! partition has been loaded (after a restart: on first use).

use super::{errors, str_bytes, Ctx};
use crate::groups::Coordinator;
use crate::shard::Shard;
use kafka_protocol::messages::list_groups_response::ListedGroup;
use kafka_protocol::messages::{GroupId, ListGroupsRequest, ListGroupsResponse};
use std::rc::Rc;

pub async fn handle(ctx: &Ctx, req: ListGroupsRequest) -> ListGroupsResponse {
    let per_shard = futures::future::join_all((0..ctx.shard.shards()).map(|s| {
        ctx.shard.call_on(s, |sh: Rc<Shard>| async move {
            Coordinator::existing(&sh)
                .map(|c| c.list())
                .unwrap_or_default()
        })
    }))
    .await;
    let states: Vec<String> = req.states_filter.iter().map(|s| s.to_lowercase()).collect();
    let types_ok = req.types_filter.is_empty()
        || req
            .types_filter
            .iter()
            .any(|t| t.eq_ignore_ascii_case("classic"));
    let mut groups: Vec<ListedGroup> = per_shard
        .into_iter()
        .flatten()
        .flatten()
        .filter(|(_, _, state)| states.is_empty() || states.contains(&state.to_lowercase()))
        .filter(|_| types_ok)
        .map(|(id, protocol_type, state)| {
            ListedGroup::default()
                .with_group_id(GroupId(str_bytes(&id)))
                .with_protocol_type(str_bytes(&protocol_type))
                .with_group_state(str_bytes(state))
                .with_group_type(str_bytes("classic"))
        })
        .collect();
    groups.sort_by(|a, b| a.group_id.0.cmp(&b.group_id.0));
    ListGroupsResponse::default()
        .with_error_code(errors::NONE)
        .with_groups(groups)
}
