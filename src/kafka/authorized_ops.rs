//! Authorized operations (KIP-430): what Metadata, DescribeCluster-style
//! Metadata and DescribeGroups report when the client sets
//! `include_*_authorized_operations`.
//!
//! shardlog has no authorizer, so, as Kafka's broker does without one
//! (`AuthHelper.authorizedOperations`), the caller may perform every
//! operation Kafka supports on the resource type. The answer is a bit field
//! with bit N set for Kafka's `AclOperation` code N.

/// Kafka's `AclOperation` codes.
const READ: u8 = 3;
const WRITE: u8 = 4;
const CREATE: u8 = 5;
const DELETE: u8 = 6;
const ALTER: u8 = 7;
const DESCRIBE: u8 = 8;
const CLUSTER_ACTION: u8 = 9;
const DESCRIBE_CONFIGS: u8 = 10;
const ALTER_CONFIGS: u8 = 11;
const IDEMPOTENT_WRITE: u8 = 12;

/// Kafka's "not asked for" value of every authorized-operations field.
pub const NOT_REQUESTED: i32 = i32::MIN;

const fn bits(ops: &[u8]) -> i32 {
    let mut v = 0i32;
    let mut i = 0;
    while i < ops.len() {
        v |= 1 << ops[i];
        i += 1;
    }
    v
}

/// `AclEntry.supportedOperations(TOPIC)`.
pub const TOPIC: i32 = bits(&[
    READ,
    WRITE,
    CREATE,
    DESCRIBE,
    DELETE,
    ALTER,
    DESCRIBE_CONFIGS,
    ALTER_CONFIGS,
]);
/// `AclEntry.supportedOperations(CLUSTER)`.
pub const CLUSTER: i32 = bits(&[
    CREATE,
    CLUSTER_ACTION,
    DESCRIBE_CONFIGS,
    ALTER_CONFIGS,
    IDEMPOTENT_WRITE,
    ALTER,
    DESCRIBE,
]);
/// `AclEntry.supportedOperations(GROUP)`.
pub const GROUP: i32 = bits(&[READ, DESCRIBE, DELETE]);

/// `ops` when asked for, Kafka's "not requested" value otherwise.
pub fn if_asked(asked: bool, ops: i32) -> i32 {
    if asked {
        ops
    } else {
        NOT_REQUESTED
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bit_fields_match_kafkas() {
        // Bits of READ..DESCRIBE (3-8), DESCRIBE_CONFIGS and ALTER_CONFIGS
        // (10, 11): not CLUSTER_ACTION (9), which is for clusters only.
        assert_eq!(TOPIC, 0b1101_1111_1000);
        assert_eq!(GROUP, (1 << 3) | (1 << 6) | (1 << 8));
        assert_eq!(CLUSTER.count_ones(), 7);
        assert_eq!(if_asked(false, TOPIC), i32::MIN);
    }
}
