//! The topics a consumer group's members subscribe to, read from their
//! JoinGroup metadata (Kafka's ConsumerProtocolSubscription, for groups of
//! protocol type "consumer"). OffsetDelete refuses to delete the offsets of
//! a topic in this set while the group has members, as Kafka does.

use bytes::{Buf, Bytes};
use kafka_protocol::messages::ConsumerProtocolSubscription;
use kafka_protocol::protocol::{Decodable, Message};
use std::collections::BTreeSet;

/// Kafka's protocol type for consumer groups.
pub const CONSUMER_PROTOCOL_TYPE: &str = "consumer";

/// The topics one member's subscription metadata names; empty if it does
/// not decode (Kafka treats an undecodable subscription as none).
pub fn topics_of(metadata: &Bytes) -> BTreeSet<String> {
    let mut b = metadata.clone();
    if b.remaining() < 2 {
        return BTreeSet::new();
    }
    // A newer version than we know decodes as our newest (Kafka's rule:
    // later versions only add fields at the end).
    let version = b.get_i16().min(ConsumerProtocolSubscription::VERSIONS.max);
    match ConsumerProtocolSubscription::decode(&mut b, version) {
        Ok(s) => s.topics.iter().map(|t| t.to_string()).collect(),
        Err(_) => BTreeSet::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::{BufMut, BytesMut};
    use kafka_protocol::protocol::{Encodable, StrBytes};

    #[test]
    fn reads_the_topics_of_a_subscription() {
        let s = ConsumerProtocolSubscription::default().with_topics(vec![
            StrBytes::from_static_str("a"),
            StrBytes::from_static_str("b"),
        ]);
        let mut buf = BytesMut::new();
        buf.put_i16(1);
        s.encode(&mut buf, 1).unwrap();
        let got = topics_of(&buf.freeze());
        assert_eq!(got, BTreeSet::from(["a".to_string(), "b".to_string()]));
        assert!(topics_of(&Bytes::from_static(b"\x00")).is_empty());
        assert!(topics_of(&Bytes::from_static(b"\x00\x01\xff\xff\xff")).is_empty());
    }
}
