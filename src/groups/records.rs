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
//! static members' instance ids), as Kafka 2.3+ writes them. What we read:
//! offset commit values v0-v3 and the flexible v4, group metadata values
//! v0-v3.

use bytes::{Buf, BufMut, Bytes, BytesMut};

/// Key versions: 0 and 1 are offset commits (same layout), 2 is group
/// metadata. Higher ones are Kafka's KIP-848 records, which we never write.
pub const KEY_OFFSET_COMMIT_V0: i16 = 0;
pub const KEY_OFFSET_COMMIT: i16 = 1;
pub const KEY_GROUP_METADATA: i16 = 2;
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

/// The key of a `__consumer_offsets` record.
#[derive(Debug, Clone, PartialEq, Eq)]
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
    }
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
        match self.uvarint(what)? {
            0 => Err(RecordError::Null(what)),
            n => self.utf8(n as usize - 1, what),
        }
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
        v => return Err(RecordError::KeyVersion(v)),
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
}
