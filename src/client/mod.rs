//! The native Rust client: admin calls, a batching producer and a consumer.
//! Used by the CLI and by loadgen. Runs on tokio; the protocol codec is
//! shared with the broker ([`crate::protocol`]).

pub mod connection;
pub mod consumer;
pub mod partitioner;
pub mod producer;
pub mod read_buffer;
pub mod routes;

pub use connection::Connection;
pub use consumer::{Consumer, ConsumerConfig, Message, StartAt};
pub use partitioner::{DefaultPartitioner, FixedPartitioner, Partitioner, RoundRobinPartitioner};
pub use producer::{Delivery, Producer, ProducerConfig};

use crate::protocol::frame::ApiKey;
use crate::protocol::messages::*;
use crate::protocol::{DecodeError, ErrorCode, API_VERSION};
use routes::Routes;
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
    #[error("no answer to {api:?} from {addr} within {after:?}; the connection was closed")]
    Timeout {
        api: crate::protocol::frame::ApiKey,
        addr: std::net::SocketAddr,
        after: std::time::Duration,
    },
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
            ConnectionRefused
                | ConnectionReset
                | ConnectionAborted
                | BrokenPipe
                | UnexpectedEof
                // `peer_addr()` of a socket the peer reset right after the
                // handshake (a dying broker's listener): ENOTCONN.
                | NotConnected
        )
    }

    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            ClientError::Broker { code, .. } => Some(*code),
            _ => None,
        }
    }
}

/// Typed admin and lookup calls over a bootstrap connection, with each
/// partition's requests routed to its leader ([`routes`]). Cheap to clone;
/// clones share connections and the routing table.
#[derive(Clone)]
pub struct Client {
    routes: Arc<Routes>,
}

impl Client {
    /// Connect to `addr`, any broker of the cluster (or the single node).
    pub async fn connect(addr: &str) -> Result<Client, ClientError> {
        let conn = Connection::connect(addr).await?;
        Ok(Client {
            routes: Arc::new(Routes::new(addr, conn)),
        })
    }

    /// The routing table and connections (for the producer and consumer).
    pub fn routes(&self) -> &Routes {
        &self.routes
    }

