//! Offset expiry: Kafka's `offsets.retention.minutes` (here
//! `offsets_retention_minutes`, default 7 days), checked every
//! `offsets_retention_check_interval_ms` (default 10 minutes).
//!
//! Kafka's rule (`OffsetMetadataManager.cleanupExpiredOffsets` and each
//! group's `offsetExpirationCondition`), which decides per committed
//! partition:
//! - no group (standalone commits) or a consumer-protocol group: an offset
//!   expires `retention` after its commit, unless a member of the group
//!   subscribes to its topic (an empty group subscribes to nothing);
//! - a classic group with no members: every offset expires `retention`
//!   after the group became Empty (its commit time if that is unknown);
//! - a classic group of protocol type `consumer` that is Stable: offsets of
//!   topics no member subscribes to expire `retention` after their commit;
//! - any other classic group (rebalancing, or not a consumer): nothing.
//!
//! Expired offsets get tombstones in `__consumer_offsets` (so a restart
//! does not bring them back) and leave memory. A group whose offsets all
//! expired (or that has none) and that has no members is deleted with
//! them: its membership record (classic) or its records (consumer
//! protocol) get tombstones too.
//!
//! Time: the coordinator's [`crate::clock::Clock`]: commit timestamps are
//! its wall time, and the pass runs on its timers, so a test drives both.
//! Runs on the coordinator's core, inside its ticker.

use super::consumer_store::Scope;
use super::coordinator::Coordinator;
use super::records::RecordKey;
use super::state::Phase;
use super::subscription::{self, CONSUMER_PROTOCOL_TYPE};
use super::OFFSETS_TOPIC;
use crate::shard::Shard;
use std::collections::BTreeSet;
use std::rc::Rc;
use std::time::{Duration, Instant};
use tracing::{info, warn};

/// What holds a group's offsets, as expiry sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Holder {
    /// No group: standalone commits.
    Standalone,
    /// A classic group with no members, Empty since then (wall ms) if known.
    ClassicEmpty { since_ms: Option<i64> },
    /// A Stable classic group of protocol type `consumer`: the topics its
    /// members subscribe to.
    ClassicStable { subscribed: BTreeSet<String> },
    /// A consumer-protocol group: the topics its members subscribe to.
    Consumer { subscribed: BTreeSet<String> },
    /// A classic group whose offsets do not expire now.
    Keep,
}

/// What expires of one group's offsets.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Verdict {
    pub expired: Vec<(String, i32)>,
    /// Nothing is left afterwards (true with no offsets at all).
    pub all_expired: bool,
}

/// Kafka's rule: which of `offsets` ((topic, partition), commit wall ms)
/// have expired at `now_ms` under `retention_ms`.
pub fn expired(
    holder: &Holder,
    offsets: &[((String, i32), i64)],
    now_ms: i64,
    retention_ms: i64,
) -> Verdict {
    assert!(retention_ms > 0, "offset retention must be positive");
    let subscribed = match holder {
        Holder::Keep => {
            return Verdict {
                expired: Vec::new(),
                all_expired: offsets.is_empty(),
            }
        }
        Holder::ClassicStable { subscribed } | Holder::Consumer { subscribed } => Some(subscribed),
        Holder::Standalone | Holder::ClassicEmpty { .. } => None,
    };
    let mut v = Verdict {
        expired: Vec::new(),
        all_expired: true,
    };
    for ((topic, p), commit_ms) in offsets {
        if subscribed.is_some_and(|s| s.contains(topic)) {
            v.all_expired = false;
            continue;
        }
        let base = match holder {
            Holder::ClassicEmpty { since_ms: Some(t) } => *t,
            _ => *commit_ms,
        };
        if now_ms.saturating_sub(base) >= retention_ms {
            v.expired.push((topic.clone(), *p));
        } else {
            v.all_expired = false;
        }
    }
    v.expired.sort();
    v
}

/// When the next expiry pass is due: every `interval`, on the
/// coordinator's clock.
#[derive(Debug)]
pub struct ExpirySchedule {
    interval: Duration,
    /// None: beyond what an `Instant` can hold (a huge interval), never.
    next: std::cell::Cell<Option<Instant>>,
}

