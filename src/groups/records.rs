//! The records of `__consumer_offsets` in Kafka's own binary format (the
//! group coordinator's `OffsetCommitKey`/`OffsetCommitValue` and
//! `GroupMetadataKey`/`GroupMetadataValue` schemas), so tools that read the
//! topic (Burrow, kafka-consumer-groups-style scripts) decode it unchanged.
//! The layout, byte by byte, is in docs/consumer-offsets.md.
//!
//! Pure codec: no I/O, no time. Every integer is big-endian with the width
//! named in the code; a `string` is an int16 length then UTF-8 bytes, a
//! nullable string has length -1 for null, `bytes` is an int32 length then
//! the bytes. Decoding refuses what Kafka's own reader refuses (unknown
//! versions, short input) and trailing bytes after a key; values may carry
//! trailing bytes (a newer writer's fields, which Kafka also ignores).
//!
//! What we write: offset commit key v1, offset commit value v3 (with the
//! leader epoch), group metadata key v2, group metadata value v3 (with
//! static members' instance ids), as Kafka 2.3+ writes them, and the six
//! records of a consumer-protocol (KIP-848) group as Kafka 4.0 writes them
//! (key types 3 to 8, each value version 0, flexible). What we read:
//! offset commit values v0-v3 and the flexible v4, group metadata values
//! v0-v3, and those six consumer-group records (tagged fields that later
//! Kafka versions add, such as 4.1's `MetadataHash`, are skipped).

use bytes::{Buf, BufMut, Bytes, BytesMut};

/// Key versions: 0 and 1 are offset commits (same layout), 2 is group
/// metadata, 3 to 8 the records of a consumer-protocol group (Kafka calls
/// the number the record type; it sits where the version sits).
pub const KEY_OFFSET_COMMIT_V0: i16 = 0;
pub const KEY_OFFSET_COMMIT: i16 = 1;
pub const KEY_GROUP_METADATA: i16 = 2;
pub const KEY_CONSUMER_GROUP_METADATA: i16 = 3;
pub const KEY_CONSUMER_GROUP_PARTITION_METADATA: i16 = 4;
pub const KEY_CONSUMER_GROUP_MEMBER_METADATA: i16 = 5;
pub const KEY_CONSUMER_GROUP_TARGET_ASSIGNMENT_METADATA: i16 = 6;
pub const KEY_CONSUMER_GROUP_TARGET_ASSIGNMENT_MEMBER: i16 = 7;
pub const KEY_CONSUMER_GROUP_CURRENT_MEMBER_ASSIGNMENT: i16 = 8;
/// The one value version of the consumer-group records (flexible).
pub const CONSUMER_VALUE_VERSION: i16 = 0;
/// The value versions we write.
pub const OFFSET_VALUE_VERSION: i16 = 3;
pub const GROUP_VALUE_VERSION: i16 = 3;
/// The highest value versions we read.
const OFFSET_VALUE_VERSION_MAX: i16 = 4;
const GROUP_VALUE_VERSION_MAX: i16 = 3;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    #[error("record ends early: {0} needs more bytes")]
    Short(&'static str),
    #[error("unknown key version {0}")]
    KeyVersion(i16),
    #[error("unknown {what} value version {version}")]
    ValueVersion { what: &'static str, version: i16 },
    #[error("{0} is not UTF-8")]
    Utf8(&'static str),
    #[error("{0} is null but may not be")]
    Null(&'static str),
    #[error("{0} bytes left after the key")]
    Trailing(usize),
    #[error("{0} is longer than its length prefix allows")]
    TooLong(&'static str),
}

/// The key of a `__consumer_offsets` record. Ordered by kind, then group,
/// then member (a consumer group's records sort together per kind).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum RecordKey {
    /// One committed offset of a group: value [`OffsetValue`], or null for
    /// its deletion (OffsetDelete, DeleteGroups).
    Offset {
        group: String,
        topic: String,
        partition: i32,
    },
    /// A group's membership: value [`GroupValue`], or null when the group
    /// is deleted.
    Group { group: String },
    /// A consumer-protocol group's own record (type 3, value
    /// [`ConsumerValue::GroupEpoch`]), or one of its member's (types 5, 7,
    /// 8: `member` is set); null value: deleted.
    Consumer {
        kind: ConsumerKind,
        group: String,
        member: Option<String>,
    },
}

/// The six record types of a consumer-protocol group, in their key-type
/// order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ConsumerKind {
    /// 3, `ConsumerGroupMetadata`: the group epoch.
    Metadata,
    /// 4, `ConsumerGroupPartitionMetadata`: the subscribed topics' sizes.
    PartitionMetadata,
    /// 5, `ConsumerGroupMemberMetadata`: one member's subscription.
    MemberMetadata,
    /// 6, `ConsumerGroupTargetAssignmentMetadata`: the assignment epoch.
    TargetAssignmentMetadata,
    /// 7, `ConsumerGroupTargetAssignmentMember`: one member's target.
    TargetAssignmentMember,
    /// 8, `ConsumerGroupCurrentMemberAssignment`: one member's epochs and
    /// what it owns.
    CurrentMemberAssignment,
}

impl ConsumerKind {
    pub const ALL: [ConsumerKind; 6] = [
        ConsumerKind::Metadata,
        ConsumerKind::PartitionMetadata,
        ConsumerKind::MemberMetadata,
        ConsumerKind::TargetAssignmentMetadata,
        ConsumerKind::TargetAssignmentMember,
        ConsumerKind::CurrentMemberAssignment,
    ];

    /// The key type Kafka gives it.
    pub fn key_type(self) -> i16 {
        match self {
            ConsumerKind::Metadata => KEY_CONSUMER_GROUP_METADATA,
            ConsumerKind::PartitionMetadata => KEY_CONSUMER_GROUP_PARTITION_METADATA,
            ConsumerKind::MemberMetadata => KEY_CONSUMER_GROUP_MEMBER_METADATA,
            ConsumerKind::TargetAssignmentMetadata => KEY_CONSUMER_GROUP_TARGET_ASSIGNMENT_METADATA,
            ConsumerKind::TargetAssignmentMember => KEY_CONSUMER_GROUP_TARGET_ASSIGNMENT_MEMBER,
            ConsumerKind::CurrentMemberAssignment => KEY_CONSUMER_GROUP_CURRENT_MEMBER_ASSIGNMENT,
        }
    }

    fn of_key_type(t: i16) -> Option<ConsumerKind> {
        ConsumerKind::ALL.into_iter().find(|k| k.key_type() == t)
    }

    /// Whether its key names a member (types 5, 7, 8).
    pub fn per_member(self) -> bool {
        matches!(
            self,
            ConsumerKind::MemberMetadata
                | ConsumerKind::TargetAssignmentMember
                | ConsumerKind::CurrentMemberAssignment
        )
    }
}

/// A Kafka topic id (a UUID, 16 bytes, most significant first).
pub type TopicId = [u8; 16];

/// Partitions of one topic, by id (the consumer-group records name topics
/// by id, as Kafka 4 does).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdPartitions {
    pub topic_id: TopicId,
    pub partitions: Vec<i32>,
}

/// One subscribed topic as the group last saw it (type 4).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicMetadata {
    pub topic_id: TopicId,
    pub name: String,
    pub partitions: i32,
}