    /// The bootstrap connection (reopened if it failed).
    pub async fn bootstrap(&self) -> Result<Arc<Connection>, ClientError> {
        self.routes.bootstrap().await
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

    /// Metadata of `topics` (none: every topic), from the bootstrap broker
    /// (or, if it is gone, another known one). The answer also updates the
    /// routing table. Asks for version 1 (leaders and brokers); a broker
    /// older than that gets version 0 and is taken as a single node.
    pub async fn metadata(&self, topics: &[&str]) -> Result<MetadataResponse, ClientError> {
        let req = MetadataRequest {
            topics: topics.iter().map(|s| s.to_string()).collect(),
        };
        let conn = self.routes.any().await?;
        let mut version = METADATA_VERSION_MAX;
        let mut r = match conn
            .call_version(ApiKey::Metadata, version, |b| req.encode(b))
            .await
        {
            Err(e) if e.code() == Some(ErrorCode::UnsupportedVersion) => {
                version = 0;
                conn.call_version(ApiKey::Metadata, version, |b| req.encode(b))
                    .await?
            }
            other => other?,
        };
        let resp = MetadataResponse::decode(&mut r, version)?;
        r.finish()?;
        self.routes.learn(&resp, &conn);
        Ok(resp)
    }

    /// Refresh the routing table for `topics` after a request met the wrong
    /// broker (or a dead one), unless another task refreshed since `seen`
    /// ([`Routes::refresh_count`]).
    pub async fn refresh_routes(&self, seen: u64, topics: &[&str]) -> Result<(), ClientError> {
        self.routes
            .refresh_once(seen, || async { self.metadata(topics).await.map(|_| ()) })
            .await
    }

    /// [`Self::routed`] for a group's coordinator: `Busy` is retried too.
    /// In a cluster a coordinator answers it while it loads its offsets
    /// partition (just elected, or just created), as Kafka clients retry
    /// COORDINATOR_LOAD_IN_PROGRESS and COORDINATOR_NOT_AVAILABLE.
    async fn routed_to_coordinator<T, C, CF>(
        &self,
        refresh: &[&str],
        group: &str,
        call: C,
    ) -> Result<T, ClientError>
    where
        C: Fn(Arc<Connection>) -> CF,
        CF: std::future::Future<Output = Result<T, ClientError>>,
    {
        let busy = |e: &ClientError| e.code() == Some(ErrorCode::Busy);
        self.routed(refresh, || self.coordinator(group), call, busy)
            .await
    }

    /// Run `call` against the connection `pick` chooses; when the answer is
    /// [`NotLeader`](ErrorCode::NotLeader), the connection fails, or `also`
    /// says so, refresh the routes of the `refresh` topics and try again,
    /// at most [`ROUTED_ATTEMPTS_MAX`] times, backing off between attempts.
    async fn routed<T, P, PF, C, CF>(
        &self,
        refresh: &[&str],
        pick: P,
        call: C,
        also: impl Fn(&ClientError) -> bool,
    ) -> Result<T, ClientError>
    where
        P: Fn() -> PF,
        PF: std::future::Future<Output = Result<Arc<Connection>, ClientError>>,
        C: Fn(Arc<Connection>) -> CF,
        CF: std::future::Future<Output = Result<T, ClientError>>,
    {
        let mut attempt = 0;
        loop {
            let seen = self.routes.refresh_count();
            let err = match pick().await {
                Ok(conn) => match call(conn).await {
                    Ok(v) => return Ok(v),
                    Err(e) => e,
                },
                Err(e) => e,
            };
            attempt += 1;
            let retry = self.routes.is_reroutable(&err) || also(&err);
            if !retry || attempt >= routes::ROUTED_ATTEMPTS_MAX {
                return Err(err);
            }
            tokio::time::sleep(routes::retry_backoff(attempt)).await;
            // A refresh that fails (the bootstrap broker is the dead one)
            // leaves the table as it was; the next attempt says what is wrong.
            let _ = self.refresh_routes(seen, refresh).await;
        }
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
        self.create_replicated_topic(name, partitions, None, config)
            .await
    }

    /// Create a topic with `replication_factor` replicas per partition
    /// (None: the broker's `default_replication_factor`).
    pub async fn create_replicated_topic(
        &self,
        name: &str,
        partitions: u32,
        replication_factor: Option<u16>,
        config: &[(String, String)],
    ) -> Result<(), ClientError> {
        let req = CreateTopicRequest {
            name: name.to_string(),
            partitions,
            config: config.to_vec(),
            replication_factor: replication_factor.unwrap_or(0),
        };
        self.admin_call(ApiKey::CreateTopic, |b| req.encode(b))
            .await
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
        self.admin_call(ApiKey::DeleteTopic, |b| req.encode(b))
            .await
    }

    pub async fn create_partitions(&self, name: &str, total: u32) -> Result<(), ClientError> {
        let req = TopicRequest {
            name: name.to_string(),
            partitions: total,
        };
        self.admin_call(ApiKey::CreatePartitions, |b| req.encode(b))
            .await
    }

    /// An admin request with an empty answer body, to the bootstrap broker
    /// (or another if it is gone): in a cluster any broker forwards topic
    /// changes to the controller.
    async fn admin_call(
        &self,
        api: ApiKey,
        body: impl FnOnce(&mut bytes::BytesMut),
    ) -> Result<(), ClientError> {
        self.routes.any().await?.call(api, body).await?.finish()?;
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
        let req = &req;
        let call = |conn: Arc<Connection>| async move {
            let mut r = conn.call(ApiKey::ListOffsets, |b| req.encode(b)).await?;
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
        };
        let not_yet_known = |e: &ClientError| self.routes.is_reroutable_for(e, topic, partition);
        self.routed(
            &[topic],
            || self.routes.leader_conn(topic, partition),
            call,
            not_yet_known,
        )
        .await
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
        let names: Vec<&str> = req.topics.iter().map(|(t, _)| t.as_str()).collect();
        let req = &req;
        let call = |conn: Arc<Connection>| async move {
            let mut r = conn.call(ApiKey::OffsetCommit, |b| req.encode(b)).await?;
            offsets_answer(OffsetsResponse::decode(&mut r)?).map(|_| ())
        };
        self.routed_to_coordinator(&names, group, call).await
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
        let req = &req;
        let call = |conn: Arc<Connection>| async move {
            let mut r = conn.call(ApiKey::OffsetFetch, |b| req.encode(b)).await?;
            let offsets = offsets_answer(OffsetsResponse::decode(&mut r)?)?;
            Ok(offsets
                .into_iter()
                .map(|off| (off >= 0).then_some(off as u64))
                .collect())
        };
        self.routed_to_coordinator(&[topic], group, call).await
    }

    /// The connection to `group`'s coordinator: the broker leading the
    /// group's offsets partition, which the bootstrap broker names
    /// (FindCoordinator). On a single node, the bootstrap broker itself,
    /// without asking.
    async fn coordinator(&self, group: &str) -> Result<Arc<Connection>, ClientError> {
        if !self.routes.is_cluster() {
            return self.routes.bootstrap().await;
        }
        let req = FindCoordinatorRequest {
            group: group.to_string(),
        };
        let mut r = self
            .routes
            .any()
            .await?
            .call(ApiKey::FindCoordinator, |b| req.encode(b))
            .await?;
        let resp = FindCoordinatorResponse::decode(&mut r)?;
        r.finish()?;
        self.routes.node(resp.node).await
    }

    /// A Fetch sent as is to the bootstrap broker (the [`Consumer`] routes
    /// each partition to its leader instead).
    pub async fn fetch(&self, req: &FetchRequest) -> Result<FetchResponse, ClientError> {
        self.fetch_from(&*self.routes.bootstrap().await?, req).await
    }

    /// A Fetch sent to `conn`.
    pub async fn fetch_from(
        &self,
        conn: &Connection,
        req: &FetchRequest,
    ) -> Result<FetchResponse, ClientError> {
        // The broker may hold a fetch for its max_wait before answering.
        let deadline =
            connection::REQUEST_TIMEOUT + std::time::Duration::from_millis(req.max_wait_ms as u64);
        let mut r = conn
            .call_within(ApiKey::Fetch, API_VERSION, |b| req.encode(b), deadline)
            .await?;
        let resp = FetchResponse::decode(&mut r)?;
        r.finish()?;
        Ok(resp)
    }
}

/// The offsets of an OffsetCommit or OffsetFetch answer, in request order;
/// the first partition error fails the whole call.
fn offsets_answer(resp: OffsetsResponse) -> Result<Vec<i64>, ClientError> {
    let mut out = Vec::new();
    for (_, ps) in resp.topics {
        for (res, off) in ps {
            if res.error != ErrorCode::None {
                return Err(ClientError::Broker {
                    code: res.error,
                    message: res.message,
                });
            }
            out.push(off);
        }
    }
    Ok(out)
}
