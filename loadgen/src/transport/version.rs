//! What a broker says about itself, recorded with every report so that two
//! reports can be told apart by what they measured.
//!
//! - native: the Metadata answer's `broker_version` and shard count;
//! - kafka: the ApiVersions answer (v3: every API's version range, the
//!   finalized features), then Metadata (cluster id, controller, brokers).
//!   Kafka brokers do not name their software version on the wire; the API
//!   ranges identify a release (e.g. Produce v11, Fetch v17 is Kafka 3.7+).
//!
//! The Kafka side speaks the wire protocol directly over a blocking socket
//! (encoded and decoded with the vendored `kafka-protocol` crate), once per
//! target before the sweep starts: librdkafka keeps both answers private.

use super::{Protocol, Target, TransportError};
use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{
    ApiKey, ApiVersionsRequest, ApiVersionsResponse, MetadataRequest, MetadataResponse,
    RequestHeader, ResponseHeader,
};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use serde::Serialize;
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// The report's record of one target's broker.
#[derive(Debug, Clone, Serialize, Default)]
pub struct BrokerVersion {
    /// One line for tables: "shardlog 0.1.0 (2 shards)" or
    /// "Kafka API: 23 APIs, Produce v3-11, Fetch v4-16, cluster abc".
    pub summary: String,
    /// native: the broker's own version string.
    pub version: Option<String>,
    pub shards: Option<u32>,
    /// kafka: "ApiName" -> [min, max] from ApiVersions.
    pub api_versions: BTreeMap<String, [i16; 2]>,
    pub finalized_features: BTreeMap<String, i16>,
    pub cluster_id: Option<String>,
    pub controller_id: Option<i32>,
    pub brokers: Vec<String>,
}

/// Ask the broker; errors are returned (the sweep records them as the
/// summary rather than failing).
pub async fn probe(target: &Target) -> Result<BrokerVersion, TransportError> {
    match target.protocol {
        Protocol::Native => {
            let c = shardlog::client::Client::connect(&target.addr).await?;
            let m = c.metadata(&[]).await?;
            Ok(BrokerVersion {
                summary: format!("shardlog {} ({} shards)", m.broker_version, m.shards),
                version: Some(m.broker_version),
                shards: Some(m.shards),
                ..Default::default()
            })
        }
        Protocol::Kafka => {
            let addr = target
                .addr
                .split(',')
                .next()
                .unwrap_or_default()
                .to_string();
            tokio::task::spawn_blocking(move || probe_kafka(&addr))
                .await
                .map_err(|e| TransportError::Invalid(format!("version probe: {e}")))?
        }
    }
}

struct Conn {
    s: TcpStream,
    corr: i32,
}

fn inv(what: &str) -> impl Fn(String) -> TransportError + '_ {
    move |e| TransportError::Invalid(format!("{what}: {e}"))
}

impl Conn {
    fn call<R: Encodable, T: Decodable>(
        &mut self,
        key: ApiKey,
        v: i16,
        req: &R,
    ) -> Result<T, TransportError> {
        let what = format!("{key:?} v{v}");
        let err = inv(&what);
        self.corr += 1;
        let h = RequestHeader::default()
            .with_request_api_key(key as i16)
            .with_request_api_version(v)
            .with_correlation_id(self.corr)
            .with_client_id(Some(StrBytes::from_static_str("loadgen")));
        let mut body = BytesMut::new();
        h.encode(&mut body, key.request_header_version(v))
            .map_err(|e| err(e.to_string()))?;
        req.encode(&mut body, v).map_err(|e| err(e.to_string()))?;
        let mut f = Vec::with_capacity(4 + body.len());
        f.put_i32(body.len() as i32);
        f.extend_from_slice(&body);
        self.s.write_all(&f).map_err(|e| err(e.to_string()))?;
        let mut len = [0u8; 4];
        self.s
            .read_exact(&mut len)
            .map_err(|e| err(e.to_string()))?;
        let len = i32::from_be_bytes(len);
        // A version answer is a few KiB; refuse to allocate for a bogus length.
        if !(0..=(4 << 20)).contains(&len) {
            return Err(err(format!("response length {len}")));
        }
        let mut b = vec![0u8; len as usize];
        self.s.read_exact(&mut b).map_err(|e| err(e.to_string()))?;
        let mut b = Bytes::from(b);
        let rh = ResponseHeader::decode(&mut b, key.response_header_version(v))
            .map_err(|e| err(e.to_string()))?;
        if rh.correlation_id != self.corr {
            return Err(err(format!(
                "correlation id {} (expected {})",
                rh.correlation_id, self.corr
            )));
        }
        let r = T::decode(&mut b, v).map_err(|e| err(e.to_string()))?;
        if b.has_remaining() {
            return Err(err(format!("{} trailing bytes", b.remaining())));
        }
        Ok(r)
    }
}

fn probe_kafka(addr: &str) -> Result<BrokerVersion, TransportError> {
    let s = TcpStream::connect(addr).map_err(|e| inv(addr)(e.to_string()))?;
    let t = Some(Duration::from_secs(10));
    let _ = s.set_read_timeout(t);
    let _ = s.set_write_timeout(t);
    let mut c = Conn { s, corr: 0 };
    let av: ApiVersionsResponse = c.call(ApiKey::ApiVersions, 3, &ApiVersionsRequest::default())?;
    if av.error_code != 0 {
        return Err(inv("ApiVersions")(format!("error code {}", av.error_code)));
    }
    let mut v = BrokerVersion::default();
    for k in &av.api_keys {
        let name = ApiKey::try_from(k.api_key)
            .map(|a| format!("{a:?}"))
            .unwrap_or_else(|_| format!("api{}", k.api_key));
        v.api_versions.insert(name, [k.min_version, k.max_version]);
    }
    for f in &av.finalized_features {
        v.finalized_features
            .insert(f.name.to_string(), f.max_version_level);
    }
    let range = |n: &str| {
        v.api_versions
            .get(n)
            .map(|[a, b]| format!("{n} v{a}-{b}"))
            .unwrap_or_else(|| format!("no {n}"))
    };
    let mut summary = format!(
        "Kafka API: {} APIs, {}, {}",
        v.api_versions.len(),
        range("Produce"),
        range("Fetch")
    );
    // Metadata without topics: cluster id, controller and brokers.
    if let Some(&[lo, hi]) = v.api_versions.get("Metadata") {
        let mv = hi.min(12);
        if mv >= lo && mv >= 1 {
            let req = MetadataRequest::default().with_topics(Some(Vec::new()));
            let m: MetadataResponse = c.call(ApiKey::Metadata, mv, &req)?;
            v.cluster_id = m.cluster_id.map(|c| c.to_string());
            v.controller_id = Some(m.controller_id.0);
            v.brokers = m
                .brokers
                .iter()
                .map(|b| format!("{}@{}:{}", b.node_id.0, b.host, b.port))
                .collect();
            summary.push_str(&format!(
                ", cluster {}, {} broker(s)",
                v.cluster_id.as_deref().unwrap_or("-"),
                v.brokers.len()
            ));
        }
    }
    v.summary = summary;
    Ok(v)
}
