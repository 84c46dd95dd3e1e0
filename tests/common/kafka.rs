//! A minimal Kafka client for tests that speak the wire protocol directly:
//! requests encoded and responses decoded with the `kafka-protocol` crate in
//! the client role, over a plain blocking socket.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use kafka_protocol::records::{
    Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
    NO_PARTITION_LEADER_EPOCH, NO_PRODUCER_EPOCH, NO_PRODUCER_ID, NO_SEQUENCE,
};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

pub fn s(x: &str) -> StrBytes {
    StrBytes::from_string(x.to_string())
}

pub fn tn(x: &str) -> TopicName {
    TopicName(s(x))
}

/// An honest Kafka v2 batch (uncompressed, no producer id) of these values,
/// without keys; record i has timestamp 1,700,000,000,000 + i.
pub fn plain_batch(values: impl IntoIterator<Item = Bytes>) -> Bytes {
    let records: Vec<Record> = values
        .into_iter()
        .enumerate()
        .map(|(i, value)| Record {
            transactional: false,
            control: false,
            partition_leader_epoch: NO_PARTITION_LEADER_EPOCH,
            delete_horizon: false,
            producer_id: NO_PRODUCER_ID,
            producer_epoch: NO_PRODUCER_EPOCH,
            timestamp_type: TimestampType::Creation,
            offset: i as i64,
            sequence: NO_SEQUENCE,
            timestamp: 1_700_000_000_000 + i as i64,
            key: None,
            value: Some(value),
            headers: Default::default(),
        })
        .collect();
    encode_batch(&records)
}

/// These records as one uncompressed Kafka v2 batch.
pub fn encode_batch(records: &[Record]) -> Bytes {
    let mut buf = BytesMut::new();
    RecordBatchEncoder::encode(
        &mut buf,
        records,
        &RecordEncodeOptions {
            version: 2,
            compression: Compression::None,
        },
    )
    .unwrap();
    buf.freeze()
}

/// One request, length prefix included, ready to write.
pub fn framed<R: Encodable>(key: ApiKey, v: i16, correlation_id: i32, req: &R) -> Vec<u8> {
    let h = RequestHeader::default()
        .with_request_api_key(key as i16)
        .with_request_api_version(v)
        .with_correlation_id(correlation_id)
        .with_client_id(Some(s("shardlog-test")));
    let mut body = BytesMut::new();
    h.encode(&mut body, key.request_header_version(v)).unwrap();
    req.encode(&mut body, v)
        .unwrap_or_else(|e| panic!("{key:?} v{v} request: {e}"));
    let mut f = Vec::with_capacity(4 + body.len());
    f.put_i32(body.len() as i32);
    f.extend_from_slice(&body);
    f
}

pub struct Conn {
    pub s: TcpStream,
    pub corr: i32,
}

impl Conn {
    pub fn new(addr: &str) -> Conn {
        let s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        Conn { s, corr: 0 }
    }

    pub fn send<R: Encodable>(&mut self, key: ApiKey, v: i16, req: &R) -> i32 {
        self.corr += 1;
        let f = framed(key, v, self.corr, req);
        self.s.write_all(&f).unwrap();
        self.corr
    }

    /// Send a request body (header included) with its length prefix.
    pub fn send_raw(&mut self, body: &[u8]) {
        let mut f = Vec::with_capacity(4 + body.len());
        f.put_i32(body.len() as i32);
        f.extend_from_slice(body);
        self.s.write_all(&f).unwrap();
    }

    /// Read one response frame; None when the broker closed the connection.
    pub fn read_frame(&mut self) -> Option<Bytes> {
        let mut len = [0u8; 4];
        if self.s.read_exact(&mut len).is_err() {
            return None;
        }
        let mut b = vec![0u8; i32::from_be_bytes(len) as usize];
        self.s.read_exact(&mut b).ok()?;
        Some(Bytes::from(b))
    }

    pub fn recv<T: Decodable>(&mut self, key: ApiKey, v: i16, corr: i32) -> T {
        let mut b = self
            .read_frame()
            .unwrap_or_else(|| panic!("{key:?} v{v}: connection closed"));
        let h = ResponseHeader::decode(&mut b, key.response_header_version(v)).unwrap();
        assert_eq!(h.correlation_id, corr, "{key:?} v{v}: responses in order");
        let r = T::decode(&mut b, v).unwrap_or_else(|e| panic!("{key:?} v{v} response: {e}"));
        assert!(!b.has_remaining(), "{key:?} v{v}: trailing response bytes");
        r
    }

    pub fn call<R: Encodable, T: Decodable>(&mut self, key: ApiKey, v: i16, req: &R) -> T {
        let c = self.send(key, v, req);
        self.recv(key, v, c)
    }

    pub fn closed(&mut self) -> bool {
        self.read_frame().is_none()
    }
}

/// ListOffsets v7 of partition 0: `ts` -2 earliest, -1 latest.
pub fn list_offset(c: &mut Conn, topic: &str, ts: i64) -> (i16, i64) {
    let req = ListOffsetsRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_topics(vec![list_offsets_request::ListOffsetsTopic::default()
            .with_name(tn(topic))
            .with_partitions(vec![
                list_offsets_request::ListOffsetsPartition::default()
                    .with_partition_index(0)
                    .with_timestamp(ts),
            ])]);
    let r: ListOffsetsResponse = c.call(ApiKey::ListOffsets, 7, &req);
    let p = &r.topics[0].partitions[0];
    (p.error_code, p.offset)
}

/// DeleteRecords (`v`) of one partition below `offset`: (error code,
/// low watermark).
pub fn delete_records(
    c: &mut Conn,
    v: i16,
    topic: &str,
    partition: i32,
    offset: i64,
) -> (i16, i64) {
    let req = DeleteRecordsRequest::default()
        .with_timeout_ms(10_000)
        .with_topics(vec![delete_records_request::DeleteRecordsTopic::default()
            .with_name(tn(topic))
            .with_partitions(vec![
                delete_records_request::DeleteRecordsPartition::default()
                    .with_partition_index(partition)
                    .with_offset(offset),
            ])]);
    let r: DeleteRecordsResponse = c.call(ApiKey::DeleteRecords, v, &req);
    let p = &r.topics[0].partitions[0];
    (p.error_code, p.low_watermark)
}
