//! Delivery checks: nothing lost, nothing duplicated, nothing reordered.
//!
//! Each producer numbers the messages it sends to each partition 0, 1, 2…
//! A partition is an ordered log, so a consumer must see every producer's
//! numbers for that partition in order, each exactly once. The tracker
//! keeps, per (partition, producer), the next expected number and the
//! gaps it has seen:
//!
//! | seen `s` vs expected `e`  | meaning                                            |
//! |---------------------------|----------------------------------------------------|
//! | `s == e`                  | in order; `e += 1`                                 |
//! | `s > e`                   | `e..s` skipped: a gap (lost, unless it shows later) |
//! | `s < e`, inside a gap     | arrived late: reordered; the gap shrinks           |
//! | `s < e`, not in any gap   | seen before: duplicate                             |
//!
//! At the end, whatever is still in a gap, plus anything the producers
//! report as sent beyond the highest number seen, is lost, unless the
//! consumer stopped at the drain deadline: then what lies beyond the
//! highest number seen is *unread* (it may well be in the log; the
//! consumer fell behind), and only the gaps count as lost.

use serde::Serialize;
use std::collections::HashMap;

/// Sequence state of one producer on one partition.
#[derive(Debug, Default, Clone)]
struct SeqState {
    next: u64,
    /// Half-open ranges `[start, end)` skipped so far, ascending, disjoint.
    gaps: Vec<(u64, u64)>,
}

/// The outcome of the checks, for the report.
#[derive(Debug, Default, Clone, Copy, Serialize, PartialEq, Eq)]
pub struct CheckReport {
    /// Distinct messages seen.
    pub delivered: u64,
    /// Sent (acknowledged without error) but never seen.
    pub lost: u64,
    /// Sent after the last message a consumer read before it stopped at
    /// the drain deadline: not verified either way.
    pub unread: u64,
    pub duplicated: u64,
    /// Seen after a later message of the same producer and partition.
    pub reordered: u64,
    /// Found in a partition other than the one it was sent to.
    pub misrouted: u64,
}

impl CheckReport {
    pub fn passed(&self) -> bool {
        self.lost == 0
            && self.unread == 0
            && self.duplicated == 0
            && self.reordered == 0
            && self.misrouted == 0
    }
    pub fn add(&mut self, o: &CheckReport) {
        self.delivered += o.delivered;
        self.lost += o.lost;
        self.unread += o.unread;
        self.duplicated += o.duplicated;
        self.reordered += o.reordered;
        self.misrouted += o.misrouted;
    }
}

/// One consumer's view: the partitions it reads.
#[derive(Debug, Default)]
pub struct SeqChecker {
    /// Per (partition, producer). FxHash: this is looked up for every
    /// message read, and SipHash was ~8% of the consumer thread with 100 B
    /// messages.
    state: rustc_hash::FxHashMap<(u32, u32), SeqState>,
    duplicated: u64,
    reordered: u64,
    misrouted: u64,
    delivered: u64,
}

impl SeqChecker {
    pub fn new() -> SeqChecker {
        SeqChecker::default()
    }

    /// Record one message found in `partition`, carrying (`sent_to`,
    /// `producer`, `seq`) from its header. Returns true if it is a first
    /// delivery (neither duplicate nor misrouted).
    pub fn observe(&mut self, partition: u32, sent_to: u32, producer: u32, seq: u64) -> bool {
        if partition != sent_to {
            self.misrouted += 1;
            return false;
        }
        let st = self.state.entry((partition, producer)).or_default();
        if seq == st.next {
            st.next += 1;
        } else if seq > st.next {
            st.gaps.push((st.next, seq));
            st.next = seq + 1;
        } else {
            match st.gaps.iter().position(|&(a, b)| seq >= a && seq < b) {
                Some(i) => {
                    let (a, b) = st.gaps[i];
                    // Split the gap around `seq`.
                    let mut repl = Vec::with_capacity(2);
                    if a < seq {
                        repl.push((a, seq));
                    }
                    if seq + 1 < b {
                        repl.push((seq + 1, b));
                    }
                    st.gaps.splice(i..=i, repl);
                    self.reordered += 1;
                }
                None => {
                    self.duplicated += 1;
                    return false;
                }
            }
        }
        self.delivered += 1;
        true
    }

    /// Distinct messages seen on `partition` from all producers.
    pub fn delivered_on(&self, partition: u32) -> u64 {
        self.state
            .iter()
            .filter(|((p, _), _)| *p == partition)
            .map(|(_, s)| s.next - s.gaps.iter().map(|(a, b)| b - a).sum::<u64>())
            .sum()
    }

