//! Altering a topic's config (Kafka's AlterConfigs and
//! IncrementalAlterConfigs): a pure function from a topic's metadata and a
//! list of changes to its new metadata, run by the controller under its
//! lock, so the table's read-modify-write cannot interleave.
//!
//! Names: those [`TopicConfig::kafka_key`] knows are validated and applied;
//! the rest of Kafka's topic config names
//! ([`KAFKA_TOPIC_KEYS_STORED`]) are stored as given and shown by
//! DescribeConfigs; any other name is refused, as Kafka refuses it.

use super::TopicMeta;
use crate::config::{ConfigError, TopicConfig, KAFKA_TOPIC_KEYS_STORED};
use std::collections::BTreeMap;

/// One change to one config name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigChange {
    Set(String, String),
    /// Back to the default.
    Delete(String),
    /// Add to a list-valued config (comma-separated).
    Append(String, String),
    /// Remove from a list-valued config.
    Subtract(String, String),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AlterError {
    #[error("unknown topic config '{0}'")]
    UnknownKey(String),
    #[error("'{0}' is not a list config: APPEND and SUBTRACT apply to list configs only")]
    NotAList(String),
    #[error("{0}")]
    Invalid(String),
}

impl From<ConfigError> for AlterError {
    fn from(e: ConfigError) -> Self {
        AlterError::Invalid(e.to_string())
    }
}

/// Kafka's list-valued topic configs.
const LIST_KEYS: &[&str] = &[
    "cleanup.policy",
    "leader.replication.throttled.replicas",
    "follower.replication.throttled.replicas",
];

