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
//! Every change is stored before it is answered ([`super::consumer_store`]):
//! a heartbeat's changes are durable when its answer goes; changes without
//! a request (a member's session or rebalance timeout) are stored in the
//! background right after the tick that made them.
//!
//! Runs on the coordinator's core, like the rest of [`Coordinator`].

use super::consumer_group::{
    ConsumerGroup, ConsumerGroupView, HeartbeatParams, HeartbeatReply, TopicLookup,
};
use super::consumer_store::{Scope, TopicIds};
use super::coordinator::{Coordinator, GROUPS_MAX};
use super::offsets::CommitItem;
use super::records::RecordKey;
use super::state::{MemberRef, Phase};
use super::{GroupError, GroupView, MemberView, Unavailable};
use crate::metadata::TopicTable;
use crate::shard::Shard;
use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::consumer_protocol_assignment::TopicPartition;
use kafka_protocol::messages::{
    ConsumerProtocolAssignment, ConsumerProtocolSubscription, TopicName,
};
use kafka_protocol::protocol::{Encodable, StrBytes};
use std::rc::Rc;
use std::time::Instant;
use tracing::{info, warn};

impl TopicLookup for TopicTable {
    fn partitions(&self, topic: &str) -> Option<u32> {
        self.get(topic).map(|m| m.partitions)
    }
}

/// (group id, protocol type, state, group type) as ListGroups shows it.
pub type ListedGroup = (String, String, &'static str, &'static str);

impl Coordinator {
    /// ConsumerGroupHeartbeat for `group_id` (offsets partition
    /// `partition`), against the topic table `topics`. What it changed is
    /// durable before it answers.
    pub async fn consumer_heartbeat(
        &self,
        shard: &Rc<Shard>,
        partition: u32,
        group_id: &str,
        p: HeartbeatParams,
        topics: &TopicTable,
    ) -> Result<HeartbeatReply, GroupError> {
        let member = p.member_id.clone();
        let before = self.consumer_shape(group_id, &member);
        let mut replaced_classic = false;
        let reply = self.consumer_heartbeat_now(group_id, p, topics, &mut replaced_classic)?;
        // Only this member's records can have changed unless the group's
        // epochs or membership moved.
        let scope = if before.is_some() && before == self.consumer_shape(group_id, &member) {
            Scope::Member(&member)
        } else {
            Scope::All
        };
        // The classic group this one replaced is deleted with it.
        let extra = replaced_classic.then(|| RecordKey::Group {
            group: group_id.to_string(),
        });
        self.persist_consumer(shard, partition, group_id, scope, extra)
            .await?;
        Ok(reply)
    }

    /// (group epoch, assignment epoch, members, whether `member` is one).
    fn consumer_shape(&self, group_id: &str, member: &str) -> Option<(i32, i32, usize, bool)> {
        self.consumer.borrow().get(group_id).map(|g| {
            (
                g.group_epoch,
                g.assignment_epoch,
                g.member_count(),
                g.member(member).is_some(),
            )
        })
    }

    /// Write what changed in `group_id` (within `scope`) since it was last
    /// stored, with `extra` tombstones first; a group no longer in memory
    /// gets tombstones for all its records.
    pub(super) async fn persist_consumer(
        &self,
        shard: &Rc<Shard>,
        partition: u32,
        group_id: &str,
        scope: Scope<'_>,
        extra: Option<RecordKey>,
    ) -> Result<(), GroupError> {
        let ids = TopicIds::of(&shard.topics());
        let mut recs: Vec<(RecordKey, Option<bytes::Bytes>)> =
            extra.into_iter().map(|k| (k, None)).collect();
        recs.extend(self.consumer_store.diff(
            group_id,
            self.consumer.borrow().get(group_id),
            &ids,
            scope,
        ));
        if recs.is_empty() {
            return Ok(());
        }
        match self.offsets.write_records(shard, partition, &recs).await {
            Ok(base) => {
                self.consumer_store.written(group_id, &recs, base);
                Ok(())
            }
            Err(e) => {
                warn!(group = %group_id, "kafka: consumer group change not stored: {e}");
                self.consumer_store.failed(group_id);
                Err(e)
            }
        }
    }

    /// Store, in the background, what ticks changed in these groups.
    pub(super) fn persist_consumer_later(self: &Rc<Self>, shard: &Rc<Shard>, ids: Vec<String>) {
        self.each_later(shard, ids, |c, shard, id, p| async move {
            // Logged inside; the next change of the group retries.
            let _ = c.persist_consumer(&shard, p, &id, Scope::All, None).await;
        });
    }

    fn consumer_heartbeat_now(
        &self,
        group_id: &str,
        p: HeartbeatParams,
        topics: &TopicTable,
        replaced_classic: &mut bool,
    ) -> Result<HeartbeatReply, GroupError> {
        let now = self.clock.now();
        // A classic group with members keeps the id; an empty one gives it up.
        {
            let mut classic = self.groups.borrow_mut();
            match classic.get(group_id) {
                Some(g) if g.phase != Phase::Empty => return Err(GroupError::GroupIdNotFound),
                Some(_) if p.member_epoch == 0 => {
                    classic.remove(group_id);
                    *replaced_classic = true;
                }
                _ => {}
            }
        }
        let mut groups = self.consumer.borrow_mut();
        if !groups.contains_key(group_id) {
            if p.member_epoch != 0 {
                // Kafka answers GROUP_ID_NOT_FOUND; a member of a group
                // that is gone (deleted, or expired) must rejoin, which
                // UNKNOWN_MEMBER_ID tells it.
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
    /// id (INCONSISTENT_GROUP_PROTOCOL); an empty one is dropped, and its
    /// records deleted before the join goes on.
    pub(super) async fn classic_may_take(
        &self,
        shard: &Rc<Shard>,
        partition: u32,
        group_id: &str,
    ) -> Result<(), GroupError> {
        {
            let mut groups = self.consumer.borrow_mut();
            match groups.get(group_id) {
                Some(g) if !g.is_empty() => return Err(GroupError::InconsistentProtocol),
                Some(_) => {
                    groups.remove(group_id);
                }
                None => return Ok(()),
            }
        }
        self.persist_consumer(shard, partition, group_id, Scope::All, None)
            .await
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

    /// Expire silent members; returns the groups that changed.
    pub(super) fn consumer_tick(&self, now: Instant) -> Vec<String> {
        let mut changed = Vec::new();
        for (id, g) in self.consumer.borrow_mut().iter_mut() {
            let gone = g.tick(now);
            for m in &gone {
                info!(group = %id, member = %m, group_epoch = g.group_epoch, "kafka: consumer group member expired (session or rebalance timeout)");
            }
            if !gone.is_empty() {
                changed.push(id.clone());
            }
        }
        changed
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
