//! Metadata changes from this broker's clients, made through the cluster's
//! controller.
//!
//! Lifecycle and cores: one [`Link`] per broker in a cluster, made by
//! [`Driver::attach`] and owned by shard 0 (`Shard::link_controller`);
//! every admin operation of every shard reaches it there (they all run on
//! shard 0, one at a time, as on a single node).
//!
//! A change is checked here first, with the same rules a single node
//! applies (names, partition counts, configs: `shard::admin`), so a client
//! gets the same errors; then it becomes a controller command, proposed
//! through [`Driver::request`] (retried across voters; the controller's
//! sessions make a retry apply once). Once committed, the answer waits
//! until this broker's own table shows the change (installed by the
//! publisher), so a client that creates a topic and then asks this broker
//! for its metadata finds it. Other brokers install it moments later.
//!
//! A config change is a read-modify-write of the whole config: two brokers
//! altering one topic at the same moment can lose one of the changes (the
//! later one wins), which Kafka's controller avoids by applying the delta
//! itself. Acceptable for now; noted in docs/replication.md.

use super::driver::{Driver, PROPOSE_WAIT};
use crate::controller::command::Command;
use crate::controller::command::MAX_PARTITIONS;
use crate::controller::state::{ApplyResult, Outcome, Refusal};
use crate::controller::view;
use crate::metadata::{alter, TopicTable};
use crate::router::ops::{
    AdminError, AdminOk, AdminOp, AdminResult, ControllerUnavailable, PartitionCountError,
    ReassignmentError, ReplicationFactorError,
};
use crate::shard::admin::{self, ControllerLink};
use crate::shard::Shard;
use std::cell::Cell;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::time::{Duration, Instant};
use tracing::warn;

/// How long a change is retried (each attempt waits up to
/// [`PROPOSE_WAIT`]) before it is answered "controller not available": a
/// new controller leader is elected within 1-2 s of the old one's death.
const REQUEST_BUDGET: Duration = Duration::from_secs(15);
/// Producer ids taken from the controller at a time: one log entry per
/// thousand idempotent producers.
const PRODUCER_ID_BLOCK: u32 = 1000;

pub struct Link {
    driver: Rc<Driver>,
    /// Producer ids this broker may hand out: `next .. end`.
    producer_ids: Rc<Cell<(i64, i64)>>,
}

impl Link {
    pub fn new(driver: Rc<Driver>) -> Link {
        Link {
            driver,
            producer_ids: Rc::new(Cell::new((0, 0))),
        }
    }
}

impl ControllerLink for Link {
    fn submit(&self, op: AdminOp) -> Pin<Box<dyn Future<Output = AdminResult>>> {
        let driver = self.driver.clone();
        // Producer ids are served from the block without an await, so two
        // callers never take the same id.
        if let AdminOp::AllocateProducerId = op {
            let (next, end) = self.producer_ids.get();
            if next < end {
                self.producer_ids.set((next + 1, end));
                return Box::pin(async move { Ok(AdminOk::ProducerId(next)) });
            }
        }
        Box::pin(submit(driver, self.producer_ids.clone(), op))
    }
}

