//! FindCoordinator (v0-6). A group's coordinator is the broker that leads
//! its partition of the offsets topic: on a single node, this broker (the
//! owning shard behind it is an internal matter: any connection forwards);
//! in a cluster, whichever broker the controller placed that partition on,
//! or for a replicated offsets partition the broker whose replica leads its
//! Raft group (`groups::leadership`; elsewhere group requests get
//! NOT_COORDINATOR and the client asks again).
//! Creates the offsets topic on first use so the first JoinGroup does not
//! pay for it. Transaction coordinators do not exist here.

use super::coordinator_probe::{self, Probe};
use super::{errors, host_port, node_id, str_bytes, Ctx};
use crate::groups::leadership::{coordinator_at, CoordinatorAt};
use crate::groups::{self, OFFSETS_TOPIC};
use kafka_protocol::messages::find_coordinator_response::Coordinator;
use kafka_protocol::messages::{BrokerId, FindCoordinatorRequest, FindCoordinatorResponse};
use kafka_protocol::protocol::StrBytes;

/// How long an answer waits for the group's offsets partition to elect a
/// leader (see `groups::leadership::await_leaders`).
const LEADER_WAIT: std::time::Duration = std::time::Duration::from_secs(3);

/// How long a replica of the group's offsets partition is given to name
/// its leader (asked when this broker holds none).
const PROBE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

/// FindCoordinator key types.
const KEY_TYPE_GROUP: i8 = 0;

/// One key's answer: (error code, message, node, host, port).
type Answer = (i16, Option<StrBytes>, i32, String, i32);

