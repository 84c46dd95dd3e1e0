//! A broker's topic table, derived from the controller's state.
//!
//! In a cluster the controller's state is the truth about topics, their
//! configs and where each partition lives; every broker serves from a
//! [`TopicTable`] (the same table a single node keeps in
//! `meta/topics.json`), so the layers below (shards, Kafka and native
//! handlers, groups) need no second source. [`table_of`] is that
//! translation: a pure function of the state, the broker's topic defaults
//! and the table it replaces.
//!
//! What carries over from the previous table: the version (bumped by one),
//! each surviving topic's creation time, the local producer id block (in
//! a cluster the controller hands out producer ids) and the list of
//! topics being deleted. Topics that vanished are not put on that list
//! here: the caller does it, because removing their directories is its job.

use super::state::ControllerState;
use crate::config::TopicConfig;
use crate::metadata::alter;
use crate::metadata::{Assignment, BrokerEndpoint, TopicMeta, TopicTable};
use tracing::warn;

/// The table `state` describes, replacing `prev`.
pub fn table_of(state: &ControllerState, prev: &TopicTable, defaults: &TopicConfig) -> TopicTable {
    let mut next = TopicTable {
        version: prev.version + 1,
        producer_id_block_end: prev.producer_id_block_end,
        deleting: prev.deleting.clone(),
        controller_index: state.applied_index,
        cluster_id: state.cluster_id,
        ..Default::default()
    };
    for (id, b) in &state.brokers {
        next.brokers.insert(
            *id,
            BrokerEndpoint {
                id: *id,
                kafka_addr: b.reg.kafka_addr.clone(),
                native_addr: b.reg.native_addr.clone(),
                rpc_addr: b.reg.rpc_addr.clone(),
                live: b.live,
            },
        );
    }
    for (name, t) in &state.topics {
        let id = format!("{:032x}", t.id);
        let created_ms = prev
            .topics
            .get(name)
            .filter(|m| m.id == id)
            .map_or(0, |m| m.created_ms);
        let bare = TopicMeta {
            name: name.clone(),
            partitions: t.partitions.len() as u32,
            config: defaults.clone(),
            id,
            created_ms,
            stored_config: Default::default(),
            assignment: t
                .partitions
                .iter()
                .map(|a| Assignment {
                    node: a.node,
                    shard: a.shard,
                    leader_epoch: a.leader_epoch,
                    followers: a.followers.iter().map(|(n, _)| *n).collect(),
                    follower_shards: a.followers.iter().map(|(_, s)| *s).collect(),
                    origin: a.origin.clone(),
                    target: a.target.iter().map(|(n, _)| *n).collect(),
                    target_shards: a.target.iter().map(|(_, s)| *s).collect(),
                })
                .collect(),
        };
        let (meta, skipped) = alter::from_overrides(&bare, defaults, &t.config);
        for (key, why) in skipped {
            warn!(topic = %name, key = %key, "topic config from the controller not applied here: {why}");
        }
        next.topics.insert(name.clone(), meta);
    }
    next
}

/// The topic id the controller keeps for a table's hex id (the proposer
/// makes it; see [`crate::metadata::new_topic_id`]).
pub fn topic_id_of(hex: &str) -> u128 {
    u128::from_str_radix(hex, 16).unwrap_or_else(|_| crate::router::placement::fnv1a(hex) as u128)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::command::{Command, Envelope, Registration};

    fn apply(state: &mut ControllerState, command: Command) {
        let index = state.applied_index + 1;
        state.apply(
            index,
            &Envelope {
                origin: 0,
                seq: 0,
                command,
            },
        );
    }

    fn register(state: &mut ControllerState, id: u32) {
        apply(
            state,
            Command::RegisterBroker(Registration {
                id,
                incarnation: 1,
                shards: 2,
                kafka_addr: format!("127.0.0.1:{}", 9000 + id),
                native_addr: format!("127.0.0.1:{}", 9100 + id),
                rpc_addr: format!("127.0.0.1:{}", 9200 + id),
            }),
        );
    }

    #[test]
    fn the_table_follows_the_controller_state() {
        let mut state = ControllerState::default();
        for id in 1..=3 {
            register(&mut state, id);
        }
        apply(
            &mut state,
            Command::CreateTopic {
                name: "orders".into(),
                topic_id: 0xabc,
                partitions: 6,
                config: vec![("retention.ms".into(), "1000".into())],
                replication_factor: 1,
            },
        );
        let defaults = TopicConfig::default();
        let t = table_of(&state, &TopicTable::default(), &defaults);
        assert_eq!(t.version, 1);
        assert_eq!(t.controller_index, state.applied_index);
        assert_eq!(t.brokers.len(), 3);
        assert_eq!(t.brokers[&2].kafka_addr, "127.0.0.1:9002");
        let m = &t.topics["orders"];
        assert_eq!(m.partitions, 6);
        assert_eq!(m.config.retention_ms, 1000);
        assert_eq!(topic_id_of(&m.id), 0xabc);
        assert_eq!(m.assignment.len(), 6);
        // Every broker leads some of the six partitions.
        for id in 1..=3 {
            assert!(m.assignment.iter().any(|a| a.node == id), "broker {id}");
        }
        // A second derivation bumps the version and keeps creation times.
        let mut prev = t.clone();
        prev.topics.get_mut("orders").unwrap().created_ms = 42;
        let t2 = table_of(&state, &prev, &defaults);
        assert_eq!(t2.version, 2);
        assert_eq!(t2.topics["orders"].created_ms, 42);
    }
}
