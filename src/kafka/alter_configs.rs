//! AlterConfigs (v0-2) and IncrementalAlterConfigs (v0-1) for topics:
//! validated, persisted with the topic table, applied live by every shard
//! (see [`crate::metadata::alter`] for which names are applied, stored or
//! refused), and shown by DescribeConfigs. `validate_only` checks and
//! stores nothing.
//!
//! Broker configs are static in shardlog (flags or the config file): a
//! change to one is refused with INVALID_CONFIG, while the no-ops admin
//! tools send (an empty AlterConfigs, an incremental DELETE) are accepted.

use super::describe_configs::{RESOURCE_BROKER, RESOURCE_TOPIC};
use super::{errors, str_bytes, Ctx};
use crate::metadata::alter::ConfigChange;
use crate::router::ops::AdminOp;
use kafka_protocol::messages::{
    alter_configs_response, incremental_alter_configs_response, AlterConfigsRequest,
    AlterConfigsResponse, IncrementalAlterConfigsRequest, IncrementalAlterConfigsResponse,
};
use kafka_protocol::protocol::StrBytes;

/// IncrementalAlterConfigs operations.
const OP_SET: i8 = 0;
const OP_DELETE: i8 = 1;
const OP_APPEND: i8 = 2;
const OP_SUBTRACT: i8 = 3;

/// What one resource's change came to: an error code and message.
type Outcome = (i16, Option<String>);

const BROKER_STATIC: &str = "shardlog has no dynamic broker configs: broker settings come from flags or the config file at start";

async fn alter_resource(
    ctx: &Ctx,
    resource_type: i8,
    name: &StrBytes,
    changes: Result<Vec<ConfigChange>, String>,
    replace_all: bool,
    validate_only: bool,
) -> Outcome {
    let changes = match changes {
        Ok(c) => c,
        Err(msg) => return (errors::invalid_request(), Some(msg)),
    };
    match resource_type {
        RESOURCE_TOPIC => {
            let op = AdminOp::AlterTopicConfig {
                name: name.to_string(),
                changes,
                replace_all,
                validate_only,
            };
            match ctx.shard.admin(op).await {
                Ok(_) => (errors::NONE, None),
                Err(e) => (errors::admin(&e), Some(e.to_string())),
            }
        }
        RESOURCE_BROKER => {
            let no_op = changes.iter().all(|c| matches!(c, ConfigChange::Delete(_)));
            if no_op {
                (errors::NONE, None)
            } else {
                (errors::invalid_config(), Some(BROKER_STATIC.to_string()))
            }
        }
        other => (
            errors::unsupported_resource(),
            Some(format!(
                "resource type {other} cannot be altered (topics can)"
            )),
        ),
    }
}

pub async fn handle(ctx: &Ctx, req: AlterConfigsRequest) -> AlterConfigsResponse {
    let mut responses = Vec::with_capacity(req.resources.len());
    for r in &req.resources {
        let changes = r
            .configs
            .iter()
            .map(|c| match &c.value {
                Some(v) => ConfigChange::Set(c.name.to_string(), v.to_string()),
                None => ConfigChange::Delete(c.name.to_string()),
            })
            .collect();
        let (code, msg) = alter_resource(
            ctx,
            r.resource_type,
            &r.resource_name,
            Ok(changes),
            true,
            req.validate_only,
        )
        .await;
        responses.push(
            alter_configs_response::AlterConfigsResourceResponse::default()
                .with_error_code(code)
                .with_error_message(msg.as_deref().map(str_bytes))
                .with_resource_type(r.resource_type)
                .with_resource_name(r.resource_name.clone()),
        );
    }
    AlterConfigsResponse::default().with_responses(responses)
}

pub async fn handle_incremental(
    ctx: &Ctx,
    req: IncrementalAlterConfigsRequest,
) -> IncrementalAlterConfigsResponse {
    let mut responses = Vec::with_capacity(req.resources.len());
    for r in &req.resources {
        let changes = r
            .configs
            .iter()
            .map(|c| {
                let name = c.name.to_string();
                let value = c.value.as_deref().unwrap_or("").to_string();
                Ok(match c.config_operation {
                    OP_SET => ConfigChange::Set(name, value),
                    OP_DELETE => ConfigChange::Delete(name),
                    OP_APPEND => ConfigChange::Append(name, value),
                    OP_SUBTRACT => ConfigChange::Subtract(name, value),
                    op => return Err(format!("unknown config operation {op} for '{name}'")),
                })
            })
            .collect();
        let (code, msg) = alter_resource(
            ctx,
            r.resource_type,
            &r.resource_name,
            changes,
            false,
            req.validate_only,
        )
        .await;
        responses.push(
            incremental_alter_configs_response::AlterConfigsResourceResponse::default()
                .with_error_code(code)
                .with_error_message(msg.as_deref().map(str_bytes))
                .with_resource_type(r.resource_type)
                .with_resource_name(r.resource_name.clone()),
        );
    }
    IncrementalAlterConfigsResponse::default().with_responses(responses)
}