/// A consumer group member's subscription (type 5).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberMetadataValue {
    pub instance_id: Option<String>,
    pub rack_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub subscribed_topic_names: Vec<String>,
    pub subscribed_topic_regex: Option<String>,
    pub rebalance_timeout_ms: i32,
    pub server_assignor: Option<String>,
}

/// A consumer group member's epochs and ownership (type 8).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CurrentAssignmentValue {
    pub member_epoch: i32,
    pub previous_member_epoch: i32,
    /// Kafka's `MemberState`: 0 stable, 1 unrevoked partitions, 2
    /// unreleased partitions.
    pub state: i8,
    pub assigned: Vec<IdPartitions>,
    pub pending_revocation: Vec<IdPartitions>,
}

/// The value of a consumer-group record, by kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConsumerValue {
    /// 3: the group epoch.
    GroupEpoch(i32),
    /// 4: the subscribed topics (Kafka's per-partition rack lists are
    /// written empty: shardlog has no racks).
    PartitionMetadata(Vec<TopicMetadata>),
    /// 5.
    MemberMetadata(MemberMetadataValue),
    /// 6: the epoch the target assignment was computed at.
    AssignmentEpoch(i32),
    /// 7: one member's target assignment.
    TargetAssignment(Vec<IdPartitions>),
    /// 8.
    CurrentAssignment(CurrentAssignmentValue),
}

impl ConsumerValue {
    pub fn kind(&self) -> ConsumerKind {
        match self {
            ConsumerValue::GroupEpoch(_) => ConsumerKind::Metadata,
            ConsumerValue::PartitionMetadata(_) => ConsumerKind::PartitionMetadata,
            ConsumerValue::MemberMetadata(_) => ConsumerKind::MemberMetadata,
            ConsumerValue::AssignmentEpoch(_) => ConsumerKind::TargetAssignmentMetadata,
            ConsumerValue::TargetAssignment(_) => ConsumerKind::TargetAssignmentMember,
            ConsumerValue::CurrentAssignment(_) => ConsumerKind::CurrentMemberAssignment,
        }
    }
}

/// A committed offset as Kafka stores it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OffsetValue {
    pub offset: i64,
    /// -1 when unknown (and in versions before 3).
    pub leader_epoch: i32,
    pub metadata: String,
    pub commit_timestamp_ms: i64,
    /// Only version 1 has it; -1 otherwise.
    pub expire_timestamp_ms: i64,
}

/// A group's membership after a completed rebalance (or its emptiness).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupValue {
    pub protocol_type: String,
    pub generation: i32,
    pub protocol: Option<String>,
    pub leader: Option<String>,
    /// When the group entered its current state; -1 before version 2.
    pub current_state_timestamp_ms: i64,
    pub members: Vec<MemberValue>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberValue {
    pub member_id: String,
    /// `group.instance.id` of a static member (version 3+).
    pub group_instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    /// Version 1+; before that, the session timeout.
    pub rebalance_timeout_ms: i32,
    pub session_timeout_ms: i32,
    /// The member's metadata for the group's protocol.
    pub subscription: Bytes,
    pub assignment: Bytes,
}

