//! DescribeUserScramCredentials (v0): shardlog has no SCRAM users (no
//! SASL). As Kafka answers when none are defined: asking for every user
//! gets an empty list; naming users gets RESOURCE_NOT_FOUND for each (and
//! DUPLICATE_RESOURCE for a name given twice).

use super::{errors, str_bytes, Ctx};
use kafka_protocol::messages::describe_user_scram_credentials_response::DescribeUserScramCredentialsResult;
use kafka_protocol::messages::{
    DescribeUserScramCredentialsRequest, DescribeUserScramCredentialsResponse,
};

pub async fn handle(
    _ctx: &Ctx,
    req: DescribeUserScramCredentialsRequest,
) -> DescribeUserScramCredentialsResponse {
    let users = req.users.unwrap_or_default();
    let results = users
        .iter()
        .map(|u| {
            let name = u.name.as_str();
            let twice = users.iter().filter(|x| x.name.as_str() == name).count() > 1;
            let (code, msg) = if twice {
                (
                    errors::duplicate_resource(),
                    format!("Cannot describe SCRAM credentials for the same user twice in a single request: {name}"),
                )
            } else {
                (
                    errors::resource_not_found(),
                    format!("Attempt to describe a user credential that does not exist: {name}"),
                )
            };
            DescribeUserScramCredentialsResult::default()
                .with_user(u.name.clone())
                .with_error_code(code)
                .with_error_message(Some(str_bytes(&msg)))
        })
        .collect();
    DescribeUserScramCredentialsResponse::default()
        .with_error_code(errors::NONE)
        .with_results(results)
}
