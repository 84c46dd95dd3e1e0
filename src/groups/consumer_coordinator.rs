//! The coordinator's consumer-protocol (KIP-848) side: ConsumerGroupHeartbeat
//! and ConsumerGroupDescribe, the rules that keep a group id to one
//! protocol, and the member checks of OffsetCommit/OffsetFetch for those
//! groups. The state machine is [`super::consumer_group`]; this file ties
//! it to the coordinator's clock, topic table and classic groups.
//!
//! One protocol per group id, as Kafka with its online migration disabled
//! answers: a consumer-protocol heartbeat for a classic group that has
//! members is GROUP_ID_NOT_FOUND ("not a consumer group"), an empty classic
//! group is replaced; a classic JoinGroup for a consumer group with
//! members is INCONSISTENT_GROUP_PROTOCOL, an empty one is replaced;
//! SyncGroup, Heartbeat and LeaveGroup for a consumer group are
//! GROUP_ID_NOT_FOUND. Committed offsets belong to the group id and stay
//! through a change of protocol.
//!
//! Runs on the coordinator's core, like the rest of [`Coordinator`].

use super::consumer_group::{
    ConsumerGroup, ConsumerGroupView, HeartbeatParams, HeartbeatReply, TopicLookup,
};
use super::coordinator::{Coordinator, GROUPS_MAX};
use super::offsets::CommitItem;
use super::state::{MemberRef, Phase};
use super::{GroupError, GroupView, MemberView, Unavailable};
use crate::metadata::TopicTable;
use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::consumer_protocol_assignment::TopicPartition;
use kafka_protocol::messages::{
    ConsumerProtocolAssignment, ConsumerProtocolSubscription, TopicName,
};
use kafka_protocol::protocol::{Encodable, StrBytes};
use std::time::Instant;
use tracing::info;

impl TopicLookup for TopicTable {
    fn partitions(&self, topic: &str) -> Option<u32> {
        self.get(topic).map(|m| m.partitions)
    }
}

/// (group id, protocol type, state, group type) as ListGroups shows it.
pub type ListedGroup = (String, String, &'static str, &'static str);

impl Coordinator {
    /// ConsumerGroupHeartbeat for `group_id`, against the topic table `topics`.
    pub fn consumer_heartbeat(
        &self,
        group_id: &str,
        p: HeartbeatParams,
        topics: &TopicTable,
    ) -> Result<HeartbeatReply, GroupError> {
        let now = self.clock.now();
        // A classic group with members keeps the id; an empty one gives it up.
        {
            let mut classic = self.groups.borrow_mut();
            match classic.get(group_id) {
                Some(g) if g.phase != Phase::Empty => return Err(GroupError::GroupIdNotFound),
                Some(_) => {
                    classic.remove(group_id);
                }
                None => {}
            }
        }
        let mut groups = self.consumer.borrow_mut();
        if !groups.contains_key(group_id) {
            if p.member_epoch != 0 {
                // Kafka answers GROUP_ID_NOT_FOUND; after a restart (groups
                // of this protocol are not stored) the members must rejoin,
                // which UNKNOWN_MEMBER_ID tells them.
                return Err(GroupError::UnknownMember);
            }
            if groups.len() + self.groups.borrow().len() >= GROUPS_MAX {
                return Err(GroupError::CoordinatorUnavailable(
                    Unavailable::TooManyGroups(GROUPS_MAX),
                ));
            }
            groups.insert(
                group_id.to_string(),
                ConsumerGroup::new(
                    group_id.to_string(),
                    self.consumer_session_timeout,
                    self.consumer_heartbeat_interval,
                ),
            );
        }
        let g = groups.get_mut(group_id).expect("present");
        let (epoch_in, member) = (p.member_epoch, p.member_id.clone());
        let group_epoch = g.group_epoch;
        let reply = match g.heartbeat(p, topics, now) {
            Ok(r) => r,
            Err(e) => {
                // Each of these makes the client rejoin (or stop): rare,
                // and the first thing to look at when partitions move.
                if matches!(e, GroupError::FencedMemberEpoch | GroupError::UnknownMember) {
                    info!(group = %group_id, member = %member, member_epoch = epoch_in, "kafka: consumer group heartbeat refused: {e}");
                }
                return Err(e);
            }
        };
        if epoch_in <= 0 || g.group_epoch != group_epoch {
            info!(group = %group_id, member = %member, member_epoch = reply.member_epoch, group_epoch = g.group_epoch, "kafka: consumer group heartbeat changed the group");
        }
        Ok(reply)
    }

    /// ConsumerGroupDescribe of one group: None if no consumer group has
    /// the id (callers tell a classic group from an unknown one with
    /// [`Coordinator::is_classic`]).
    pub fn consumer_describe(&self, group_id: &str) -> Option<ConsumerGroupView> {
        self.consumer.borrow().get(group_id).map(|g| g.view())
    }

