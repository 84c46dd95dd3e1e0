//! Retention policy: which closed segments to delete. Pure; the log applies it.
//!
//! Only whole closed segments are deleted, oldest first, and never the active
//! one, so the log-start offset moves in segment steps (as in Kafka).
//!
//! No state and no I/O: the log calls [`segments_to_delete`] on its shard
//! with the wall time of its clock (see `log/truncate.rs`).

/// What retention needs to know about a closed segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentStat {
    pub base_offset: u64,
    pub len: u64,
    pub max_timestamp: i64,
}

/// Base offsets of the closed segments to delete. `closed` is oldest first;
/// `total_len` includes the active segment.
pub fn segments_to_delete(
    closed: &[SegmentStat],
    total_len: u64,
    now_ms: i64,
    retention_ms: i64,
    retention_bytes: i64,
) -> Vec<u64> {
    let mut out = Vec::new();
    let mut remaining = total_len;
    for s in closed {
        let too_old =
            retention_ms >= 0 && s.max_timestamp >= 0 && now_ms - s.max_timestamp > retention_ms;
        // Time: a segment goes once its newest record is older than retention_ms.
        // Size (Kafka's rule): a segment goes while the log without it still
        // holds at least retention_bytes.
        let too_big = retention_bytes >= 0 && remaining - s.len >= retention_bytes as u64;
        if too_old || too_big {
            out.push(s.base_offset);
            remaining -= s.len;
        } else {
            break;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seg(base: u64, len: u64, ts: i64) -> SegmentStat {
        SegmentStat {
            base_offset: base,
            len,
            max_timestamp: ts,
        }
    }

    #[test]
    fn time_and_size_rules() {
        let closed = [seg(0, 100, 10), seg(10, 100, 20), seg(20, 100, 1000)];
        assert_eq!(segments_to_delete(&closed, 350, 1000, 500, -1), vec![0, 10]);
        assert_eq!(segments_to_delete(&closed, 350, 1000, -1, 150), vec![0, 10]);
        assert_eq!(
            segments_to_delete(&closed, 350, 1000, -1, 260),
            Vec::<u64>::new()
        );
        assert_eq!(
            segments_to_delete(&closed, 350, 1000, -1, -1),
            Vec::<u64>::new()
        );
    }
}
