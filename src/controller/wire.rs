//! The broker-to-broker RPC protocol (the `--rpc-listen` port), sans-IO:
//! frame layout, requests and responses. docs/replication.md repeats it.
//!
//! ```text
//! frame      u32 length (bytes after this field) | u16 api | u32 correlation_id | body
//!            length is checked against the listener's limit before anything is
//!            allocated (larger: refused, connection closed)
//! api 1      RaftMessages  u32 count | count x message (raft_codec)      one-way: no response
//! api 2      Propose       u32 len | envelope (command layout)           -> api 0x8002
//! api 3      GetState      (empty)                                       -> api 0x8003
//! api 4      Heartbeat     u32 broker | u64 incarnation                  -> api 0x8004
//! 0x8002     u8 status: 0 applied (u8 duplicate | outcome), 1 not leader (u32 leader hint,
//!            0 = unknown), 2 timed out (may or may not commit later: retry, the
//!            session makes a retry safe), 3 invalid request
//! 0x8003     u32 controller leader (0 = unknown) | u64 term | u64 commit index
//!            | u32 len | controller state (snapshot layout, state.rs)
//! 0x8004     u8 status: 0 recorded by the controller leader, 1 not the leader
//!            | u32 leader hint (0 = unknown)
//! ```
//! All integers little-endian. A response carries its request's
//! correlation id. Hostile bytes give a [`DecodeError`], never a panic.

use super::command::Envelope;
use super::state::{ApplyResult, ControllerState, Outcome};
use crate::protocol::codec::Reader;
use crate::protocol::raft_codec::{get_message, put_message};
use crate::protocol::DecodeError;
use bytes::{BufMut, BytesMut};
use raft::eraftpb::Message;

/// Bytes of `length | api | correlation_id`.
pub const HEADER_BYTES: usize = 10;
pub const API_RAFT: u16 = 1;
pub const API_PROPOSE: u16 = 2;
pub const API_GET_STATE: u16 = 3;
pub const API_HEARTBEAT: u16 = 4;
/// Partition groups' Raft messages between brokers (`replica::wire`).
pub const API_REPLICATE: u16 = 5;
pub const RESPONSE_BIT: u16 = 0x8000;