    /// Whether a classic group holds the id.
    pub fn is_classic(&self, group_id: &str) -> bool {
        self.groups.borrow().contains_key(group_id)
    }

    /// Before a classic JoinGroup: a consumer group with members keeps the
    /// id (INCONSISTENT_GROUP_PROTOCOL); an empty one is dropped.
    pub(super) fn classic_may_take(&self, group_id: &str) -> Result<(), GroupError> {
        let mut groups = self.consumer.borrow_mut();
        match groups.get(group_id) {
            Some(g) if !g.is_empty() => Err(GroupError::InconsistentProtocol),
            Some(_) => {
                groups.remove(group_id);
                Ok(())
            }
            None => Ok(()),
        }
    }

    /// SyncGroup, Heartbeat, LeaveGroup: not for a consumer group.
    pub(super) fn not_consumer(&self, group_id: &str) -> Result<(), GroupError> {
        if self.consumer.borrow().contains_key(group_id) {
            return Err(GroupError::GroupIdNotFound);
        }
        Ok(())
    }

    /// OffsetCommit's member check if a consumer group holds the id.
    pub(super) fn consumer_check_commit(
        &self,
        group_id: &str,
        member: MemberRef<'_>,
        epoch: i32,
        items: &[CommitItem],
    ) -> Option<Result<(), GroupError>> {
        let parts: Vec<(&str, i32)> = items
            .iter()
            .map(|i| (i.topic.as_str(), i.partition))
            .collect();
        let r = self
            .consumer
            .borrow()
            .get(group_id)
            .map(|g| g.check_commit(member.member_id, epoch, &parts));
        if let Some(Err(e)) = &r {
            info!(group = %group_id, member = %member.member_id, member_epoch = epoch, "kafka: consumer group commit refused: {e}");
        }
        r
    }

    /// OffsetFetch v9's member check, if a consumer group holds the id.
    pub fn consumer_check_fetch(
        &self,
        group_id: &str,
        member_id: &str,
        epoch: i32,
    ) -> Result<(), GroupError> {
        match self.consumer.borrow().get(group_id) {
            Some(g) => g.check_fetch(member_id, epoch),
            None => Ok(()),
        }
    }

    pub(super) fn consumer_list(&self) -> Vec<ListedGroup> {
        self.consumer
            .borrow()
            .values()
            .map(|g| {
                (
                    g.id.clone(),
                    "consumer".to_string(),
                    g.state_name(),
                    "consumer",
                )
            })
            .collect()
    }

    /// A consumer group as DescribeGroups shows it (Kafka's
    /// `ConsumerGroup.asDescribedGroup`): protocol type "consumer", the
    /// assignor as protocol, each member's subscription and assignment in
    /// the classic consumer protocol's encoding (version 0).
    pub(super) fn consumer_classic_view(&self, group_id: &str) -> Option<GroupView> {
        let v = self.consumer_describe(group_id)?;
        let members = v
            .members
            .into_iter()
            .map(|(m, _)| {
                let sub = ConsumerProtocolSubscription::default().with_topics(
                    m.subscribed
                        .iter()
                        .map(|t| StrBytes::from_string(t.clone()))
                        .collect(),
                );
                let asg = ConsumerProtocolAssignment::default().with_assigned_partitions(
                    m.assigned
                        .iter()
                        .map(|(t, ps)| {
                            TopicPartition::default()
                                .with_topic(TopicName(StrBytes::from_string(t.clone())))
                                .with_partitions(ps.iter().copied().collect())
                        })
                        .collect(),
                );
                MemberView {
                    member_id: m.id,
                    instance_id: m.instance_id,
                    client_id: m.client_id,
                    metadata: versioned(&sub),
                    assignment: versioned(&asg),
                }
            })
            .collect();
        Some(GroupView {
            state: v.state,
            protocol_type: "consumer".to_string(),
            protocol: v.assignor.to_string(),
            members,
        })
    }

    pub(super) fn consumer_tick(&self, now: Instant) {
        for (id, g) in self.consumer.borrow_mut().iter_mut() {
            for m in g.tick(now) {
                info!(group = %id, member = %m, group_epoch = g.group_epoch, "kafka: consumer group member expired (session or rebalance timeout)");
            }
        }
    }
}

/// `[int16 version 0][message v0]`, the classic consumer protocol's framing.
fn versioned<M: Encodable>(m: &M) -> Bytes {
    let mut b = BytesMut::new();
    b.put_i16(0);
    m.encode(&mut b, 0)
        .expect("a v0 consumer protocol message encodes");
    b.freeze()
}
