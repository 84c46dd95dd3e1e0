//! DescribeAcls, CreateAcls, DeleteAcls (v0-3 each): shardlog has no
//! authorizer, so each answers as Apache Kafka does without one: error
//! SECURITY_DISABLED (54) with "No Authorizer is configured on the broker",
//! on the whole request (Describe) or on each creation and filter (Create,
//! Delete). Admin clients then report that, not an unsupported feature.

use super::{errors, str_bytes, Ctx};
use kafka_protocol::messages::create_acls_response::AclCreationResult;
use kafka_protocol::messages::delete_acls_response::DeleteAclsFilterResult;
use kafka_protocol::messages::{
    CreateAclsRequest, CreateAclsResponse, DeleteAclsRequest, DeleteAclsResponse,
    DescribeAclsRequest, DescribeAclsResponse,
};

/// Kafka's message for every ACL request on a broker without an authorizer.
pub const NO_AUTHORIZER: &str = "No Authorizer is configured on the broker";

pub async fn describe(_ctx: &Ctx, _req: DescribeAclsRequest) -> DescribeAclsResponse {
    DescribeAclsResponse::default()
        .with_error_code(errors::security_disabled())
        .with_error_message(Some(str_bytes(NO_AUTHORIZER)))
}

pub async fn create(_ctx: &Ctx, req: CreateAclsRequest) -> CreateAclsResponse {
    let results = req
        .creations
        .iter()
        .map(|_| {
            AclCreationResult::default()
                .with_error_code(errors::security_disabled())
                .with_error_message(Some(str_bytes(NO_AUTHORIZER)))
        })
        .collect();
    CreateAclsResponse::default().with_results(results)
}

pub async fn delete(_ctx: &Ctx, req: DeleteAclsRequest) -> DeleteAclsResponse {
    let results = req
        .filters
        .iter()
        .map(|_| {
            DeleteAclsFilterResult::default()
                .with_error_code(errors::security_disabled())
                .with_error_message(Some(str_bytes(NO_AUTHORIZER)))
        })
        .collect();
    DeleteAclsResponse::default().with_filter_results(results)
}
