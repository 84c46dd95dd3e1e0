//! ListGroups (v0-5): every group any shard coordinates, with its state
//! (v4+ filters by state, v5+ by type: "classic" or "consumer", KIP-848).
//! Groups stored in `__consumer_offsets` appear after a restart too: each
//! shard loads the offsets partitions it owns first.

use super::{errors, str_bytes, Ctx};
use crate::groups::Coordinator;
use crate::shard::Shard;
use kafka_protocol::messages::list_groups_response::ListedGroup;
use kafka_protocol::messages::{GroupId, ListGroupsRequest, ListGroupsResponse};
use std::rc::Rc;

pub async fn handle(ctx: &Ctx, req: ListGroupsRequest) -> ListGroupsResponse {
    let per_shard = futures::future::join_all((0..ctx.shard.shards()).map(|s| {
        ctx.shard.call_on(s, |sh: Rc<Shard>| async move {
            // After a restart, groups are known once their offsets
            // partitions are loaded: load this shard's.
            let c = Coordinator::get(&sh);
            c.load_owned(&sh).await;
            c.list()
        })
    }))
    .await;
    let states: Vec<String> = req.states_filter.iter().map(|s| s.to_lowercase()).collect();
    let types: Vec<String> = req.types_filter.iter().map(|s| s.to_lowercase()).collect();
    let mut groups: Vec<ListedGroup> = per_shard
        .into_iter()
        .flatten()
        .flatten()
        .filter(|(_, _, state, _)| states.is_empty() || states.contains(&state.to_lowercase()))
        .filter(|(_, _, _, kind)| types.is_empty() || types.iter().any(|t| t == kind))
        .map(|(id, protocol_type, state, kind)| {
            ListedGroup::default()
                .with_group_id(GroupId(str_bytes(&id)))
                .with_protocol_type(str_bytes(&protocol_type))
                .with_group_state(str_bytes(state))
                .with_group_type(str_bytes(kind))
        })
        .collect();
    groups.sort_by(|a, b| a.group_id.0.cmp(&b.group_id.0));
    ListGroupsResponse::default()
        .with_error_code(errors::NONE)
        .with_groups(groups)
}
