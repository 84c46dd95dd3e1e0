//! The native Rust client: admin calls, a batching producer and a consumer.
//! Used by the CLI and by loadgen. Runs on tokio; the protocol codec is
//! shared with the broker ([`crate::protocol`]).

pub mod connection;
pub mod consumer;
pub mod partitioner;
pub mod producer;

pub use connection::Connection;
pub use consumer::{Consumer, ConsumerConfig, Message, StartAt};
pub use partitioner::{DefaultPartitioner, FixedPartitioner, Partitioner, RoundRobinPartitioner};
pub use producer::{Delivery, Producer, ProducerConfig};

use crate::protocol::frame::ApiKey;
use crate::protocol::messages::*;
use crate::protocol::{DecodeError, ErrorCode};
use std::sync::Arc;

#[derive(Debug, Clone, thiserror::Error)]
pub enum ClientError {
    #[error("cannot connect to {addr}: {source}")]
    Connect {
        addr: String,
        #[source]
        source: Arc<std::io::Error>,
    },
    #[error("I/O error: {0}")]
    Io(Arc<std::io::Error>),
    #[error("connection closed by the broker")]
    Closed,
    #[error("protocol error: {0}")]
    Protocol(String),
    #[error("broker error {code:?}: {message}")]
    Broker { code: ErrorCode, message: String },
    #[error("unknown topic '{0}'")]
    UnknownTopic(String),
    #[error("{0}")]
    Invalid(String),
}

impl From<DecodeError> for ClientError {
    fn from(e: DecodeError) -> Self {
        ClientError::Protocol(e.to_string())
    }
}

impl From<std::io::Error> for ClientError {
    fn from(e: std::io::Error) -> Self {
        ClientError::Io(Arc::new(e))
    }
}

impl ClientError {
    /// Whether a retry may succeed: nothing listens yet, or the socket went
    /// away before answering (a broker that is starting or just died).
    pub fn is_transient_connect(&self) -> bool {
        use std::io::ErrorKind::*;
        let io = match self {
            ClientError::Connect { source, .. } | ClientError::Io(source) => source,
            ClientError::Closed => return true,
            _ => return false,
        };
        matches!(
            io.kind(),
            ConnectionRefused | ConnectionReset | ConnectionAborted | BrokenPipe | UnexpectedEof
        )
    }

    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            ClientError::Broker { code, .. } => Some(*code),
            _ => None,
        }
    }
}

/// A connection plus typed admin and lookup calls.
#[derive(Clone)]
pub struct Client {
    pub conn: Arc<Connection>,
}

impl Client {
    pub async fn connect(addr: &str) -> Result<Client, ClientError> {
        let conn = Connection::connect(addr).await.map_err(|e| match e {
            ClientError::Connect { addr, source } => ClientError::Connect { addr, source },
            other => other,
        })?;
        Ok(Client {
            conn: Arc::new(conn),
        })
    }