// ---- writing ---------------------------------------------------------------

fn put_string(b: &mut BytesMut, s: &str) {
    assert!(
        s.len() <= i16::MAX as usize,
        "a string field over 32767 bytes"
    );
    b.put_i16(s.len() as i16);
    b.put_slice(s.as_bytes());
}

fn put_nullable_string(b: &mut BytesMut, s: Option<&str>) {
    match s {
        None => b.put_i16(-1),
        Some(s) => put_string(b, s),
    }
}

fn put_bytes(b: &mut BytesMut, v: &[u8]) {
    assert!(v.len() <= i32::MAX as usize);
    b.put_i32(v.len() as i32);
    b.put_slice(v);
}

/// The largest string a record field can hold (int16 length prefix). Group
/// ids, topics, member ids and metadata longer than this cannot be stored.
pub const STRING_LEN_MAX: usize = i16::MAX as usize;

pub fn encode_key(k: &RecordKey) -> Bytes {
    let mut b = BytesMut::new();
    match k {
        RecordKey::Offset {
            group,
            topic,
            partition,
        } => {
            b.put_i16(KEY_OFFSET_COMMIT);
            put_string(&mut b, group);
            put_string(&mut b, topic);
            b.put_i32(*partition);
        }
        RecordKey::Group { group } => {
            b.put_i16(KEY_GROUP_METADATA);
            put_string(&mut b, group);
        }
        RecordKey::Consumer {
            kind,
            group,
            member,
        } => {
            // The key versions are not flexible: plain int16 strings.
            assert_eq!(kind.per_member(), member.is_some(), "{kind:?} key");
            b.put_i16(kind.key_type());
            put_string(&mut b, group);
            if let Some(m) = member {
                put_string(&mut b, m);
            }
        }
    }
    b.freeze()
}

// Flexible versions (the consumer-group values): lengths as unsigned
// varints of N + 1 (0 is null), and each structure ends with its tagged
// fields (we write none: a zero count).

fn put_uvarint(b: &mut BytesMut, mut v: u32) {
    while v >= 0x80 {
        b.put_u8((v as u8 & 0x7f) | 0x80);
        v >>= 7;
    }
    b.put_u8(v as u8);
}

fn put_compact_len(b: &mut BytesMut, n: usize) {
    assert!(n < u32::MAX as usize, "a compact length over u32");
    put_uvarint(b, n as u32 + 1);
}

fn put_compact_string(b: &mut BytesMut, s: &str) {
    assert!(
        s.len() <= i16::MAX as usize,
        "a string field over 32767 bytes"
    );
    put_compact_len(b, s.len());
    b.put_slice(s.as_bytes());
}

fn put_compact_nullable_string(b: &mut BytesMut, s: Option<&str>) {
    match s {
        None => b.put_u8(0),
        Some(s) => put_compact_string(b, s),
    }
}

fn put_no_tags(b: &mut BytesMut) {
    b.put_u8(0);
}

/// `[]TopicPartition(s)`: topic id, `[]int32` partitions, tagged fields.
fn put_id_partitions(b: &mut BytesMut, ts: &[IdPartitions]) {
    put_compact_len(b, ts.len());
    for t in ts {
        b.put_slice(&t.topic_id);
        put_compact_len(b, t.partitions.len());
        for p in &t.partitions {
            b.put_i32(*p);
        }
        put_no_tags(b);
    }
}

/// A consumer-group record's value: int16 version 0, then the flexible
/// message.
pub fn encode_consumer_value(v: &ConsumerValue) -> Bytes {
    let mut b = BytesMut::new();
    b.put_i16(CONSUMER_VALUE_VERSION);
    match v {
        ConsumerValue::GroupEpoch(e) | ConsumerValue::AssignmentEpoch(e) => b.put_i32(*e),
        ConsumerValue::PartitionMetadata(topics) => {
            put_compact_len(&mut b, topics.len());
            for t in topics {
                b.put_slice(&t.topic_id);
                put_compact_string(&mut b, &t.name);
                b.put_i32(t.partitions);
                put_compact_len(&mut b, 0); // PartitionMetadata (racks): none
                put_no_tags(&mut b);
            }
        }
        ConsumerValue::MemberMetadata(m) => {
            put_compact_nullable_string(&mut b, m.instance_id.as_deref());
            put_compact_nullable_string(&mut b, m.rack_id.as_deref());
            put_compact_string(&mut b, &m.client_id);
            put_compact_string(&mut b, &m.client_host);
            put_compact_len(&mut b, m.subscribed_topic_names.len());
            for t in &m.subscribed_topic_names {
                put_compact_string(&mut b, t);
            }
            put_compact_nullable_string(&mut b, m.subscribed_topic_regex.as_deref());
            b.put_i32(m.rebalance_timeout_ms);
            put_compact_nullable_string(&mut b, m.server_assignor.as_deref());
        }
        ConsumerValue::TargetAssignment(ts) => put_id_partitions(&mut b, ts),
        ConsumerValue::CurrentAssignment(c) => {
            b.put_i32(c.member_epoch);
            b.put_i32(c.previous_member_epoch);
            b.put_i8(c.state);
            put_id_partitions(&mut b, &c.assigned);
            put_id_partitions(&mut b, &c.pending_revocation);
        }
    }
    put_no_tags(&mut b);
    b.freeze()
}

