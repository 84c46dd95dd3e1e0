//! Byte layouts of raft-rs's own structures, shared by the controller's
//! files (`controller::file_log`), its RPC frames (`controller::wire`) and
//! the replicated partitions' batches (`replica::wire`). We
//! never use raft-rs's protobuf encoding on the wire or on disk: every
//! field we carry is spelled out here with its width (little-endian).
//!
//! ```text
//! entry    u64 term | u64 index | u8 entry_type | u32 data_len | data | u32 context_len | context
//! snapshot u64 index | u64 term | u32 voters | voters x u64 | u32 data_len | data
//! message  u8 msg_type | u32 to | u32 from | u64 term | u64 log_term | u64 index | u64 commit
//!          | u64 commit_term | u8 reject | u64 reject_hint | u64 request_snapshot | i64 priority
//!          | u32 context_len | context | u32 entries | entries x entry | u8 has_snapshot | [snapshot]
//! has_snapshot 0: none; 1: `snapshot` above; 2: `snapshot` followed by the
//!          rest of its configuration (a replicated partition's snapshot
//!          names learners and joint parts):
//!          u32 learners | x u64 | u32 voters_outgoing | x u64 | u32 learners_next | x u64 | u8 auto_leave
//! ```
//! Replica ids are broker ids, u32 on the wire (raft-rs's are u64).
//!
//! Here, in the protocol leaf, so both Raft users depend on it and not on
//! each other. Pure: bytes in, structures out, and back.

use super::codec::Reader;
use super::DecodeError;
use bytes::{BufMut, BytesMut};
use protobuf::ProtobufEnum;
use raft::eraftpb::{Entry, EntryType, Message, MessageType, Snapshot};

fn invalid(what: &'static str, v: impl std::fmt::Display) -> DecodeError {
    DecodeError::Invalid {
        what,
        detail: v.to_string(),
    }
}

/// The smallest encoded entry: `u64 term | u64 index | u8 type | u32 0 | u32 0`.
const ENTRY_MIN_BYTES: usize = 25;

pub fn put_entry(b: &mut BytesMut, e: &Entry) {
    b.put_u64_le(e.term);
    b.put_u64_le(e.index);
    b.put_u8(e.get_entry_type().value() as u8);
    b.put_u32_le(e.data.len() as u32);
    b.put_slice(&e.data);
    b.put_u32_le(e.context.len() as u32);
    b.put_slice(&e.context);
}

pub fn get_entry(r: &mut Reader) -> Result<Entry, DecodeError> {
    let mut e = Entry {
        term: r.u64("entry term")?,
        index: r.u64("entry index")?,
        ..Default::default()
    };
    let t = r.u8("entry type")?;
    e.set_entry_type(EntryType::from_i32(t as i32).ok_or_else(|| invalid("entry type", t))?);
    e.data = r.blob("entry data")?.freeze();
    e.context = r.blob("entry context")?.freeze();
    Ok(e)
}

pub fn put_snapshot(b: &mut BytesMut, s: &Snapshot) {
    let meta = s.get_metadata();
    b.put_u64_le(meta.index);
    b.put_u64_le(meta.term);
    let voters = &meta.get_conf_state().voters;
    b.put_u32_le(voters.len() as u32);
    for v in voters {
        b.put_u64_le(*v);
    }
    b.put_u32_le(s.data.len() as u32);
    b.put_slice(&s.data);
}

pub fn get_snapshot(r: &mut Reader) -> Result<Snapshot, DecodeError> {
    let index = r.u64("snapshot index")?;
    let term = r.u64("snapshot term")?;
    let n = r.count("voters", 8)?;
    let mut voters = Vec::with_capacity(n);
    for _ in 0..n {
        voters.push(r.u64("voter")?);
    }
    let mut snap = Snapshot {
        data: r.blob("snapshot data")?.freeze(),
        ..Default::default()
    };
    let meta = snap.mut_metadata();
    meta.index = index;
    meta.term = term;
    meta.set_conf_state((voters, vec![]).into());
    Ok(snap)
}

pub fn put_message(b: &mut BytesMut, m: &Message) {
    b.put_u8(m.get_msg_type().value() as u8);
    assert!(
        m.to <= u32::MAX as u64 && m.from <= u32::MAX as u64,
        "replica ids are broker ids (u32)"
    );
    b.put_u32_le(m.to as u32);
    b.put_u32_le(m.from as u32);
    b.put_u64_le(m.term);
    b.put_u64_le(m.log_term);
    b.put_u64_le(m.index);
    b.put_u64_le(m.commit);
    b.put_u64_le(m.commit_term);
    b.put_u8(m.reject as u8);
    b.put_u64_le(m.reject_hint);
    b.put_u64_le(m.request_snapshot);
    b.put_i64_le(m.priority);
    b.put_u32_le(m.context.len() as u32);
    b.put_slice(&m.context);
    b.put_u32_le(m.entries.len() as u32);
    for e in m.entries.iter() {
        put_entry(b, e);
    }
    match m.snapshot.as_ref() {
        Some(s) => {
            b.put_u8(2);
            put_snapshot(b, s);
            let cs = s.get_metadata().get_conf_state();
            for list in [&cs.learners, &cs.voters_outgoing, &cs.learners_next] {
                b.put_u32_le(list.len() as u32);
                for id in list {
                    b.put_u64_le(*id);
                }
            }
            b.put_u8(cs.auto_leave as u8);
        }
        None => b.put_u8(0),
    }
}