enum Kind {
    Applied(&'static str),
    Stored(&'static str),
}

fn kind(key: &str) -> Result<Kind, AlterError> {
    if let Some(k) = TopicConfig::kafka_key(key) {
        return Ok(Kind::Applied(k));
    }
    let dotted = key.replace('_', ".");
    KAFKA_TOPIC_KEYS_STORED
        .iter()
        .find(|k| **k == dotted)
        .map(|k| Kind::Stored(k))
        .ok_or_else(|| AlterError::UnknownKey(key.to_string()))
}

fn list_of(v: &str) -> Vec<String> {
    v.split(',')
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect()
}

/// The topic after `changes`. With `replace_all` (AlterConfigs), every
/// name not among the changes goes back to its default first.
pub fn altered(
    meta: &TopicMeta,
    defaults: &TopicConfig,
    changes: &[ConfigChange],
    replace_all: bool,
) -> Result<TopicMeta, AlterError> {
    let mut next = meta.clone();
    if replace_all {
        next.config = defaults.clone();
        next.stored_config.clear();
    }
    for c in changes {
        match c {
            ConfigChange::Set(k, v) => set(&mut next, k, v)?,
            ConfigChange::Delete(k) => match kind(k)? {
                Kind::Applied(k) => next.config.reset(k, defaults)?,
                Kind::Stored(k) => {
                    next.stored_config.remove(k);
                }
            },
            ConfigChange::Append(k, v) | ConfigChange::Subtract(k, v) => {
                let name = match kind(k)? {
                    Kind::Applied(n) | Kind::Stored(n) => n,
                };
                if !LIST_KEYS.contains(&name) {
                    return Err(AlterError::NotAList(k.clone()));
                }
                let current = match name {
                    "cleanup.policy" => next.config.cleanup_policy.clone(),
                    n => next.stored_config.get(n).cloned().unwrap_or_default(),
                };
                let mut items = list_of(&current);
                for item in list_of(v) {
                    if matches!(c, ConfigChange::Append(..)) {
                        if !items.contains(&item) {
                            items.push(item);
                        }
                    } else {
                        items.retain(|x| *x != item);
                    }
                }
                set(&mut next, name, &items.join(","))?;
            }
        }
    }
    next.config.validate()?;
    Ok(next)
}

fn set(next: &mut TopicMeta, key: &str, value: &str) -> Result<(), AlterError> {
    match kind(key)? {
        Kind::Applied(k) => {
            let one = BTreeMap::from([(k.to_string(), value.to_string())]);
            next.config = next.config.clone().with_overrides(&one)?;
        }
        Kind::Stored(k) => {
            next.stored_config.insert(k.to_string(), value.to_string());
        }
    }
    Ok(())
}

/// A topic's settings as `name = value` text, only those that differ from
/// `defaults` (by Kafka name) plus the stored Kafka configs: what the
/// cluster's controller keeps for a topic, so each broker rebuilds it
/// with [`from_overrides`] on top of its own defaults.
pub fn overrides(meta: &TopicMeta, defaults: &TopicConfig) -> Vec<(String, String)> {
    let base = defaults.entries();
    let mut out: Vec<(String, String)> = meta
        .config
        .entries()
        .into_iter()
        .zip(base)
        .filter(|(mine, default)| mine.1 != default.1)
        .map(|((k, v), _)| {
            let name = TopicConfig::kafka_key(&k).map_or(k, str::to_string);
            (name, v)
        })
        .collect();
    out.extend(
        meta.stored_config
            .iter()
            .map(|(k, v)| (k.clone(), v.clone())),
    );
    out
}

/// `meta`'s config rebuilt from `defaults` and `overrides` (as
/// [`overrides`] wrote them). A name or value this broker does not accept
/// (another version proposed it) is skipped and returned, so the caller
/// can say so; the rest still applies.
pub fn from_overrides(
    meta: &TopicMeta,
    defaults: &TopicConfig,
    overrides: &[(String, String)],
) -> (TopicMeta, Vec<(String, AlterError)>) {
    let mut next = meta.clone();
    next.config = defaults.clone();
    next.stored_config.clear();
    let mut skipped = Vec::new();
    for (k, v) in overrides {
        let mut attempt = next.clone();
        match set(&mut attempt, k, v).and_then(|()| Ok(attempt.config.validate()?)) {
            Ok(()) => next = attempt,
            Err(e) => skipped.push((k.clone(), e)),
        }
    }
    (next, skipped)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta() -> TopicMeta {
        TopicMeta {
            name: "t".into(),
            partitions: 1,
            config: TopicConfig::default(),
            id: "1".into(),
            created_ms: 0,
            stored_config: BTreeMap::new(),
            assignment: Vec::new(),
        }
    }

    fn set(k: &str, v: &str) -> ConfigChange {
        ConfigChange::Set(k.into(), v.into())
    }

    #[test]
    fn applied_stored_and_unknown_names() {
        let d = TopicConfig::default();
        let m = altered(
            &meta(),
            &d,
            &[set("retention.ms", "1000"), set("min.insync.replicas", "2")],
            false,
        )
        .unwrap();
        assert_eq!(m.config.retention_ms, 1000);
        assert_eq!(m.stored_config["min.insync.replicas"], "2");
        assert_eq!(
            altered(&m, &d, &[set("no.such.config", "1")], false),
            Err(AlterError::UnknownKey("no.such.config".into()))
        );
        assert!(matches!(
            altered(&m, &d, &[set("retention.ms", "soon")], false),
            Err(AlterError::Invalid(_))
        ));
        assert!(matches!(
            altered(&m, &d, &[set("segment.bytes", "10")], false),
            Err(AlterError::Invalid(_))
        ));
        // Incremental delete: back to the default; replace-all: everything else too.
        let back = altered(
            &m,
            &d,
            &[ConfigChange::Delete("retention.ms".into())],
            false,
        )
        .unwrap();
        assert_eq!(back.config.retention_ms, d.retention_ms);
        assert_eq!(back.stored_config.len(), 1);
        let replaced = altered(&m, &d, &[set("segment.ms", "5000")], true).unwrap();
        assert_eq!(replaced.config.retention_ms, d.retention_ms);
        assert_eq!(replaced.config.segment_ms, 5000);
        assert!(replaced.stored_config.is_empty());
    }

    #[test]
    fn list_configs() {
        let d = TopicConfig::default();
        let a = |k: &str, v: &str| ConfigChange::Append(k.into(), v.into());
        let m = altered(
            &meta(),
            &d,
            &[
                a("leader.replication.throttled.replicas", "0:1"),
                a("leader.replication.throttled.replicas", "0:2"),
                ConfigChange::Subtract(
                    "leader.replication.throttled.replicas".into(),
                    "0:1".into(),
                ),
                a("cleanup.policy", "delete"),
            ],
            false,
        )
        .unwrap();
        assert_eq!(
            m.stored_config["leader.replication.throttled.replicas"],
            "0:2"
        );
        // compact is stored (records then need keys); an empty policy or
        // an unknown one is refused.
        let c = altered(&m, &d, &[a("cleanup.policy", "compact")], false).unwrap();
        assert_eq!(c.config.cleanup_policy, "delete,compact");
        assert!(c.config.compacted() && c.config.deletes());
        let only = ConfigChange::Subtract("cleanup.policy".into(), "delete".into());
        let c = altered(&c, &d, &[only], false).unwrap();
        assert_eq!((c.config.compacted(), c.config.deletes()), (true, false));
        let none = ConfigChange::Subtract("cleanup.policy".into(), "compact".into());
        assert!(altered(&c, &d, &[none], false).is_err());
        assert!(altered(&m, &d, &[a("cleanup.policy", "shred")], false).is_err());
        assert_eq!(
            altered(&m, &d, &[a("retention.ms", "1")], false),
            Err(AlterError::NotAList("retention.ms".into()))
        );
    }

    #[test]
    fn overrides_round_trip_through_text() {
        let d = TopicConfig::default();
        let m = altered(
            &meta(),
            &d,
            &[
                set("retention.ms", "1000"),
                set("cleanup.policy", "compact"),
                set("min.insync.replicas", "2"),
            ],
            false,
        )
        .unwrap();
        let text = overrides(&m, &d);
        assert_eq!(
            text.len(),
            3,
            "only what differs from the defaults: {text:?}"
        );
        let (back, skipped) = from_overrides(&meta(), &d, &text);
        assert!(skipped.is_empty(), "{skipped:?}");
        assert_eq!(back, m);
        // A name this broker does not know is skipped, the rest applies.
        let mut odd = text.clone();
        odd.push(("no.such.config".into(), "1".into()));
        let (back, skipped) = from_overrides(&meta(), &d, &odd);
        assert_eq!(back, m);
        assert_eq!(skipped.len(), 1);
    }
}
