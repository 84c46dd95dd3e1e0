//! The bytes of a batch of partition-group Raft messages between two
//! brokers: every group's messages from one broker to one other, sent
//! together (heartbeats batched per pair of brokers, not per partition).
//!
//! ```text
//! batch   u8 version (=1) | u32 from (broker id) | u32 items
//!         | items x (u64 topic_id_hi | u64 topic_id_lo | u32 partition | message)
//! message as in protocol::raft_codec (u8 type | u32 to | u32 from | ... | entries | snapshot)
//! ```
//! All integers little-endian. Entry data is carried as `Bytes` sliced
//! from the received buffer (no copy until a replica stamps it). A batch
//! is decoded like any bytes from the network: every count is bounded by
//! what remains, and damage is an error, never a panic.

use super::driver::GroupKey;
use crate::protocol::codec::Reader;
use crate::protocol::raft_codec::{get_message, put_message};
use crate::protocol::DecodeError;
use bytes::{BufMut, BytesMut};
use raft::eraftpb::Message;

pub const VERSION: u8 = 1;
/// The smallest encoded item: its key and a message with no context,
/// entries or snapshot.
const ITEM_MIN_BYTES: usize = 8 + 8 + 4 + MESSAGE_MIN_BYTES;
/// `u8 type | u32 to | u32 from | 5 x u64 | u8 reject | u64 hint | u64 request_snapshot
/// | i64 priority | u32 0 | u32 0 | u8 0`.
const MESSAGE_MIN_BYTES: usize = 1 + 4 + 4 + 40 + 1 + 8 + 8 + 8 + 4 + 4 + 1;

/// One batch from broker `from`.
#[derive(Debug, Clone, PartialEq)]
pub struct Batch {
    pub from: u32,
    pub items: Vec<(GroupKey, Message)>,
}

pub fn encode(b: &Batch, out: &mut BytesMut) {
    out.put_u8(VERSION);
    out.put_u32_le(b.from);
    out.put_u32_le(b.items.len() as u32);
    for (k, m) in &b.items {
        out.put_u64_le((k.topic_id >> 64) as u64);
        out.put_u64_le(k.topic_id as u64);
        out.put_u32_le(k.partition);
        put_message(out, m);
    }
}

pub fn decode(buf: BytesMut) -> Result<Batch, DecodeError> {
    let mut r = Reader::new(buf);
    let v = r.u8("replication batch version")?;
    if v != VERSION {
        return Err(DecodeError::Invalid {
            what: "replication batch version",
            detail: v.to_string(),
        });
    }
    let from = r.u32("from")?;
    let n = r.count("replication batch items", ITEM_MIN_BYTES)?;
    let mut items = Vec::with_capacity(n);
    for _ in 0..n {
        let hi = r.u64("topic id")?;
        let lo = r.u64("topic id")?;
        let partition = r.u32("partition")?;
        let key = GroupKey {
            topic_id: (hi as u128) << 64 | lo as u128,
            partition,
        };
        items.push((key, get_message(&mut r)?));
    }
    r.finish()?;
    Ok(Batch { from, items })
}

#[cfg(test)]
mod tests {
    use super::*;
    use raft::eraftpb::{Entry, MessageType};

    fn sample() -> Batch {
        let mut hb = Message::default();
        hb.set_msg_type(MessageType::MsgHeartbeat);
        hb.to = 2;
        hb.from = 1;
        hb.term = 3;
        let mut app = Message::default();
        app.set_msg_type(MessageType::MsgAppend);
        app.to = 2;
        app.from = 1;
        app.set_entries(
            vec![Entry {
                term: 3,
                index: 9,
                data: bytes::Bytes::from_static(b"frame"),
                ..Default::default()
            }]
            .into(),
        );
        Batch {
            from: 1,
            items: vec![
                (
                    GroupKey {
                        topic_id: 0x0102_0304_0506_0708_090a_0b0c_0d0e_0f10,
                        partition: 0,
                    },
                    hb,
                ),
                (
                    GroupKey {
                        topic_id: 7,
                        partition: 4,
                    },
                    app,
                ),
            ],
        }
    }

    #[test]
    fn a_batch_round_trips_and_damage_is_an_error_never_a_panic() {
        let b = sample();
        let mut buf = BytesMut::new();
        encode(&b, &mut buf);
        assert_eq!(decode(buf.clone()).unwrap(), b);
        for cut in 0..buf.len() {
            assert!(decode(BytesMut::from(&buf[..cut])).is_err(), "cut at {cut}");
        }
        for i in 0..buf.len() {
            let mut d = buf.clone();
            d[i] ^= 0xff;
            let _ = decode(d);
        }
        // A lying item count allocates nothing.
        let mut lie = BytesMut::new();
        lie.put_u8(VERSION);
        lie.put_u32_le(1);
        lie.put_u32_le(u32::MAX);
        assert!(decode(lie).is_err());
    }
}