impl ExpirySchedule {
    pub fn new(interval: Duration, now: Instant) -> Self {
        assert!(!interval.is_zero(), "a zero expiry interval would spin");
        ExpirySchedule {
            interval,
            next: std::cell::Cell::new(now.checked_add(interval)),
        }
    }

    /// Whether a pass is due at `now`; if so the next one is an interval on.
    pub fn due(&self, now: Instant) -> bool {
        match self.next.get() {
            Some(next) if now >= next => {
                self.next.set(now.checked_add(self.interval));
                true
            }
            _ => false,
        }
    }
}

impl Coordinator {
    /// How the group `id` holds its offsets now.
    fn holder(&self, id: &str) -> Holder {
        if let Some(g) = self.consumer.borrow().get(id) {
            return Holder::Consumer {
                subscribed: g.subscribed_topics(),
            };
        }
        let groups = self.groups.borrow();
        let Some(g) = groups.get(id) else {
            return Holder::Standalone;
        };
        match g.phase {
            Phase::Empty if g.members.is_empty() => Holder::ClassicEmpty {
                since_ms: g.empty_since_ms,
            },
            Phase::Stable if g.protocol_type.as_deref() == Some(CONSUMER_PROTOCOL_TYPE) => {
                Holder::ClassicStable {
                    subscribed: g
                        .view()
                        .members
                        .iter()
                        .flat_map(|m| subscription::topics_of(&m.metadata))
                        .collect(),
                }
            }
            _ => Holder::Keep,
        }
    }

    /// One expiry pass over every offsets partition this shard owns
    /// (loading those not loaded yet). Failures are logged; the next pass
    /// tries again.
    pub(super) async fn expire_offsets(&self, shard: &Rc<Shard>) {
        self.load_owned(shard).await;
        let Some(partitions) = shard.topics().get(OFFSETS_TOPIC).map(|m| m.partitions) else {
            return;
        };
        for p in self.offsets.loaded_partitions() {
            let mut ids: BTreeSet<String> =
                self.offsets.groups_in(p, partitions).into_iter().collect();
            let of_p = |g: &String| super::partition_of(g, partitions) == p;
            ids.extend(self.groups.borrow().keys().filter(|g| of_p(g)).cloned());
            ids.extend(self.consumer.borrow().keys().filter(|g| of_p(g)).cloned());
            for id in ids {
                if let Err(e) = self.expire_group(shard, p, &id).await {
                    warn!(group = %id, "kafka: offset expiry failed (retried at the next pass): {e}");
                }
            }
        }
    }