#[derive(Debug, Clone, PartialEq)]
pub enum Request {
    Raft(Vec<Message>),
    Propose(Envelope),
    GetState,
    /// A broker's liveness beat, to the controller leader.
    Heartbeat {
        broker: u32,
        incarnation: u64,
    },
    /// Partition groups' messages from one broker (no response).
    Replicate(crate::replica::wire::Batch),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProposeReply {
    Applied(ApplyResult),
    NotLeader(Option<u32>),
    TimedOut,
    Invalid,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Response {
    Proposed(ProposeReply),
    State {
        leader: Option<u32>,
        term: u64,
        commit: u64,
        state: ControllerState,
    },
    /// Ok(()) recorded; Err(hint) not the leader.
    Heartbeat(Result<(), Option<u32>>),
}

/// The fixed part of a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Body bytes that follow the header.
    pub body_len: usize,
    pub api: u16,
    pub correlation_id: u32,
}

/// Read a frame header; refuses a frame longer than `max_frame_bytes`
/// before the caller allocates its body.
pub fn read_header(h: &[u8; HEADER_BYTES], max_frame_bytes: usize) -> Result<Header, DecodeError> {
    let length = u32::from_le_bytes(h[0..4].try_into().expect("4 bytes")) as usize;
    if length < HEADER_BYTES - 4 {
        return Err(DecodeError::Invalid {
            what: "rpc frame length",
            detail: format!("{length}, shorter than its header"),
        });
    }
    if length > max_frame_bytes {
        return Err(DecodeError::TooMany {
            what: "rpc frame bytes",
            count: length,
            max: max_frame_bytes,
        });
    }
    Ok(Header {
        body_len: length - (HEADER_BYTES - 4),
        api: u16::from_le_bytes(h[4..6].try_into().expect("2 bytes")),
        correlation_id: u32::from_le_bytes(h[6..10].try_into().expect("4 bytes")),
    })
}

fn frame(api: u16, correlation_id: u32, body: impl FnOnce(&mut BytesMut)) -> BytesMut {
    let mut b = BytesMut::with_capacity(64);
    b.put_u32_le(0);
    b.put_u16_le(api);
    b.put_u32_le(correlation_id);
    body(&mut b);
    let len = (b.len() - 4) as u32;
    b[0..4].copy_from_slice(&len.to_le_bytes());
    b
}

pub fn encode_request(correlation_id: u32, req: &Request) -> BytesMut {
    match req {
        Request::Raft(msgs) => frame(API_RAFT, correlation_id, |b| {
            b.put_u32_le(msgs.len() as u32);
            for m in msgs {
                put_message(b, m);
            }
        }),
        Request::Propose(env) => frame(API_PROPOSE, correlation_id, |b| {
            let e = env.encode();
            b.put_u32_le(e.len() as u32);
            b.put_slice(&e);
        }),
        Request::GetState => frame(API_GET_STATE, correlation_id, |_| {}),
        Request::Heartbeat {
            broker,
            incarnation,
        } => frame(API_HEARTBEAT, correlation_id, |b| {
            b.put_u32_le(*broker);
            b.put_u64_le(*incarnation);
        }),
        Request::Replicate(batch) => frame(API_REPLICATE, correlation_id, |b| {
            crate::replica::wire::encode(batch, b)
        }),
    }
}

pub fn decode_request(api: u16, body: BytesMut) -> Result<Request, DecodeError> {
    if api == API_REPLICATE {
        return Ok(Request::Replicate(crate::replica::wire::decode(body)?));
    }
    let mut r = Reader::new(body);
    let req = match api {
        API_RAFT => {
            // A message without context, entries or snapshot is 83 bytes.
            let n = r.count("raft messages", 83)?;
            let mut msgs = Vec::with_capacity(n);
            for _ in 0..n {
                msgs.push(get_message(&mut r)?);
            }
            Request::Raft(msgs)
        }
        API_PROPOSE => Request::Propose(Envelope::decode(&r.blob("envelope")?)?),
        API_GET_STATE => Request::GetState,
        API_HEARTBEAT => Request::Heartbeat {
            broker: r.u32("broker")?,
            incarnation: r.u64("incarnation")?,
        },
        other => return Err(DecodeError::UnknownApi(other)),
    };
    r.finish()?;
    Ok(req)
}

pub fn encode_response(correlation_id: u32, resp: &Response) -> BytesMut {
    match resp {
        Response::Proposed(p) => frame(API_PROPOSE | RESPONSE_BIT, correlation_id, |b| match p {
            ProposeReply::Applied(a) => {
                b.put_u8(0);
                b.put_u8(a.duplicate as u8);
                a.outcome.encode_into(b);
            }
            ProposeReply::NotLeader(l) => {
                b.put_u8(1);
                b.put_u32_le(l.unwrap_or(0));
            }
            ProposeReply::TimedOut => b.put_u8(2),
            ProposeReply::Invalid => b.put_u8(3),
        }),
        Response::State {
            leader,
            term,
            commit,
            state,
        } => frame(API_GET_STATE | RESPONSE_BIT, correlation_id, |b| {
            b.put_u32_le(leader.unwrap_or(0));
            b.put_u64_le(*term);
            b.put_u64_le(*commit);
            let s = state.encode();
            b.put_u32_le(s.len() as u32);
            b.put_slice(&s);
        }),
        Response::Heartbeat(r) => {
            frame(API_HEARTBEAT | RESPONSE_BIT, correlation_id, |b| match r {
                Ok(()) => b.put_u8(0),
                Err(hint) => {
                    b.put_u8(1);
                    b.put_u32_le(hint.unwrap_or(0));
                }
            })
        }
    }
}

pub fn decode_response(api: u16, body: BytesMut) -> Result<Response, DecodeError> {
    let mut r = Reader::new(body);
    let resp = match api {
        a if a == API_PROPOSE | RESPONSE_BIT => Response::Proposed(match r.u8("status")? {
            0 => {
                let duplicate = r.u8("duplicate")? != 0;
                ProposeReply::Applied(ApplyResult {
                    duplicate,
                    outcome: Outcome::decode_from(&mut r)?,
                })
            }
            1 => ProposeReply::NotLeader(match r.u32("leader")? {
                0 => None,
                l => Some(l),
            }),
            2 => ProposeReply::TimedOut,
            3 => ProposeReply::Invalid,
            s => {
                return Err(DecodeError::Invalid {
                    what: "propose status",
                    detail: s.to_string(),
                })
            }
        }),
        a if a == API_GET_STATE | RESPONSE_BIT => Response::State {
            leader: match r.u32("leader")? {
                0 => None,
                l => Some(l),
            },
            term: r.u64("term")?,
            commit: r.u64("commit")?,
            state: ControllerState::decode(&r.blob("state")?)?,
        },
        a if a == API_HEARTBEAT | RESPONSE_BIT => Response::Heartbeat(match r.u8("status")? {
            0 => Ok(()),
            1 => Err(match r.u32("leader")? {
                0 => None,
                l => Some(l),
            }),
            s => {
                return Err(DecodeError::Invalid {
                    what: "heartbeat status",
                    detail: s.to_string(),
                })
            }
        }),
        other => return Err(DecodeError::UnknownApi(other)),
    };
    r.finish()?;
    Ok(resp)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::command::Command;

    fn split(frame: &BytesMut) -> (Header, BytesMut) {
        let h = read_header(frame[..HEADER_BYTES].try_into().unwrap(), 1 << 20).unwrap();
        assert_eq!(h.body_len, frame.len() - HEADER_BYTES);
        (h, BytesMut::from(&frame[HEADER_BYTES..]))
    }

    #[test]
    fn requests_and_responses_round_trip_and_damage_never_panics() {
        let m = Message {
            to: 3,
            from: 1,
            term: 4,
            ..Default::default()
        };
        let reqs = [
            Request::Raft(vec![m.clone(), m]),
            Request::Propose(Envelope {
                origin: 2,
                seq: 5,
                command: Command::DeleteTopic { name: "x".into() },
            }),
            Request::GetState,
            Request::Heartbeat {
                broker: 3,
                incarnation: 99,
            },
        ];
        for (i, req) in reqs.iter().enumerate() {
            let f = encode_request(i as u32, req);
            let (h, body) = split(&f);
            assert_eq!(h.correlation_id, i as u32);
            assert_eq!(&decode_request(h.api, body.clone()).unwrap(), req);
            for cut in 0..body.len() {
                assert!(decode_request(h.api, BytesMut::from(&body[..cut])).is_err());
            }
            for j in 0..body.len() {
                let mut d = body.clone();
                d[j] ^= 0xa5;
                let _ = decode_request(h.api, d);
            }
        }
        let resps = [
            Response::Proposed(ProposeReply::Applied(ApplyResult {
                outcome: Outcome::ProducerIds { first: 9, count: 2 },
                duplicate: true,
            })),
            Response::Proposed(ProposeReply::NotLeader(Some(3))),
            Response::Proposed(ProposeReply::NotLeader(None)),
            Response::Proposed(ProposeReply::TimedOut),
            Response::Heartbeat(Ok(())),
            Response::Heartbeat(Err(Some(2))),
            Response::State {
                leader: Some(2),
                term: 5,
                commit: 17,
                state: ControllerState::default(),
            },
        ];
        for resp in resps {
            let (h, body) = split(&encode_response(7, &resp));
            assert_eq!(decode_response(h.api, body).unwrap(), resp);
        }
    }

    #[test]
    fn a_frame_over_the_limit_or_under_its_header_is_refused_before_its_body() {
        let mut h = [0u8; HEADER_BYTES];
        h[0..4].copy_from_slice(&(2u32 << 20).to_le_bytes());
        assert!(matches!(
            read_header(&h, 1 << 20),
            Err(DecodeError::TooMany { .. })
        ));
        h[0..4].copy_from_slice(&3u32.to_le_bytes());
        assert!(read_header(&h, 1 << 20).is_err());
        assert!(decode_request(99, BytesMut::new()).is_err());
    }
}
