//! Accepting connections and spreading them over shards.
//!
//! glommio's `TcpListener::bind` sets SO_REUSEPORT, and with a few
//! connections the kernel's hash can leave a shard idle (DESIGN.md §3). So
//! one listener per protocol lives on shard 0, accepts, and hands each
//! connection round-robin to a shard as an `AcceptedTcpStream`, which the
//! target binds to its own executor. Connections never pile up on one shard.

use super::conn;
use crate::router::ShardMsg;
use crate::shard::{ListenerKind, Shard};
use glommio::net::{TcpListener, TcpStream};
use std::cell::Cell;
use std::rc::Rc;
use tracing::{info, warn};

/// Bind the listeners (shard 0) and start their accept loops.
pub fn bind_all(shard: &Rc<Shard>) -> Result<Vec<glommio::task::JoinHandle<()>>, String> {
    let mut tasks = Vec::new();
    let mut bind = |addr: &str, kind: ListenerKind| -> Result<(), String> {
        let l = TcpListener::bind(addr).map_err(|e| {
            format!(
                "cannot listen on {addr} ({}): {e}",
                crate::shard::local::kind_name(kind)
            )
        })?;
        let local = l.local_addr().map_err(|e| e.to_string())?;
        info!(%local, protocol = crate::shard::local::kind_name(kind), "listening");
        match kind {
            ListenerKind::Native => *shard.native_addr.borrow_mut() = Some(local),
            ListenerKind::Kafka => *shard.kafka_addr.borrow_mut() = Some(local),
        }
        tasks.push(glommio::spawn_local(accept_loop(shard.clone(), l, kind)).detach());
        Ok(())
    };
    bind(&shard.config.listen, ListenerKind::Native)?;
    if !shard.config.kafka_listen.is_empty() {
        bind(&shard.config.kafka_listen, ListenerKind::Kafka)?;
    }
    Ok(tasks)
}

async fn accept_loop(shard: Rc<Shard>, listener: TcpListener, kind: ListenerKind) {
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
            serve(&shard, stream.bind_to_executor(), kind);
        } else if let Err(e) = shard.router.send(target, ShardMsg::Adopt { stream, kind }) {
            warn!("could not hand a connection to shard {target}: {e}");
        }
    }
}

/// Serve a connection on this shard (or refuse it when over the limit).
pub fn serve(shard: &Rc<Shard>, stream: TcpStream, kind: ListenerKind) {
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
    let s = shard.clone();
    match kind {
        ListenerKind::Native => {
            glommio::spawn_local(conn::run(s, stream, Rc::new(super::native::Native), peer))
                .detach();
        }
        ListenerKind::Kafka => {
            glommio::spawn_local(conn::run(
                s,
                stream,
                Rc::new(crate::kafka::Kafka::new()),
                peer,
            ))
            .detach();
        }
    }
}
