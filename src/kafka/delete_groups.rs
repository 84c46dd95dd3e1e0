//! DeleteGroups (v0-2): an empty group's state and committed offsets go
//! (a tombstone in its offsets partition, see [`crate::groups::offsets`]).
//! A group with members is NON_EMPTY_GROUP; a group with neither members
//! nor commits is GROUP_ID_NOT_FOUND.

use super::{errors, Ctx};
use crate::groups;
use kafka_protocol::messages::delete_groups_response::DeletableGroupResult;
use kafka_protocol::messages::{DeleteGroupsRequest, DeleteGroupsResponse};

pub async fn handle(ctx: &Ctx, req: DeleteGroupsRequest) -> DeleteGroupsResponse {
    let results = futures::future::join_all(req.groups_names.iter().map(|g| async move {
        let id = g.to_string();
        let gid = id.clone();
        let r = groups::with_coordinator(&ctx.shard, &id, move |s, c, partition| async move {
            c.delete_group(&s, partition, &gid).await
        })
        .await;
        DeletableGroupResult::default()
            .with_group_id(g.clone())
            .with_error_code(match r {
                Ok(()) => errors::NONE,
                Err(e) => errors::group(&e),
            })
    }))
    .await;
    DeleteGroupsResponse::default().with_results(results)
}
