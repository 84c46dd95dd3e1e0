//! DescribeConfigs (v0-4) for topics and the broker, under Kafka's config
//! names, so admin tools (kafka-configs, AdminClient) can read them.

use super::{errors, node_id, str_bytes, Ctx};
use crate::config::TopicConfig;
use crate::metadata::TopicMeta;
use kafka_protocol::messages::describe_configs_response::{
    DescribeConfigsResourceResult, DescribeConfigsResult,
};
use kafka_protocol::messages::{DescribeConfigsRequest, DescribeConfigsResponse};

/// Kafka's ConfigResource.Type values.
pub const RESOURCE_TOPIC: i8 = 2;
pub const RESOURCE_BROKER: i8 = 4;
/// Kafka's ConfigSource values.
const SOURCE_TOPIC: i8 = 1;
const SOURCE_STATIC_BROKER: i8 = 4;
const SOURCE_DEFAULT: i8 = 5;
/// Kafka's ConfigType values (v3+).
const TYPE_BOOLEAN: i8 = 1;
const TYPE_STRING: i8 = 2;
const TYPE_INT: i8 = 3;
const TYPE_LONG: i8 = 5;
const TYPE_LIST: i8 = 7;

struct Entry {
    name: String,
    value: String,
    source: i8,
    kind: i8,
    read_only: bool,
    /// What shardlog does with it, when that differs from Kafka (v3+
    /// `documentation`).
    doc: Option<&'static str>,
}

/// Said of every Kafka topic config stored but not acted on.
pub const DOC_STORED: &str =
    "stored and shown by shardlog, not acted on (one replica, no recompression, no tiered storage)";
/// Said of cleanup.policy when it includes compact.
pub const DOC_NO_COMPACTION: &str = "stored: shardlog does not compact logs, every record is kept (records without a key are refused, as in Kafka)";

fn topic_entries(m: &TopicMeta, d: &TopicConfig) -> Vec<Entry> {
    let c = &m.config;
    let src = |same: bool| if same { SOURCE_DEFAULT } else { SOURCE_TOPIC };
    let e = |name: &str, value: String, same, kind| Entry {
        name: name.to_string(),
        value,
        source: src(same),
        kind,
        read_only: false,
        doc: None,
    };
    let mut out = vec![
        e(
            "segment.bytes",
            c.segment_bytes.to_string(),
            c.segment_bytes == d.segment_bytes,
            TYPE_INT,
        ),
        e(
            "segment.ms",
            c.segment_ms.to_string(),
            c.segment_ms == d.segment_ms,
            TYPE_LONG,
        ),
        e(
            "retention.ms",
            c.retention_ms.to_string(),
            c.retention_ms == d.retention_ms,
            TYPE_LONG,
        ),
        e(
            "retention.bytes",
            c.retention_bytes.to_string(),
            c.retention_bytes == d.retention_bytes,
            TYPE_LONG,
        ),
        e(
            "index.interval.bytes",
            c.index_interval_bytes.to_string(),
            c.index_interval_bytes == d.index_interval_bytes,
            TYPE_INT,
        ),
        e(
            "max.message.bytes",
            c.max_batch_bytes.to_string(),
            c.max_batch_bytes == d.max_batch_bytes,
            TYPE_INT,
        ),
        e(
            "validate.compressed",
            c.validate_compressed.to_string(),
            c.validate_compressed == d.validate_compressed,
            TYPE_BOOLEAN,
        ),
        Entry {
            doc: c.compacted().then_some(DOC_NO_COMPACTION),
            ..e(
                "cleanup.policy",
                c.cleanup_policy.clone(),
                c.cleanup_policy == d.cleanup_policy,
                TYPE_LIST,
            )
        },
    ];
    if !m.stored_config.contains_key("min.insync.replicas") {
        out.push(Entry {
            name: "min.insync.replicas".into(),
            value: "1".into(),
            source: SOURCE_DEFAULT,
            kind: TYPE_INT,
            read_only: false,
            doc: Some(DOC_STORED),
        });
    }
    // Kafka names stored but not acted on (see crate::metadata::alter).
    out.extend(m.stored_config.iter().map(|(k, v)| Entry {
        name: k.clone(),
        value: v.clone(),
        source: SOURCE_TOPIC,
        kind: TYPE_STRING,
        read_only: false,
        doc: Some(DOC_STORED),
    }));
    out
}

fn broker_entries(ctx: &Ctx) -> Vec<Entry> {
    let c = &ctx.shard.config;
    let e = |name: &str, value: String, kind| Entry {
        name: name.to_string(),
        value,
        source: SOURCE_STATIC_BROKER,
        kind,
        read_only: true,
        doc: None,
    };
    vec![
        e("broker.id", node_id(&ctx.shard).to_string(), TYPE_INT),
        e("num.partitions", c.default_partitions.to_string(), TYPE_INT),
        e(
            "auto.create.topics.enable",
            c.auto_create_topics.to_string(),
            TYPE_BOOLEAN,
        ),
        e("log.dirs", c.data_dir.display().to_string(), TYPE_STRING),
        e("default.replication.factor", "1".into(), TYPE_INT),
        e(
            "socket.request.max.bytes",
            c.max_request_bytes.to_string(),
            TYPE_INT,
        ),
    ]
}

pub async fn handle(ctx: &Ctx, req: DescribeConfigsRequest) -> DescribeConfigsResponse {
    let topics = ctx.shard.topics();
    let defaults = &ctx.shard.config.topic_defaults;
    let results = req
        .resources
        .iter()
        .map(|r| {
            let res = DescribeConfigsResult::default()
                .with_resource_type(r.resource_type)
                .with_resource_name(r.resource_name.clone());
            let entries = match r.resource_type {
                RESOURCE_TOPIC => match topics.get(r.resource_name.as_str()) {
                    Some(m) => topic_entries(m, defaults),
                    None => {
                        return res
                            .with_error_code(errors::unknown_topic())
                            .with_error_message(Some(str_bytes("unknown topic")))
                    }
                },
                RESOURCE_BROKER => broker_entries(ctx),
                other => {
                    return res
                        .with_error_code(errors::unsupported_resource())
                        .with_error_message(Some(str_bytes(&format!(
                            "resource type {other} is not supported (topics and the broker are)"
                        ))))
                }
            };
            let configs = entries
                .into_iter()
                .filter(|e| {
                    r.configuration_keys
                        .as_ref()
                        .is_none_or(|keys| keys.iter().any(|k| k.as_str() == e.name))
                })
                .map(|e| {
                    let mut c = DescribeConfigsResourceResult::default()
                        .with_name(str_bytes(&e.name))
                        .with_value(Some(str_bytes(&e.value)))
                        .with_read_only(e.read_only)
                        .with_config_source(e.source)
                        .with_is_sensitive(false);
                    if ctx.version == 0 {
                        // v0 has `is_default` where v1+ has the source.
                        c = c.with_is_default(e.source != SOURCE_TOPIC);
                    }
                    if ctx.version >= 3 {
                        c = c
                            .with_config_type(e.kind)
                            .with_documentation(e.doc.map(str_bytes));
                    }
                    c
                })
                .collect();
            res.with_error_code(errors::NONE).with_configs(configs)
        })
        .collect();
    DescribeConfigsResponse::default().with_results(results)
}
