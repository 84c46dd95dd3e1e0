//! Answers to requests we do not serve: the API's own response with
//! UNSUPPORTED_VERSION in its top-level error code (and a message where the
//! response has one), for the APIs whose response has such a field. A
//! client then reports an error; a closed connection makes most clients
//! reconnect and retry silently (librdkafka with `group.protocol=consumer`
//! stalled that way).
//!
//! Only versions the crate can encode are answered; an encode failure
//! (the field does not exist at that version) falls back to closing.

use super::listener::encode;
use super::{errors, str_bytes, Ctx};
use bytes::BytesMut;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::Message;

/// The encoded refusal of `ctx.version` of `key`, or None (close instead).
pub fn respond(ctx: &Ctx, key: ApiKey) -> Option<BytesMut> {
    let code = errors::unsupported_version();
    let msg = |s: &str| Some(str_bytes(s));
    let unserved = "this API is not served by shardlog";
    macro_rules! answer {
        ($req:ty, $name:literal, $resp:expr) => {{
            let v = <$req>::VERSIONS;
            if ctx.version < v.min || ctx.version > v.max {
                return None;
            }
            encode(ctx, $name, &$resp).ok()
        }};
    }
    match key {
        ApiKey::ShareGroupHeartbeat => answer!(
            ShareGroupHeartbeatRequest,
            "ShareGroupHeartbeat",
            ShareGroupHeartbeatResponse::default()
                .with_error_code(code)
                .with_error_message(msg(unserved))
        ),
        ApiKey::DescribeCluster => answer!(
            DescribeClusterRequest,
            "DescribeCluster",
            DescribeClusterResponse::default()
                .with_error_code(code)
                .with_error_message(msg(unserved))
        ),
        ApiKey::GetTelemetrySubscriptions => answer!(
            GetTelemetrySubscriptionsRequest,
            "GetTelemetrySubscriptions",
            GetTelemetrySubscriptionsResponse::default().with_error_code(code)
        ),
        ApiKey::ListTransactions => answer!(
            ListTransactionsRequest,
            "ListTransactions",
            ListTransactionsResponse::default().with_error_code(code)
        ),
        // Fetch v13+ names topics by id only (not served yet); v7+ has a
        // top-level error code.
        ApiKey::Fetch if ctx.version >= 7 => answer!(
            FetchRequest,
            "Fetch",
            FetchResponse::default().with_error_code(code)
        ),
        _ => None,
    }
}