    async fn expire_group(
        &self,
        shard: &Rc<Shard>,
        partition: u32,
        id: &str,
    ) -> Result<(), super::GroupError> {
        let holder = self.holder(id);
        let v = expired(
            &holder,
            &self.offsets.commit_times(id),
            self.clock.wall_ms(),
            self.offsets_retention_ms,
        );
        if !v.expired.is_empty() {
            self.offsets
                .expire(shard, partition, id, &v.expired)
                .await?;
            info!(group = %id, partitions = v.expired.len(), "kafka: committed offsets expired");
        }
        if !v.all_expired {
            return Ok(());
        }
        // Nothing left: an empty group goes too (checked again, as a
        // member may have come during the write).
        match holder {
            Holder::Consumer { .. } => {
                if !self.consumer.borrow().get(id).is_some_and(|g| g.is_empty()) {
                    return Ok(());
                }
                self.consumer.borrow_mut().remove(id);
                self.persist_consumer(shard, partition, id, Scope::All, None)
                    .await?;
            }
            Holder::ClassicEmpty { .. } => {
                if !self
                    .groups
                    .borrow()
                    .get(id)
                    .is_some_and(|g| g.members.is_empty())
                {
                    return Ok(());
                }
                self.groups.borrow_mut().remove(id);
                self.offsets
                    .write_records(
                        shard,
                        partition,
                        &[(
                            RecordKey::Group {
                                group: id.to_string(),
                            },
                            None,
                        )],
                    )
                    .await?;
            }
            _ => return Ok(()),
        }
        info!(group = %id, "kafka: group deleted: empty, and its offsets expired");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::{Clock, ManualClock};

    const MIN: i64 = 60_000;

    fn offs(list: &[(&str, i32, i64)]) -> Vec<((String, i32), i64)> {
        list.iter()
            .map(|(t, p, at)| ((t.to_string(), *p), *at))
            .collect()
    }

    fn topics(ts: &[&str]) -> BTreeSet<String> {
        ts.iter().map(|t| t.to_string()).collect()
    }

    #[test]
    fn standalone_offsets_expire_retention_after_their_commit_on_the_clock() {
        let clock = ManualClock::new();
        let committed_at = clock.wall_ms();
        let o = offs(&[("t", 0, committed_at), ("t", 1, committed_at + MIN)]);
        clock.advance(Duration::from_millis(10 * MIN as u64 - 1));
        let v = expired(&Holder::Standalone, &o, clock.wall_ms(), 10 * MIN);
        assert!(v.expired.is_empty(), "one ms before the retention");
        assert!(!v.all_expired);
        clock.advance(Duration::from_millis(1));
        let v = expired(&Holder::Standalone, &o, clock.wall_ms(), 10 * MIN);
        assert_eq!(v.expired, vec![("t".to_string(), 0)]);
        assert!(!v.all_expired, "partition 1 was committed a minute later");
        clock.advance(Duration::from_millis(MIN as u64));
        let v = expired(&Holder::Standalone, &o, clock.wall_ms(), 10 * MIN);
        assert_eq!(v.expired.len(), 2);
        assert!(v.all_expired);
    }

    #[test]
    fn an_empty_classic_group_counts_from_when_it_emptied() {
        let o = offs(&[("t", 0, 0), ("u", 0, 5 * MIN)]);
        // Committed long ago, but Empty only since minute 50.
        let h = Holder::ClassicEmpty {
            since_ms: Some(50 * MIN),
        };
        assert_eq!(expired(&h, &o, 59 * MIN, 10 * MIN), Verdict::default());
        let v = expired(&h, &o, 60 * MIN, 10 * MIN);
        assert_eq!(v.expired.len(), 2);
        assert!(v.all_expired);
        // Unknown emptiness time: each offset's commit time.
        let h = Holder::ClassicEmpty { since_ms: None };
        let v = expired(&h, &o, 12 * MIN, 10 * MIN);
        assert_eq!(v.expired, vec![("t".to_string(), 0)]);
    }

    #[test]
    fn subscribed_topics_keep_their_offsets_and_busy_groups_keep_all() {
        let o = offs(&[("in", 0, 0), ("out", 0, 0), ("out", 1, 0)]);
        for h in [
            Holder::Consumer {
                subscribed: topics(&["in"]),
            },
            Holder::ClassicStable {
                subscribed: topics(&["in"]),
            },
        ] {
            let v = expired(&h, &o, 100 * MIN, MIN);
            assert_eq!(
                v.expired,
                vec![("out".to_string(), 0), ("out".to_string(), 1)],
                "{h:?}"
            );
            assert!(!v.all_expired, "the subscribed topic's offset stays");
        }
        // An empty consumer group subscribes to nothing.
        let v = expired(
            &Holder::Consumer {
                subscribed: topics(&[]),
            },
            &o,
            100 * MIN,
            MIN,
        );
        assert!(v.all_expired);
        let v = expired(&Holder::Keep, &o, 100 * MIN, MIN);
        assert_eq!(v, Verdict::default());
        // No offsets: nothing holds the group.
        assert!(expired(&Holder::Keep, &[], 0, MIN).all_expired);
        assert!(expired(&Holder::Standalone, &[], 0, MIN).all_expired);
    }

    #[test]
    fn the_pass_runs_once_per_interval_of_the_clock() {
        let clock = ManualClock::new();
        let s = ExpirySchedule::new(Duration::from_secs(600), clock.now());
        assert!(!s.due(clock.now()));
        clock.advance(Duration::from_secs(599));
        assert!(!s.due(clock.now()));
        clock.advance(Duration::from_secs(1));
        assert!(s.due(clock.now()));
        assert!(!s.due(clock.now()), "not twice for one moment");
        clock.advance(Duration::from_secs(600));
        assert!(s.due(clock.now()));
        // An interval past what the clock can count: never, not a panic.
        let never = ExpirySchedule::new(Duration::MAX, clock.now());
        assert!(!never.due(clock.now()));
    }
}