    /// Final verdict given what each producer sent: `sent[(partition,
    /// producer)]` = how many numbers it used on that partition. Only the
    /// partitions this checker reads (`partitions`) are judged. `stopped_early`:
    /// the consumer gave up at the drain deadline, so the tail it did not
    /// reach is unread rather than lost.
    pub fn finish(
        &self,
        sent: &HashMap<(u32, u32), u64>,
        partitions: &[u32],
        stopped_early: bool,
    ) -> CheckReport {
        let mut lost = 0;
        let mut tail = 0;
        for (&(p, prod), &n) in sent {
            if !partitions.contains(&p) {
                continue;
            }
            match self.state.get(&(p, prod)) {
                None => tail += n,
                Some(st) => {
                    let in_gaps: u64 = st.gaps.iter().map(|&(a, b)| b.min(n) - a.min(n)).sum();
                    lost += in_gaps;
                    tail += n.saturating_sub(st.next);
                }
            }
        }
        let (unread, tail_lost) = if stopped_early { (tail, 0) } else { (0, tail) };
        CheckReport {
            delivered: self.delivered,
            lost: lost + tail_lost,
            unread,
            duplicated: self.duplicated,
            reordered: self.reordered,
            misrouted: self.misrouted,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sent(n: u64) -> HashMap<(u32, u32), u64> {
        HashMap::from([((0, 1), n)])
    }

    #[test]
    fn in_order_passes() {
        let mut c = SeqChecker::new();
        for s in 0..100 {
            assert!(c.observe(0, 0, 1, s));
        }
        let r = c.finish(&sent(100), &[0], false);
        assert!(r.passed(), "{r:?}");
        assert_eq!(r.delivered, 100);
        assert_eq!(c.delivered_on(0), 100);
    }

    #[test]
    fn gap_is_loss() {
        let mut c = SeqChecker::new();
        for s in (0..100).filter(|s| s % 10 != 3) {
            c.observe(0, 0, 1, s);
        }
        let r = c.finish(&sent(100), &[0], false);
        assert_eq!(r.lost, 10);
        assert!(!r.passed());
    }

    #[test]
    fn missing_tail_is_loss() {
        let mut c = SeqChecker::new();
        for s in 0..90 {
            c.observe(0, 0, 1, s);
        }
        assert_eq!(c.finish(&sent(100), &[0], false).lost, 10);
        // A producer whose messages never arrived at all.
        let mut all = sent(100);
        all.insert((0, 2), 5);
        assert_eq!(c.finish(&all, &[0], false).lost, 15);
        // ...unless that partition belongs to another consumer.
        all.insert((1, 2), 5);
        assert_eq!(c.finish(&all, &[0], false).lost, 15);
    }

    #[test]
    fn duplicates_and_reorders() {
        let mut c = SeqChecker::new();
        for s in [0, 1, 3, 2, 4, 4, 1, 5] {
            c.observe(0, 0, 1, s);
        }
        let r = c.finish(&sent(6), &[0], false);
        assert_eq!(r.reordered, 1);
        assert_eq!(r.duplicated, 2);
        assert_eq!(r.lost, 0);
        assert_eq!(r.delivered, 6);
    }

    /// Keys interleaved message by message and in runs: each (partition,
    /// producer) keeps its own sequence.
    #[test]
    fn interleaved_producers_and_partitions_keep_their_own_sequences() {
        let mut c = SeqChecker::new();
        for s in 0..50 {
            assert!(c.observe(0, 0, 1, s));
            assert!(c.observe(0, 0, 2, s));
            if s != 7 {
                assert!(c.observe(1, 1, 1, s));
            }
        }
        for s in 50..60 {
            assert!(c.observe(1, 1, 1, s));
        }
        assert!(!c.observe(0, 0, 2, 49), "a duplicate of producer 2");
        let sent = HashMap::from([((0, 1), 50), ((0, 2), 50), ((1, 1), 60)]);
        assert_eq!(c.delivered_on(0), 100);
        assert_eq!(c.delivered_on(1), 59);
        let r = c.finish(&sent, &[0, 1], false);
        assert_eq!((r.delivered, r.lost, r.duplicated), (159, 1, 1));
        assert_eq!(c.finish(&sent, &[0], false).lost, 0);
    }

    #[test]
    fn misrouted() {
        let mut c = SeqChecker::new();
        assert!(!c.observe(1, 0, 1, 0));
        assert_eq!(c.finish(&HashMap::new(), &[1], false).misrouted, 1);
    }

    #[test]
    fn a_consumer_stopped_at_the_deadline_leaves_its_tail_unread_not_lost() {
        let mut c = SeqChecker::new();
        // 0..5, then 7..9: 5 and 6 are a gap; 10..100 never reached.
        for s in (0..5).chain(7..10) {
            c.observe(0, 0, 1, s);
        }
        let r = c.finish(&sent(100), &[0], true);
        assert_eq!((r.lost, r.unread), (2, 90));
        assert!(!r.passed());
        // The same consumer reporting it caught up: the tail is lost.
        let r = c.finish(&sent(100), &[0], false);
        assert_eq!((r.lost, r.unread), (92, 0));
    }
}