async fn submit(
    driver: Rc<Driver>,
    producer_ids: Rc<Cell<(i64, i64)>>,
    op: AdminOp,
) -> AdminResult {
    let Some(shard) = driver.shard() else {
        return Err(AdminError::ShuttingDown);
    };
    let defaults = shard.config.topic_defaults.clone();
    let table = shard.topics();
    match op {
        AdminOp::CreateTopic {
            name,
            partitions,
            config,
            replication_factor,
        } => {
            let meta = admin::new_topic(&shard, &table, name, partitions, config)?;
            let command = Command::CreateTopic {
                name: meta.name.clone(),
                topic_id: view::topic_id_of(&meta.id),
                partitions,
                config: alter::overrides(&meta, &defaults),
                // Above 1, each partition is a Raft group; the controller
                // refuses more replicas than live brokers.
                replication_factor: replication_factor
                    .unwrap_or(shard.config.default_replication_factor),
            };
            applied(driver.request(command, REQUEST_BUDGET).await, &meta.name)?;
            let (name, id) = (meta.name, meta.id);
            shown(&shard, |t| t.get(&name).is_some_and(|m| m.id == id)).await;
        }
        AdminOp::DeleteTopic { name } => {
            let id = table.get(&name).map(|m| m.id.clone());
            applied(
                driver
                    .request(Command::DeleteTopic { name: name.clone() }, REQUEST_BUDGET)
                    .await,
                &name,
            )?;
            shown(&shard, |t| {
                t.get(&name).is_none_or(|m| Some(&m.id) != id.as_ref())
            })
            .await;
        }
        AdminOp::CreatePartitions { name, total } => {
            let from = admin::check_partition_growth(&table, &name, total)?;
            if total > from {
                let command = Command::CreatePartitions {
                    name: name.clone(),
                    total,
                };
                applied(driver.request(command, REQUEST_BUDGET).await, &name)?;
                shown(&shard, |t| {
                    t.get(&name).is_some_and(|m| m.partitions >= total)
                })
                .await;
            }
        }
        AdminOp::AlterTopicConfig {
            name,
            changes,
            replace_all,
            validate_only,
        } => {
            let (t, altered) = admin::altered_topic(&shard, &table, &name, &changes, replace_all)?;
            if !validate_only && altered != *t {
                let command = Command::AlterTopicConfig {
                    name: name.clone(),
                    config: alter::overrides(&altered, &defaults),
                };
                applied(driver.request(command, REQUEST_BUDGET).await, &name)?;
                shown(&shard, |t| {
                    t.get(&name).is_some_and(|m| {
                        m.config == altered.config && m.stored_config == altered.stored_config
                    })
                })
                .await;
            }
        }
        AdminOp::Reassign {
            name,
            partition,
            replicas,
        } => {
            let command = Command::ReassignPartition {
                name: name.clone(),
                partition,
                replicas,
            };
            applied(driver.request(command, REQUEST_BUDGET).await, &name)?;
        }
        AdminOp::CompleteReassignment {
            name,
            partition,
            leader,
            replicas,
        } => {
            let command = Command::CompleteReassignment {
                name: name.clone(),
                partition,
                leader,
                replicas,
            };
            applied(driver.request(command, REQUEST_BUDGET).await, &name)?;
        }
        AdminOp::AllocateProducerId => {
            let command = Command::AllocateProducerIds {
                count: PRODUCER_ID_BLOCK,
            };
            return match applied(driver.request(command, REQUEST_BUDGET).await, "")? {
                Outcome::ProducerIds { first, count } => {
                    // Two callers may both have asked; the later block wins
                    // and the rest of the earlier one goes unused.
                    producer_ids.set((first + 1, first + count as i64));
                    Ok(AdminOk::ProducerId(first))
                }
                other => {
                    tracing::warn!(
                        "cluster: unexpected answer to a producer id request: {other:?}"
                    );
                    Err(AdminError::ControllerUnavailable(
                        ControllerUnavailable::UnexpectedAnswer,
                    ))
                }
            };
        }
    }
    Ok(AdminOk::Done)
}

/// What the controller answered, as this layer's errors.
fn applied(r: Option<ApplyResult>, topic: &str) -> Result<Outcome, AdminError> {
    let Some(r) = r else {
        return Err(AdminError::ControllerUnavailable(
            ControllerUnavailable::NotCommitted,
        ));
    };
    match r.outcome {
        Outcome::Refused(why) => Err(match why {
            Refusal::TopicExists => AdminError::TopicExists(topic.to_string()),
            Refusal::UnknownTopic => AdminError::UnknownTopic(topic.to_string()),
            Refusal::InvalidName => AdminError::InvalidName(topic.to_string()),
            Refusal::InvalidPartitions => {
                AdminError::InvalidPartitions(PartitionCountError::RefusedByController {
                    max: MAX_PARTITIONS,
                })
            }
            Refusal::NoLiveBroker => AdminError::NoLiveBroker,
            Refusal::ReplicationFactor => {
                AdminError::InvalidReplicationFactor(ReplicationFactorError::AboveLiveBrokers)
            }
            Refusal::InvalidReassignment => {
                AdminError::InvalidReassignment(ReassignmentError::NotReplicated)
            }
            Refusal::NoReassignment => {
                AdminError::InvalidReassignment(ReassignmentError::NoneInProgress)
            }
            Refusal::UnknownBroker => {
                AdminError::InvalidReassignment(ReassignmentError::UnknownBroker)
            }
            Refusal::StaleRequest => {
                AdminError::ControllerUnavailable(ControllerUnavailable::StaleRequest)
            }
            // Refusals of broker registration and of producer id counts
            // (never sent from here).
            Refusal::StaleIncarnation | Refusal::UnknownShard | Refusal::InvalidCount => {
                tracing::warn!("cluster: unexpected refusal of an admin change: {why}");
                AdminError::ControllerUnavailable(ControllerUnavailable::UnexpectedAnswer)
            }
        }),
        ok => Ok(ok),
    }
}

/// Wait (up to [`PROPOSE_WAIT`]) until this broker's table satisfies
/// `done`. The change is committed either way; past the wait the answer
/// goes out and the table catches up later.
async fn shown(shard: &Rc<Shard>, done: impl Fn(&TopicTable) -> bool) {
    let start = Instant::now();
    while !done(&shard.topics()) {
        if start.elapsed() > PROPOSE_WAIT {
            warn!(
                "a committed metadata change is not in this broker's table yet; answering anyway"
            );
            return;
        }
        glommio::timer::sleep(Duration::from_millis(10)).await;
    }
}