    /// Connect to a broker that may still be starting: retry while the
    /// connection is refused, reset or closed before a first round trip
    /// (Metadata) succeeds, for at most `timeout`. A broker restarted after
    /// `kill -9` may take a moment to recover and bind (its predecessor's
    /// socket lingers briefly), and a script that starts a broker in the
    /// background and runs a command right after must not fail for that.
    /// `on_wait` is called once, when the first attempt fails.
    pub async fn connect_retrying(
        addr: &str,
        timeout: std::time::Duration,
        on_wait: impl FnOnce(&ClientError),
    ) -> Result<Client, ClientError> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut on_wait = Some(on_wait);
        loop {
            let attempt = async {
                let c = Client::connect(addr).await?;
                c.metadata(&[]).await?;
                Ok::<Client, ClientError>(c)
            };
            let err = match tokio::time::timeout_at(deadline, attempt).await {
                Ok(Ok(c)) => return Ok(c),
                Ok(Err(e)) if e.is_transient_connect() => e,
                Ok(Err(e)) => return Err(e),
                Err(_) => {
                    return Err(ClientError::Connect {
                        addr: addr.to_string(),
                        source: Arc::new(std::io::ErrorKind::TimedOut.into()),
                    })
                }
            };
            if tokio::time::Instant::now() >= deadline {
                return Err(err);
            }
            if let Some(f) = on_wait.take() {
                f(&err);
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    }

    pub async fn metadata(&self, topics: &[&str]) -> Result<MetadataResponse, ClientError> {
        let req = MetadataRequest {
            topics: topics.iter().map(|s| s.to_string()).collect(),
        };
        let mut r = self.conn.call(ApiKey::Metadata, |b| req.encode(b)).await?;
        let resp = MetadataResponse::decode(&mut r)?;
        r.finish()?;
        Ok(resp)
    }

    /// Metadata of one topic; `UnknownTopic` if it does not exist.
    pub async fn topic(&self, name: &str) -> Result<TopicMetadata, ClientError> {
        let m = self.metadata(&[name]).await?;
        match m.topics.into_iter().next() {
            Some(t) if t.error == ErrorCode::None => Ok(t),
            _ => Err(ClientError::UnknownTopic(name.to_string())),
        }
    }

    pub async fn create_topic(
        &self,
        name: &str,
        partitions: u32,
        config: &[(String, String)],
    ) -> Result<(), ClientError> {
        let req = CreateTopicRequest {
            name: name.to_string(),
            partitions,
            config: config.to_vec(),
        };
        self.conn
            .call(ApiKey::CreateTopic, |b| req.encode(b))
            .await?
            .finish()?;
        Ok(())
    }

    /// Create the topic unless it exists (with any partition count).
    pub async fn ensure_topic(
        &self,
        name: &str,
        partitions: u32,
        config: &[(String, String)],
    ) -> Result<(), ClientError> {
        match self.create_topic(name, partitions, config).await {
            Err(ClientError::Broker {
                code: ErrorCode::TopicExists,
                ..
            }) => Ok(()),
            other => other,
        }
    }

    pub async fn delete_topic(&self, name: &str) -> Result<(), ClientError> {
        let req = TopicRequest {
            name: name.to_string(),
            partitions: 0,
        };
        self.conn
            .call(ApiKey::DeleteTopic, |b| req.encode(b))
            .await?
            .finish()?;
        Ok(())
    }

    pub async fn create_partitions(&self, name: &str, total: u32) -> Result<(), ClientError> {
        let req = TopicRequest {
            name: name.to_string(),
            partitions: total,
        };
        self.conn
            .call(ApiKey::CreatePartitions, |b| req.encode(b))
            .await?
            .finish()?;
        Ok(())
    }

    /// Offset for `timestamp` (or [`EARLIEST`] / [`LATEST`]).
    pub async fn list_offset(
        &self,
        topic: &str,
        partition: u32,
        timestamp: i64,
    ) -> Result<u64, ClientError> {
        let req = ListOffsetsRequest {
            topics: vec![(topic.to_string(), vec![(partition, timestamp)])],
        };
        let mut r = self
            .conn
            .call(ApiKey::ListOffsets, |b| req.encode(b))
            .await?;
        let resp = ListOffsetsResponse::decode(&mut r)?;
        let p = resp
            .topics
            .into_iter()
            .flat_map(|(_, ps)| ps)
            .next()
            .ok_or_else(|| ClientError::Protocol("empty ListOffsets response".into()))?;
        if p.result.error != ErrorCode::None {
            return Err(ClientError::Broker {
                code: p.result.error,
                message: p.result.message,
            });
        }
        Ok(p.offset)
    }

    /// Store a consumer group's progress: (topic, partition, next offset).
    /// Commits are shared with Kafka consumer groups of the same name.
    pub async fn commit_offsets(
        &self,
        group: &str,
        offsets: &[(&str, u32, u64)],
    ) -> Result<(), ClientError> {
        let mut topics: Vec<(String, Vec<(u32, u64)>)> = Vec::new();
        for (t, p, o) in offsets {
            match topics.iter_mut().find(|(n, _)| n == t) {
                Some((_, ps)) => ps.push((*p, *o)),
                None => topics.push((t.to_string(), vec![(*p, *o)])),
            }
        }
        let req = OffsetCommitRequest {
            group: group.to_string(),
            topics,
        };
        let mut r = self
            .conn
            .call(ApiKey::OffsetCommit, |b| req.encode(b))
            .await?;
        let resp = OffsetsResponse::decode(&mut r)?;
        for (_, ps) in resp.topics {
            for (res, _) in ps {
                if res.error != ErrorCode::None {
                    return Err(ClientError::Broker {
                        code: res.error,
                        message: res.message,
                    });
                }
            }
        }
        Ok(())
    }

    /// A group's committed offsets for `partitions` of `topic` (None: nothing committed).
    pub async fn committed_offsets(
        &self,
        group: &str,
        topic: &str,
        partitions: &[u32],
    ) -> Result<Vec<Option<u64>>, ClientError> {
        let req = OffsetFetchRequest {
            group: group.to_string(),
            topics: vec![(topic.to_string(), partitions.to_vec())],
        };
        let mut r = self
            .conn
            .call(ApiKey::OffsetFetch, |b| req.encode(b))
            .await?;
        let resp = OffsetsResponse::decode(&mut r)?;
        let mut out = Vec::with_capacity(partitions.len());
        for (_, ps) in resp.topics {
            for (res, off) in ps {
                if res.error != ErrorCode::None {
                    return Err(ClientError::Broker {
                        code: res.error,
                        message: res.message,
                    });
                }
                out.push((off >= 0).then_some(off as u64));
            }
        }
        Ok(out)
    }

    pub async fn fetch(&self, req: &FetchRequest) -> Result<FetchResponse, ClientError> {
        let mut r = self.conn.call(ApiKey::Fetch, |b| req.encode(b)).await?;
        let resp = FetchResponse::decode(&mut r)?;
        r.finish()?;
        Ok(resp)
    }
}