/// Offset commit value, version 3: offset, leader epoch, metadata, commit
/// timestamp.
pub fn encode_offset_value(v: &OffsetValue) -> Bytes {
    let mut b = BytesMut::new();
    b.put_i16(OFFSET_VALUE_VERSION);
    b.put_i64(v.offset);
    b.put_i32(v.leader_epoch);
    put_string(&mut b, &v.metadata);
    b.put_i64(v.commit_timestamp_ms);
    b.freeze()
}

/// Group metadata value, version 3.
pub fn encode_group_value(v: &GroupValue) -> Bytes {
    let mut b = BytesMut::new();
    b.put_i16(GROUP_VALUE_VERSION);
    put_string(&mut b, &v.protocol_type);
    b.put_i32(v.generation);
    put_nullable_string(&mut b, v.protocol.as_deref());
    put_nullable_string(&mut b, v.leader.as_deref());
    b.put_i64(v.current_state_timestamp_ms);
    b.put_i32(v.members.len() as i32);
    for m in &v.members {
        put_string(&mut b, &m.member_id);
        put_nullable_string(&mut b, m.group_instance_id.as_deref());
        put_string(&mut b, &m.client_id);
        put_string(&mut b, &m.client_host);
        b.put_i32(m.rebalance_timeout_ms);
        b.put_i32(m.session_timeout_ms);
        put_bytes(&mut b, &m.subscription);
        put_bytes(&mut b, &m.assignment);
    }
    b.freeze()
}

// ---- reading ---------------------------------------------------------------

struct Reader {
    b: Bytes,
}

