//! Accepting connections and spreading them over shards.
//!
//! One listener per protocol (bound exclusively by `Broker::start`, see
//! `bind`) lives on shard 0, accepts, and hands each connection round-robin
//! to a shard as an `AcceptedTcpStream`, which the target binds to its own
//! executor. (Per-shard SO_REUSEPORT listeners would let the kernel's hash
//! leave a shard idle with a few connections, DESIGN.md §3.) Connections
//! never pile up on one shard.
//!
//! The native protocol is the server's own; the Kafka listener sits beside
//! the server (it implements [`conn::Protocol`]), so the broker plugs it in
//! as a [`ServeKafka`] instead of the acceptor naming it.

use super::conn;
use crate::router::{ListenerKind, ShardMsg};
use crate::server::bind::Listeners;
use crate::shard::Shard;
use glommio::net::{TcpListener, TcpStream};
use std::cell::Cell;
use std::os::fd::{FromRawFd, IntoRawFd};
use std::rc::Rc;
use tracing::{debug, info, warn};

/// Starts serving one accepted Kafka connection on this shard (the peer's
/// address is for messages).
pub type ServeKafka = fn(Rc<Shard>, TcpStream, String);

/// Serve the listeners `Broker::start` bound (on shard 0): start their
/// accept loops on this executor.
pub fn serve_listeners(
    shard: &Rc<Shard>,
    listeners: Listeners,
    kafka: ServeKafka,
) -> Result<Vec<glommio::task::JoinHandle<()>>, String> {
    let mut tasks = Vec::new();
    let mut serve = |l: std::net::TcpListener, kind: ListenerKind| -> Result<(), String> {
        let local = l.local_addr().map_err(|e| e.to_string())?;
        // SAFETY: the descriptor is a bound, listening TCP socket whose
        // ownership moves into glommio's listener here.
        let l = unsafe { TcpListener::from_raw_fd(l.into_raw_fd()) };
        info!(%local, protocol = kind.name(), "listening");
        match kind {
            ListenerKind::Native => *shard.native_addr.borrow_mut() = Some(local),
            ListenerKind::Kafka => *shard.kafka_addr.borrow_mut() = Some(local),
        }
        tasks.push(
            shard
                .queues
                .spawn_control(accept_loop(shard.clone(), l, kind, kafka))
                .detach(),
        );
        Ok(())
    };
    serve(listeners.native, ListenerKind::Native)?;
    if let Some(k) = listeners.kafka {
        serve(k, ListenerKind::Kafka)?;
    }
    Ok(tasks)
}

async fn accept_loop(
    shard: Rc<Shard>,
    listener: TcpListener,
    kind: ListenerKind,
    kafka: ServeKafka,
) {
    let next = Cell::new(0usize);
    loop {
        let stream = match listener.shared_accept().await {
            Ok(s) => s,
            Err(e) => {
                warn!("accept failed: {e}");
                glommio::timer::sleep(std::time::Duration::from_millis(10)).await;
                continue;
            }
        };
        let target = next.get() % shard.shards();
        next.set(next.get() + 1);
        if target == shard.id {
            serve(&shard, stream.bind_to_executor(), kind, kafka);
        } else if let Err(e) = shard.router.send(target, ShardMsg::Adopt { stream, kind }) {
            warn!("could not hand a connection to shard {target}: {e}");
        }
    }
}

/// Serve a connection on this shard (or refuse it when over the limit);
/// a Kafka connection through `kafka`.
pub fn serve(shard: &Rc<Shard>, stream: TcpStream, kind: ListenerKind, kafka: ServeKafka) {
    let peer = stream
        .peer_addr()
        .map(|a| a.to_string())
        .unwrap_or_else(|_| "?".into());
    if shard.connections.get() >= shard.config.max_connections_per_shard
        || shard.shutting_down.get()
    {
        warn!(%peer, shard = shard.id, limit = shard.config.max_connections_per_shard, "refusing connection: shard at max_connections_per_shard");
        drop(stream);
        return;
    }
    shard.connections.set(shard.connections.get() + 1);
    debug!(%peer, shard = shard.id, protocol = kind.name(), "serving connection");
    let s = shard.clone();
    match kind {
        ListenerKind::Native => {
            // A connection is a control task; its data requests run in the
            // bulk queue (`shard::queues`).
            let queues = s.queues;
            queues
                .spawn_control(conn::run(s, stream, Rc::new(super::native::Native), peer))
                .detach();
        }
        ListenerKind::Kafka => kafka(s, stream, peer),
    }
}