/// The answer, and whether to close the connection after it: this broker
/// found itself cut off from the other replicas of a group's offsets
/// partition (see the `Unknown` case below).
pub async fn handle(ctx: &Ctx, req: FindCoordinatorRequest) -> (FindCoordinatorResponse, bool) {
    let cut_off = std::cell::Cell::new(false);
    let keys: Vec<StrBytes> = if ctx.version >= 4 {
        req.coordinator_keys.clone()
    } else {
        vec![req.key.clone()]
    };
    let failed =
        |code: i16, why: String| -> Answer { (code, Some(str_bytes(&why)), -1, String::new(), -1) };
    let common: Result<u32, Answer> = if req.key_type != KEY_TYPE_GROUP {
        Err(failed(
            errors::transactions_unsupported(),
            "shardlog has no transactions: there is no transaction coordinator".into(),
        ))
    } else {
        groups::offsets_partitions(&ctx.shard)
            .await
            .map_err(|e| failed(errors::coordinator_not_available(), e.to_string()))
    };
    if let Ok(n) = &common {
        let parts: Vec<u32> = keys.iter().map(|k| groups::partition_of(k, *n)).collect();
        groups::leadership::await_leaders(&ctx.shard, &parts, LEADER_WAIT).await;
    }
    let (host, port) = super::advertised_addr(&ctx.shard).await;
    let me = node_id(&ctx.shard);
    let answer = |key: StrBytes| {
        let (common, failed, host, cut_off) = (&common, &failed, &host, &cut_off);
        async move {
            let partitions = match common {
                Ok(n) => *n,
                Err(a) => return a.clone(),
            };
            let topics = ctx.shard.topics();
            let Some(meta) = topics.get(OFFSETS_TOPIC) else {
                return failed(
                    errors::coordinator_not_available(),
                    "the offsets topic is being created".into(),
                );
            };
            let partition = groups::partition_of(&key, partitions);
            // The replicas' own answers, asked at once (a broker cut off
            // from the others waits out one timeout, not one each): the
            // first to name a coordinator, as soon as it does; else
            // whether any was reached.
            let ask = |replicas: Vec<u32>| {
                let (topics, key) = (&topics, &key);
                async move {
                    let mut asked: futures::stream::FuturesUnordered<_> = replicas
                        .iter()
                        .filter_map(|r| {
                            let b = topics.brokers.get(r).filter(|b| b.live)?;
                            Some(coordinator_probe::ask(&b.kafka_addr, key, PROBE_TIMEOUT))
                        })
                        .collect();
                    let mut reached = false;
                    while let Some(a) = futures::StreamExt::next(&mut asked).await {
                        match a {
                            Probe::Named(node, h, p) => return (Some((node, h, p)), true),
                            Probe::NoneNamed => reached = true,
                            Probe::Unreachable => {}
                        }
                    }
                    (None, reached)
                }
            };
            let node = match coordinator_at(&ctx.shard, meta, partition) {
                CoordinatorAt::Here => return (errors::NONE, None, me, host.clone(), port),
                CoordinatorAt::Unknown if ctx.client_id == coordinator_probe::CLIENT_ID => {
                    // Another broker asking: say what this one knows, no
                    // more (never ask on).
                    return failed(
                        errors::coordinator_not_available(),
                        format!("{OFFSETS_TOPIC}-{partition} has no leader here"),
                    );
                }
                CoordinatorAt::Unknown => {
                    // This broker's replica knows no leader: an election is
                    // under way, or this broker is cut off from the others.
                    // The other replicas may know: relay the first that
                    // names one.
                    let others: Vec<u32> = meta
                        .assignment
                        .get(partition as usize)
                        .map(|a| a.replicas())
                        .unwrap_or_default()
                        .into_iter()
                        .filter(|r| *r as i32 != me)
                        .collect();
                    let (named, reached) = ask(others.clone()).await;
                    if let Some((node, h, p)) = named {
                        return (errors::NONE, None, node, h, p);
                    }
                    if !reached && !others.is_empty() {
                        // Cut off: no other replica could be reached. An
                        // answer alone kept a librdkafka client stuck here
                        // for as long as this broker stayed cut off: it
                        // sends its next FindCoordinator to the broker it
                        // used last, this one (tests/cluster.rs, a
                        // coordinator cut off and healed). The connection
                        // is closed after the answer, so the client asks
                        // another broker meanwhile.
                        cut_off.set(true);
                    }
                    return failed(
                        errors::coordinator_not_available(),
                        format!("{OFFSETS_TOPIC}-{partition} has no leader yet"),
                    );
                }
                CoordinatorAt::Broker(node) => node,
                CoordinatorAt::AskReplicas(replicas) => {
                    if let (Some((node, h, p)), _) = ask(replicas).await {
                        return (errors::NONE, None, node, h, p);
                    }
                    return failed(
                        errors::coordinator_not_available(),
                        format!("no replica of {OFFSETS_TOPIC}-{partition} named its leader"),
                    );
                }
            };
            match topics
                .brokers
                .get(&node)
                .filter(|b| b.live)
                .and_then(|b| host_port(&b.kafka_addr))
            {
                Some((h, p)) => (errors::NONE, None, node as i32, h, p),
                None => failed(
                    errors::coordinator_not_available(),
                    format!("broker {node}, the group's coordinator, is not live"),
                ),
            }
        }
    };
    let response = if ctx.version >= 4 {
        FindCoordinatorResponse::default().with_coordinators(
            futures::future::join_all(keys.into_iter().map(|k| async {
                let (code, message, node, host, port) = answer(k.clone()).await;
                Coordinator::default()
                    .with_key(k)
                    .with_node_id(BrokerId(node))
                    .with_host(str_bytes(&host))
                    .with_port(port)
                    .with_error_code(code)
                    .with_error_message(message)
            }))
            .await,
        )
    } else {
        let (code, message, node, host, port) = answer(keys[0].clone()).await;
        let r = FindCoordinatorResponse::default()
            .with_error_code(code)
            .with_node_id(BrokerId(node))
            .with_host(str_bytes(&host))
            .with_port(port);
        if ctx.version >= 1 {
            r.with_error_message(message)
        } else {
            r
        }
    };
    (response, cut_off.get())
}