pub fn get_message(r: &mut Reader) -> Result<Message, DecodeError> {
    let t = r.u8("message type")?;
    let mut m = Message::default();
    m.set_msg_type(MessageType::from_i32(t as i32).ok_or_else(|| invalid("message type", t))?);
    m.to = r.u32("to")? as u64;
    m.from = r.u32("from")? as u64;
    m.term = r.u64("term")?;
    m.log_term = r.u64("log term")?;
    m.index = r.u64("index")?;
    m.commit = r.u64("commit")?;
    m.commit_term = r.u64("commit term")?;
    m.reject = match r.u8("reject")? {
        0 => false,
        1 => true,
        v => return Err(invalid("reject", v)),
    };
    m.reject_hint = r.u64("reject hint")?;
    m.request_snapshot = r.u64("request snapshot")?;
    m.priority = r.i64("priority")?;
    m.context = r.blob("context")?.freeze();
    // An entry is at least 25 bytes (term, index, type, two empty blobs).
    let n = r.count("entries", ENTRY_MIN_BYTES)?;
    let mut entries = Vec::with_capacity(n);
    for _ in 0..n {
        entries.push(get_entry(r)?);
    }
    m.set_entries(entries.into());
    match r.u8("has snapshot")? {
        0 => {}
        1 => m.set_snapshot(get_snapshot(r)?),
        2 => {
            let mut s = get_snapshot(r)?;
            let mut lists: [Vec<u64>; 3] = Default::default();
            for (list, what) in lists
                .iter_mut()
                .zip(["learner", "outgoing voter", "next learner"])
            {
                let n = r.count(what, 8)?;
                for _ in 0..n {
                    list.push(r.u64(what)?);
                }
            }
            let auto_leave = match r.u8("auto leave")? {
                0 => false,
                1 => true,
                v => return Err(invalid("auto leave", v)),
            };
            let [learners, voters_outgoing, learners_next] = lists;
            let cs = s.mut_metadata().mut_conf_state();
            cs.learners = learners;
            cs.voters_outgoing = voters_outgoing;
            cs.learners_next = learners_next;
            cs.auto_leave = auto_leave;
            m.set_snapshot(s);
        }
        v => return Err(invalid("has snapshot", v)),
    }
    Ok(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn sample_message() -> Message {
        let mut m = Message::default();
        m.set_msg_type(MessageType::MsgAppend);
        m.to = 2;
        m.from = 1;
        m.term = 7;
        m.log_term = 6;
        m.index = 41;
        m.commit = 40;
        m.reject_hint = 3;
        m.context = bytes::Bytes::from_static(b"ctx");
        let e = Entry {
            term: 7,
            index: 42,
            data: bytes::Bytes::from_static(b"command"),
            ..Default::default()
        };
        m.set_entries(vec![e].into());
        let mut s = Snapshot {
            data: bytes::Bytes::from_static(b"state"),
            ..Default::default()
        };
        s.mut_metadata().index = 30;
        s.mut_metadata().term = 5;
        s.mut_metadata()
            .set_conf_state((vec![1, 2, 3], vec![]).into());
        m.set_snapshot(s);
        m
    }

    #[test]
    fn a_message_round_trips_and_damage_is_an_error_never_a_panic() {
        let m = sample_message();
        let mut b = BytesMut::new();
        put_message(&mut b, &m);
        let mut r = Reader::new(b.clone());
        assert_eq!(get_message(&mut r).unwrap(), m);
        r.finish().unwrap();
        for cut in 0..b.len() {
            assert!(get_message(&mut Reader::new(BytesMut::from(&b[..cut]))).is_err());
        }
        for i in 0..b.len() {
            let mut d = b.clone();
            d[i] ^= 0xff;
            let _ = get_message(&mut Reader::new(d));
        }
    }

    #[test]
    fn a_message_whose_last_entry_is_empty_decodes() {
        // A new leader's first entry carries no data; as the only entry of
        // the last message of a frame it was refused once (the entry
        // count bound assumed 29 bytes an entry), delaying the election's
        // commit until Raft resent it.
        let mut m = Message::default();
        m.set_msg_type(MessageType::MsgAppend);
        m.set_entries(
            vec![Entry {
                term: 2,
                index: 5,
                ..Default::default()
            }]
            .into(),
        );
        let mut b = BytesMut::new();
        put_message(&mut b, &m);
        let mut r = Reader::new(b);
        assert_eq!(get_message(&mut r).unwrap(), m);
        r.finish().unwrap();
    }
}