impl Reader {
    fn need(&self, n: usize, what: &'static str) -> Result<(), RecordError> {
        if self.b.remaining() < n {
            return Err(RecordError::Short(what));
        }
        Ok(())
    }
    fn i16(&mut self, what: &'static str) -> Result<i16, RecordError> {
        self.need(2, what)?;
        Ok(self.b.get_i16())
    }
    fn i32(&mut self, what: &'static str) -> Result<i32, RecordError> {
        self.need(4, what)?;
        Ok(self.b.get_i32())
    }
    fn i64(&mut self, what: &'static str) -> Result<i64, RecordError> {
        self.need(8, what)?;
        Ok(self.b.get_i64())
    }
    fn utf8(&mut self, n: usize, what: &'static str) -> Result<String, RecordError> {
        self.need(n, what)?;
        let raw = self.b.split_to(n);
        String::from_utf8(raw.to_vec()).map_err(|_| RecordError::Utf8(what))
    }
    fn nullable_string(&mut self, what: &'static str) -> Result<Option<String>, RecordError> {
        let n = self.i16(what)?;
        if n < 0 {
            return Ok(None);
        }
        self.utf8(n as usize, what).map(Some)
    }
    fn string(&mut self, what: &'static str) -> Result<String, RecordError> {
        self.nullable_string(what)?.ok_or(RecordError::Null(what))
    }
    fn bytes(&mut self, what: &'static str) -> Result<Bytes, RecordError> {
        let n = self.i32(what)?;
        if n < 0 {
            return Ok(Bytes::new());
        }
        self.need(n as usize, what)?;
        Ok(self.b.split_to(n as usize))
    }
    /// Unsigned varint (flexible versions' lengths and tag counts).
    fn uvarint(&mut self, what: &'static str) -> Result<u32, RecordError> {
        let mut v: u32 = 0;
        for i in 0..5 {
            self.need(1, what)?;
            let byte = self.b.get_u8();
            v |= ((byte & 0x7f) as u32) << (7 * i);
            if byte & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(RecordError::TooLong(what))
    }
    /// A compact string (flexible versions): uvarint length + 1, then bytes.
    fn compact_string(&mut self, what: &'static str) -> Result<String, RecordError> {
        self.compact_nullable_string(what)?
            .ok_or(RecordError::Null(what))
    }
    fn compact_nullable_string(
        &mut self,
        what: &'static str,
    ) -> Result<Option<String>, RecordError> {
        match self.uvarint(what)? {
            0 => Ok(None),
            n => self.utf8(n as usize - 1, what).map(Some),
        }
    }
    /// A compact (non-null) array's length. Each element takes at least
    /// `min_bytes`: a count the input cannot hold is refused before the
    /// caller allocates for it.
    fn compact_array_len(
        &mut self,
        min_bytes: usize,
        what: &'static str,
    ) -> Result<usize, RecordError> {
        let n = match self.uvarint(what)? {
            0 => return Err(RecordError::Null(what)),
            n => n as usize - 1,
        };
        if n > self.b.remaining() / min_bytes.max(1) {
            return Err(RecordError::Short(what));
        }
        Ok(n)
    }
    fn i8(&mut self, what: &'static str) -> Result<i8, RecordError> {
        self.need(1, what)?;
        Ok(self.b.get_i8())
    }
    fn uuid(&mut self, what: &'static str) -> Result<TopicId, RecordError> {
        self.need(16, what)?;
        let mut id = [0u8; 16];
        self.b.copy_to_slice(&mut id);
        Ok(id)
    }
    fn id_partitions(&mut self, what: &'static str) -> Result<Vec<IdPartitions>, RecordError> {
        // 16 (id) + 1 (empty array) + 1 (no tags) bytes at least.
        let n = self.compact_array_len(18, what)?;
        let mut out = Vec::with_capacity(n);
        for _ in 0..n {
            let topic_id = self.uuid("topic id")?;
            let k = self.compact_array_len(4, "partitions")?;
            let mut partitions = Vec::with_capacity(k);
            for _ in 0..k {
                partitions.push(self.i32("partition")?);
            }
            self.skip_tagged_fields()?;
            out.push(IdPartitions {
                topic_id,
                partitions,
            });
        }
        Ok(out)
    }
    /// Skip a tagged-fields section (we need none of its fields).
    fn skip_tagged_fields(&mut self) -> Result<(), RecordError> {
        let count = self.uvarint("tagged fields")?;
        for _ in 0..count {
            self.uvarint("tag")?;
            let n = self.uvarint("tagged field size")? as usize;
            self.need(n, "tagged field")?;
            self.b.advance(n);
        }
        Ok(())
    }
}

pub fn decode_key(key: &Bytes) -> Result<RecordKey, RecordError> {
    let mut r = Reader { b: key.clone() };
    let version = r.i16("key version")?;
    let k = match version {
        KEY_OFFSET_COMMIT_V0 | KEY_OFFSET_COMMIT => RecordKey::Offset {
            group: r.string("group")?,
            topic: r.string("topic")?,
            partition: r.i32("partition")?,
        },
        KEY_GROUP_METADATA => RecordKey::Group {
            group: r.string("group")?,
        },
        v => match ConsumerKind::of_key_type(v) {
            Some(kind) => RecordKey::Consumer {
                kind,
                group: r.string("group")?,
                member: if kind.per_member() {
                    Some(r.string("member id")?)
                } else {
                    None
                },
            },
            None => return Err(RecordError::KeyVersion(v)),
        },
    };
    if r.b.has_remaining() {
        return Err(RecordError::Trailing(r.b.remaining()));
    }
    Ok(k)
}

pub fn decode_offset_value(value: &Bytes) -> Result<OffsetValue, RecordError> {
    let mut r = Reader { b: value.clone() };
    let version = r.i16("offset value version")?;
    if !(0..=OFFSET_VALUE_VERSION_MAX).contains(&version) {
        return Err(RecordError::ValueVersion {
            what: "offset commit",
            version,
        });
    }
    let offset = r.i64("offset")?;
    let leader_epoch = if version >= 3 {
        r.i32("leader epoch")?
    } else {
        -1
    };
    let metadata = if version >= 4 {
        r.compact_string("metadata")?
    } else {
        r.string("metadata")?
    };
    let commit_timestamp_ms = r.i64("commit timestamp")?;
    let expire_timestamp_ms = if version == 1 {
        r.i64("expire timestamp")?
    } else {
        -1
    };
    if version >= 4 {
        r.skip_tagged_fields()?;
    }
    Ok(OffsetValue {
        offset,
        leader_epoch,
        metadata,
        commit_timestamp_ms,
        expire_timestamp_ms,
    })
}

pub fn decode_group_value(value: &Bytes) -> Result<GroupValue, RecordError> {
    let mut r = Reader { b: value.clone() };
    let version = r.i16("group value version")?;
    if !(0..=GROUP_VALUE_VERSION_MAX).contains(&version) {
        return Err(RecordError::ValueVersion {
            what: "group metadata",
            version,
        });
    }
    let protocol_type = r.string("protocol type")?;
    let generation = r.i32("generation")?;
    let protocol = r.nullable_string("protocol")?;
    let leader = r.nullable_string("leader")?;
    let current_state_timestamp_ms = if version >= 2 {
        r.i64("current state timestamp")?
    } else {
        -1
    };
    let count = r.i32("member count")?;
    // Each member takes at least 18 bytes (version 0, every field empty):
    // refuse a count the input cannot hold before allocating for it.
    if count > 0 && r.b.remaining() / 18 < count as usize {
        return Err(RecordError::Short("members"));
    }
    let mut members = Vec::with_capacity(count.max(0) as usize);
    for _ in 0..count.max(0) {
        let member_id = r.string("member id")?;
        let group_instance_id = if version >= 3 {
            r.nullable_string("group instance id")?
        } else {
            None
        };
        let client_id = r.string("client id")?;
        let client_host = r.string("client host")?;
        let rebalance_timeout = if version >= 1 {
            Some(r.i32("rebalance timeout")?)
        } else {
            None
        };
        let session_timeout_ms = r.i32("session timeout")?;
        members.push(MemberValue {
            member_id,
            group_instance_id,
            client_id,
            client_host,
            rebalance_timeout_ms: rebalance_timeout.unwrap_or(session_timeout_ms),
            session_timeout_ms,
            subscription: r.bytes("subscription")?,
            assignment: r.bytes("assignment")?,
        });
    }
    Ok(GroupValue {
        protocol_type,
        generation,
        protocol,
        leader,
        current_state_timestamp_ms,
        members,
    })
}

/// The value of a consumer-group record of kind `kind`.
pub fn decode_consumer_value(
    kind: ConsumerKind,
    value: &Bytes,
) -> Result<ConsumerValue, RecordError> {
    let mut r = Reader { b: value.clone() };
    let version = r.i16("consumer group value version")?;
    if version != CONSUMER_VALUE_VERSION {
        return Err(RecordError::ValueVersion {
            what: "consumer group",
            version,
        });
    }
    let v = match kind {
        ConsumerKind::Metadata => ConsumerValue::GroupEpoch(r.i32("group epoch")?),
        ConsumerKind::TargetAssignmentMetadata => {
            ConsumerValue::AssignmentEpoch(r.i32("assignment epoch")?)
        }
        ConsumerKind::PartitionMetadata => {
            // 16 + 1 + 4 + 1 + 1 bytes at least per topic.
            let n = r.compact_array_len(23, "topics")?;
            let mut topics = Vec::with_capacity(n);
            for _ in 0..n {
                let topic_id = r.uuid("topic id")?;
                let name = r.compact_string("topic name")?;
                let partitions = r.i32("partition count")?;
                // Racks per partition: read past them (no racks here).
                let racks = r.compact_array_len(7, "partition metadata")?;
                for _ in 0..racks {
                    r.i32("partition")?;
                    let k = r.compact_array_len(1, "racks")?;
                    for _ in 0..k {
                        r.compact_string("rack")?;
                    }
                    r.skip_tagged_fields()?;
                }
                r.skip_tagged_fields()?;
                topics.push(TopicMetadata {
                    topic_id,
                    name,
                    partitions,
                });
            }
            ConsumerValue::PartitionMetadata(topics)
        }
        ConsumerKind::MemberMetadata => {
            let instance_id = r.compact_nullable_string("instance id")?;
            let rack_id = r.compact_nullable_string("rack id")?;
            let client_id = r.compact_string("client id")?;
            let client_host = r.compact_string("client host")?;
            let n = r.compact_array_len(1, "subscribed topic names")?;
            let mut subscribed_topic_names = Vec::with_capacity(n);
            for _ in 0..n {
                subscribed_topic_names.push(r.compact_string("subscribed topic")?);
            }
            ConsumerValue::MemberMetadata(MemberMetadataValue {
                instance_id,
                rack_id,
                client_id,
                client_host,
                subscribed_topic_names,
                subscribed_topic_regex: r.compact_nullable_string("subscribed topic regex")?,
                rebalance_timeout_ms: r.i32("rebalance timeout")?,
                server_assignor: r.compact_nullable_string("server assignor")?,
            })
        }
        ConsumerKind::TargetAssignmentMember => {
            ConsumerValue::TargetAssignment(r.id_partitions("target partitions")?)
        }
        ConsumerKind::CurrentMemberAssignment => {
            ConsumerValue::CurrentAssignment(CurrentAssignmentValue {
                member_epoch: r.i32("member epoch")?,
                previous_member_epoch: r.i32("previous member epoch")?,
                state: r.i8("member state")?,
                assigned: r.id_partitions("assigned partitions")?,
                pending_revocation: r.id_partitions("partitions pending revocation")?,
            })
        }
    };
    // The message's own tagged fields (4.1+ adds some; none we need).
    r.skip_tagged_fields()?;
    Ok(v)
}

/// Java's `String.hashCode` (over UTF-16 code units, wrapping), as Kafka
/// uses it to place a group.
pub fn java_string_hash(s: &str) -> i32 {
    s.encode_utf16()
        .fold(0i32, |h, c| h.wrapping_mul(31).wrapping_add(c as i32))
}

/// Kafka's partition for a group: `Utils.abs(groupId.hashCode) % partitions`
/// (`Utils.abs` maps `i32::MIN` to 0).
pub fn kafka_partition_of(group: &str, partitions: u32) -> u32 {
    assert!(partitions > 0 && partitions <= i32::MAX as u32);
    let h = java_string_hash(group);
    let abs = if h == i32::MIN { 0 } else { h.abs() };
    (abs as u32) % partitions
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn java_hash_matches_known_values() {
        // Values of "x".hashCode() computed by the JVM.
        assert_eq!(java_string_hash(""), 0);
        assert_eq!(java_string_hash("a"), 97);
        assert_eq!(java_string_hash("hello"), 99162322);
        // "polygenelubricants".hashCode() == Integer.MIN_VALUE: Utils.abs gives 0.
        assert_eq!(java_string_hash("polygenelubricants"), i32::MIN);
        assert_eq!(kafka_partition_of("polygenelubricants", 50), 0);
        assert_eq!(kafka_partition_of("hello", 50), 99162322 % 50);
        // Outside the BMP: two UTF-16 units, as Java counts them.
        assert_eq!(
            java_string_hash("\u{1F600}"),
            (0xD83Di32).wrapping_mul(31).wrapping_add(0xDE00)
        );
    }

    #[test]
    fn offset_key_and_value_bytes_are_kafkas() {
        let k = encode_key(&RecordKey::Offset {
            group: "g".into(),
            topic: "t".into(),
            partition: 2,
        });
        assert_eq!(&k[..], b"\x00\x01\x00\x01g\x00\x01t\x00\x00\x00\x02");
        let v = encode_offset_value(&OffsetValue {
            offset: 5,
            leader_epoch: 7,
            metadata: "m".into(),
            commit_timestamp_ms: 0x0102,
            expire_timestamp_ms: -1,
        });
        assert_eq!(
            &v[..],
            b"\x00\x03\0\0\0\0\0\0\0\x05\0\0\0\x07\x00\x01m\0\0\0\0\0\0\x01\x02"
        );
        assert_eq!(decode_offset_value(&v).unwrap().offset, 5);
        assert_eq!(
            decode_key(&k).unwrap(),
            RecordKey::Offset {
                group: "g".into(),
                topic: "t".into(),
                partition: 2
            }
        );
    }

    #[test]
    fn older_and_flexible_offset_values_decode() {
        // v1: offset, metadata, commit ts, expire ts.
        let v1 = Bytes::from_static(
            b"\x00\x01\0\0\0\0\0\0\0\x09\x00\x00\0\0\0\0\0\0\0\x01\0\0\0\0\0\0\0\x02",
        );
        let d = decode_offset_value(&v1).unwrap();
        assert_eq!(
            (d.offset, d.leader_epoch, d.expire_timestamp_ms),
            (9, -1, 2)
        );
        // v4: flexible; metadata as a compact string, then tagged fields.
        let v4 = Bytes::from_static(
            b"\x00\x04\0\0\0\0\0\0\0\x09\0\0\0\x03\x02m\0\0\0\0\0\0\0\x01\x01\x00\x02ab",
        );
        let d = decode_offset_value(&v4).unwrap();
        assert_eq!((d.offset, d.leader_epoch, d.metadata.as_str()), (9, 3, "m"));
        assert!(matches!(
            decode_offset_value(&Bytes::from_static(b"\x00\x05")),
            Err(RecordError::ValueVersion { .. })
        ));
        assert!(matches!(
            decode_offset_value(&Bytes::from_static(b"\x00\x03\0\0")),
            Err(RecordError::Short(_))
        ));
    }

    #[test]
    fn group_values_round_trip_and_refuse_lies() {
        let g = GroupValue {
            protocol_type: "consumer".into(),
            generation: 4,
            protocol: Some("range".into()),
            leader: Some("m1".into()),
            current_state_timestamp_ms: 77,
            members: vec![MemberValue {
                member_id: "m1".into(),
                group_instance_id: Some("i1".into()),
                client_id: "c".into(),
                client_host: "/127.0.0.1".into(),
                rebalance_timeout_ms: 300_000,
                session_timeout_ms: 10_000,
                subscription: Bytes::from_static(b"sub"),
                assignment: Bytes::from_static(b"asg"),
            }],
        };
        let v = encode_group_value(&g);
        assert_eq!(decode_group_value(&v).unwrap(), g);
        let k = encode_key(&RecordKey::Group { group: "g".into() });
        assert_eq!(&k[..], b"\x00\x02\x00\x01g");
        // A member count the bytes cannot hold is refused before allocating.
        let mut lie = BytesMut::new();
        lie.put_i16(3);
        put_string(&mut lie, "consumer");
        lie.put_i32(1);
        lie.put_i16(-1);
        lie.put_i16(-1);
        lie.put_i64(0);
        lie.put_i32(i32::MAX);
        assert_eq!(
            decode_group_value(&lie.freeze()),
            Err(RecordError::Short("members"))
        );
        // A key with bytes after it is not a key.
        let mut long = BytesMut::from(&k[..]);
        long.put_u8(0);
        assert_eq!(decode_key(&long.freeze()), Err(RecordError::Trailing(1)));
    }

    fn ckey(kind: ConsumerKind, member: Option<&str>) -> RecordKey {
        RecordKey::Consumer {
            kind,
            group: "g".into(),
            member: member.map(String::from),
        }
    }

    #[test]
    fn consumer_group_keys_are_kafkas_type_and_fields() {
        // Type 3 (group), then the group id as an int16 string.
        let k = ckey(ConsumerKind::Metadata, None);
        assert_eq!(&encode_key(&k)[..], b"\x00\x03\x00\x01g");
        // Types 5, 7, 8: group id then member id.
        for (kind, t) in [
            (ConsumerKind::MemberMetadata, 5u8),
            (ConsumerKind::TargetAssignmentMember, 7),
            (ConsumerKind::CurrentMemberAssignment, 8),
        ] {
            let k = ckey(kind, Some("m"));
            let b = encode_key(&k);
            assert_eq!(&b[..], &[0, t, 0, 1, b'g', 0, 1, b'm']);
            assert_eq!(decode_key(&b).unwrap(), k);
        }
        for (kind, t) in [
            (ConsumerKind::PartitionMetadata, 4u8),
            (ConsumerKind::TargetAssignmentMetadata, 6),
        ] {
            let b = encode_key(&ckey(kind, None));
            assert_eq!(&b[..], &[0, t, 0, 1, b'g']);
            assert_eq!(decode_key(&b).unwrap(), ckey(kind, None));
        }
        // A member key cut after the group is short, not a group key.
        assert_eq!(
            decode_key(&Bytes::from_static(b"\x00\x05\x00\x01g")),
            Err(RecordError::Short("member id"))
        );
        assert_eq!(
            decode_key(&Bytes::from_static(b"\x00\x09\x00\x01g")),
            Err(RecordError::KeyVersion(9))
        );
    }

    #[test]
    fn consumer_group_values_have_kafkas_flexible_layout() {
        // Epoch records: version 0, int32, no tagged fields.
        let v = encode_consumer_value(&ConsumerValue::GroupEpoch(5));
        assert_eq!(&v[..], b"\x00\x00\x00\x00\x00\x05\x00");
        let member = ConsumerValue::MemberMetadata(MemberMetadataValue {
            instance_id: None,
            rack_id: None,
            client_id: "c".into(),
            client_host: String::new(),
            subscribed_topic_names: vec!["t".into()],
            subscribed_topic_regex: None,
            rebalance_timeout_ms: 300_000,
            server_assignor: Some("uniform".into()),
        });
        let v = encode_consumer_value(&member);
        let want: &[u8] = b"\x00\x00\
            \x00\
            \x00\
            \x02c\
            \x01\
            \x02\x02t\
            \x00\
            \x00\x04\x93\xe0\
            \x08uniform\
            \x00";
        assert_eq!(&v[..], want);
        assert_eq!(
            decode_consumer_value(ConsumerKind::MemberMetadata, &v).unwrap(),
            member
        );
        let current = ConsumerValue::CurrentAssignment(CurrentAssignmentValue {
            member_epoch: 3,
            previous_member_epoch: 2,
            state: 1,
            assigned: vec![IdPartitions {
                topic_id: [0x11; 16],
                partitions: vec![0, 2],
            }],
            pending_revocation: vec![],
        });
        let v = encode_consumer_value(&current);
        let mut want = b"\x00\x00\x00\x00\x00\x03\x00\x00\x00\x02\x01\x02".to_vec();
        want.extend([0x11; 16]);
        want.extend(b"\x03\x00\x00\x00\x00\x00\x00\x00\x02\x00\x01\x00");
        assert_eq!(&v[..], &want[..]);
        assert_eq!(
            decode_consumer_value(ConsumerKind::CurrentMemberAssignment, &v).unwrap(),
            current
        );
    }

    #[test]
    fn consumer_group_values_round_trip_and_skip_later_tagged_fields() {
        let ids = |n: u8| IdPartitions {
            topic_id: [n; 16],
            partitions: vec![1, 3, 5],
        };
        let values = [
            ConsumerValue::GroupEpoch(i32::MAX),
            ConsumerValue::PartitionMetadata(vec![TopicMetadata {
                topic_id: [7; 16],
                name: "orders".into(),
                partitions: 12,
            }]),
            ConsumerValue::MemberMetadata(MemberMetadataValue {
                instance_id: Some("i".into()),
                rack_id: Some("r".into()),
                client_id: "c".into(),
                client_host: "/h".into(),
                subscribed_topic_names: vec!["a".into(), "b".into()],
                subscribed_topic_regex: None,
                rebalance_timeout_ms: -1,
                server_assignor: None,
            }),
            ConsumerValue::AssignmentEpoch(4),
            ConsumerValue::TargetAssignment(vec![ids(1), ids(2)]),
            ConsumerValue::CurrentAssignment(CurrentAssignmentValue {
                member_epoch: 4,
                previous_member_epoch: 3,
                state: 2,
                assigned: vec![ids(3)],
                pending_revocation: vec![ids(4)],
            }),
        ];
        for v in values {
            let b = encode_consumer_value(&v);
            assert_eq!(decode_consumer_value(v.kind(), &b).unwrap(), v);
            // Every cut is refused, never misread.
            for cut in 0..b.len() {
                assert!(decode_consumer_value(v.kind(), &b.slice(..cut)).is_err());
            }
        }
        // Kafka 4.1's group metadata value carries MetadataHash as tagged
        // field 0 (int64): read past it.
        let v41 = Bytes::from_static(b"\x00\x00\x00\x00\x00\x09\x01\x00\x08\0\0\0\0\0\0\0\x2a");
        assert_eq!(
            decode_consumer_value(ConsumerKind::Metadata, &v41).unwrap(),
            ConsumerValue::GroupEpoch(9)
        );
        // A topic count the bytes cannot hold is refused before allocating.
        let lie = Bytes::from_static(b"\x00\x00\xff\xff\xff\x07");
        assert_eq!(
            decode_consumer_value(ConsumerKind::TargetAssignmentMember, &lie),
            Err(RecordError::Short("target partitions"))
        );
    }
}
