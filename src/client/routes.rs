//! Where the client sends each request: a routing table learned from
//! Metadata version 1 (topic -> each partition's leader node; node -> its
//! native address) and one lazily opened connection per broker.
//!
//! Lifecycle: made by `Client::connect` with the bootstrap connection; the
//! table starts empty and is replaced topic by topic by every Metadata
//! answer (`learn`). A connection that failed is dropped from the pool and
//! reopened on next use. Shared (`Arc`) by every clone of the `Client` and
//! by the producer's sender and answer tasks, on the client's tokio runtime.
//!
//! Node ids: a single node answers with node 0 everywhere and an empty
//! broker list; node 0, the answering broker's own id (`this_node`), and a
//! topic not yet in the table all mean "the bootstrap connection". So on a
//! single node every request goes where it went before routing existed.

use super::connection::Connection;
use super::ClientError;
use crate::protocol::messages::MetadataResponse;
use crate::protocol::ErrorCode;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Attempts of one routed call (the first plus retries after a metadata
/// refresh) before its last error is returned (and never past the
/// request's timeout). With the backoff below, about 13 s: a replicated
/// partition elects its leader 1-2 s after a creation or a leader's
/// death, longer on a loaded machine (8 attempts, 2.4 s, were not enough
/// for a topic created while other brokers were busy).
pub const ROUTED_ATTEMPTS_MAX: u32 = 20;

/// Wait before retry `attempt` (1-based): 25 ms doubling, at most 800 ms. A
/// leader change in the cluster is a controller commit plus the table's
/// broadcast, tens of milliseconds; a dead broker is fenced after its
/// heartbeat timeout, seconds.
pub fn retry_backoff(attempt: u32) -> Duration {
    Duration::from_millis(25u64 << attempt.clamp(1, 6).saturating_sub(1))
}

#[derive(Default)]
struct Table {
    /// Node id of the bootstrap broker (0 on a single node).
    this_node: u32,
    /// Native address of every known broker.
    brokers: HashMap<u32, String>,
    /// Per topic, per partition: the leader's node id.
    leaders: HashMap<String, Vec<u32>>,
}

pub struct Routes {
    bootstrap_addr: String,
    bootstrap: Mutex<Arc<Connection>>,
    table: Mutex<Table>,
    /// Open connections to brokers other than the bootstrap one, by node.
    pool: tokio::sync::Mutex<HashMap<u32, Arc<Connection>>>,
    /// Refreshes done, so a caller that waited behind another refresh (or
    /// sent its request before one) does not repeat it.
    refreshes: AtomicU64,
    /// Serialises metadata refreshes.
    refreshing: tokio::sync::Mutex<()>,
}

impl Table {
    /// Whether `code` says a broker does not know (yet) a partition this
    /// cluster's table lists.
    fn lists_what_a_broker_does_not_know(
        &self,
        code: Option<ErrorCode>,
        topic: &str,
        partition: u32,
    ) -> bool {
        let listed = self.leaders.get(topic);
        !self.brokers.is_empty()
            && match code {
                Some(ErrorCode::UnknownTopic) => listed.is_some(),
                Some(ErrorCode::UnknownPartition) => {
                    listed.is_some_and(|ls| (partition as usize) < ls.len())
                }
                _ => false,
            }
    }
}

impl Routes {
    pub fn new(bootstrap_addr: &str, conn: Connection) -> Routes {
        Routes {
            bootstrap_addr: bootstrap_addr.to_string(),
            bootstrap: Mutex::new(Arc::new(conn)),
            table: Mutex::new(Table::default()),
            pool: tokio::sync::Mutex::new(HashMap::new()),
            refreshes: AtomicU64::new(0),
            refreshing: tokio::sync::Mutex::new(()),
        }
    }

    /// Take what a Metadata answer, received over `from`, says: the
    /// brokers, and the leaders of every topic it describes (topics it does
    /// not mention keep theirs). Only an answer over the bootstrap
    /// connection says which node that connection reaches.
    pub fn learn(&self, m: &MetadataResponse, from: &Arc<Connection>) {
        let from_bootstrap = Arc::ptr_eq(from, &self.bootstrap.lock().unwrap());
        let mut t = self.table.lock().unwrap();
        if from_bootstrap {
            t.this_node = m.this_node;
        }
        if !m.brokers.is_empty() {
            t.brokers = m
                .brokers
                .iter()
                .map(|b| (b.id, b.native_addr.clone()))
                .collect();
        }
        for topic in &m.topics {
            if topic.error == ErrorCode::None {
                let leaders = topic.partition_info.iter().map(|p| p.leader).collect();
                t.leaders.insert(topic.name.clone(), leaders);
            } else {
                t.leaders.remove(&topic.name);
            }
        }
    }

    /// The node leading `partition` of `topic`, as last learned (the
    /// bootstrap broker's if unknown).
    pub fn leader(&self, topic: &str, partition: u32) -> u32 {
        let t = self.table.lock().unwrap();
        t.leaders
            .get(topic)
            .and_then(|ls| ls.get(partition as usize).copied())
            .unwrap_or(t.this_node)
    }

    /// Whether the last Metadata answer came from a cluster (it listed brokers).
    pub fn is_cluster(&self) -> bool {
        !self.table.lock().unwrap().brokers.is_empty()
    }

    /// Whether `e` means "the request went to the wrong broker, or, in a
    /// cluster, the broker is gone": refresh the routing table and send
    /// again. On a single node a failed connection is final, as it was
    /// before routing: there is no other broker to find.
    pub fn is_reroutable(&self, e: &ClientError) -> bool {
        e.code() == Some(ErrorCode::NotLeader) || (e.is_transient_connect() && self.is_cluster())
    }

    /// As [`Self::is_reroutable`] for a request about one partition, and
    /// also when, in a cluster, a broker answers UnknownTopic or
    /// UnknownPartition for a partition the last Metadata answer listed: a
    /// broker installs the controller's table a moment after the one that
    /// created a topic (or added partitions) answered, and says "unknown"
    /// meanwhile. Kafka clients retry UNKNOWN_TOPIC_OR_PARTITION the same
    /// way. A topic that Metadata does not list is not retried: it does
    /// not exist, and the caller hears so at once.
    pub fn is_reroutable_for(&self, e: &ClientError, topic: &str, partition: u32) -> bool {
        self.is_reroutable(e)
            || self
                .table
                .lock()
                .unwrap()
                .lists_what_a_broker_does_not_know(e.code(), topic, partition)
    }

    /// The refresh count, read before sending, to pass to [`Routes::refresh_once`].
    pub fn refresh_count(&self) -> u64 {
        self.refreshes.load(Ordering::Acquire)
    }

    /// Run `refresh` unless another refresh finished after `seen` was read
    /// (many tasks failing at once refresh once).
    pub async fn refresh_once<F, Fut>(&self, seen: u64, refresh: F) -> Result<(), ClientError>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Result<(), ClientError>>,
    {
        let _one = self.refreshing.lock().await;
        if self.refresh_count() != seen {
            return Ok(());
        }
        refresh().await?;
        self.refreshes.fetch_add(1, Ordering::AcqRel);
        Ok(())
    }

    /// The bootstrap connection, reopened if it failed.
    pub async fn bootstrap(&self) -> Result<Arc<Connection>, ClientError> {
        let cur = self.bootstrap.lock().unwrap().clone();
        if !cur.is_closed() {
            return Ok(cur);
        }
        let fresh = Arc::new(Connection::connect(&self.bootstrap_addr).await?);
        *self.bootstrap.lock().unwrap() = fresh.clone();
        Ok(fresh)
    }

    /// The bootstrap connection if it works, else one to any other known
    /// broker: where metadata and admin requests go.
    pub async fn any(&self) -> Result<Arc<Connection>, ClientError> {
        let first = match self.bootstrap().await {
            Ok(c) => return Ok(c),
            Err(e) => e,
        };
        let others: Vec<u32> = self.table.lock().unwrap().brokers.keys().copied().collect();
        for node in others {
            if let Ok(c) = self.node(node).await {
                return Ok(c);
            }
        }
        Err(first)
    }

    /// The connection to `node`, opened on first use (by the native address
    /// the last Metadata answer gave for it).
    pub async fn node(&self, node: u32) -> Result<Arc<Connection>, ClientError> {
        let addr = {
            let t = self.table.lock().unwrap();
            if node == 0 || node == t.this_node {
                None
            } else {
                // Reroutable, like a NotLeader answer: the table is older
                // than whoever named this node; a refresh learns its address.
                Some(
                    t.brokers
                        .get(&node)
                        .cloned()
                        .ok_or_else(|| ClientError::Broker {
                            code: ErrorCode::NotLeader,
                            message: format!("no native address known for broker {node} yet"),
                        })?,
                )
            }
        };
        let Some(addr) = addr else {
            return self.bootstrap().await;
        };
        let mut pool = self.pool.lock().await;
        if let Some(c) = pool.get(&node).filter(|c| !c.is_closed()) {
            return Ok(c.clone());
        }
        pool.remove(&node);
        let c = Arc::new(Connection::connect(&addr).await?);
        pool.insert(node, c.clone());
        Ok(c)
    }

    /// The connection to the leader of `partition` of `topic`.
    pub async fn leader_conn(
        &self,
        topic: &str,
        partition: u32,
    ) -> Result<Arc<Connection>, ClientError> {
        self.node(self.leader(topic, partition)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_listed_partition_unknown_to_a_cluster_broker_is_retried() {
        let mut t = Table::default();
        t.leaders.insert("t".into(), vec![1, 2]);
        let (topic, part) = (
            Some(ErrorCode::UnknownTopic),
            Some(ErrorCode::UnknownPartition),
        );
        // A single node: "unknown" is final.
        assert!(!t.lists_what_a_broker_does_not_know(topic, "t", 0));
        t.brokers.insert(1, "a:1".into());
        t.brokers.insert(2, "b:1".into());
        assert!(t.lists_what_a_broker_does_not_know(topic, "t", 0));
        assert!(t.lists_what_a_broker_does_not_know(part, "t", 1));
        // Not listed: a partition beyond the count, another topic.
        assert!(!t.lists_what_a_broker_does_not_know(part, "t", 2));
        assert!(!t.lists_what_a_broker_does_not_know(topic, "u", 0));
        // Other errors are not this case.
        assert!(!t.lists_what_a_broker_does_not_know(Some(ErrorCode::Corrupt), "t", 0));
        assert!(!t.lists_what_a_broker_does_not_know(None, "t", 0));
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        assert_eq!(retry_backoff(1), Duration::from_millis(25));
        assert_eq!(retry_backoff(2), Duration::from_millis(50));
        assert!(retry_backoff(5) > retry_backoff(4));
        assert_eq!(retry_backoff(40), Duration::from_millis(800));
    }
}
