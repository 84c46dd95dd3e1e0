//! Binding the client listeners: one process per port.
//!
//! glommio's `TcpListener::bind` sets SO_REUSEPORT, which let two brokers
//! share a port (the kernel then spread connections between them) and let a
//! restarted broker bind beside the listening socket of its `kill -9`ed
//! predecessor, which io_uring keeps alive for a moment after the process
//! is reaped: clients that connected to the dead socket were reset
//! (DESIGN.md §8). So the broker binds its listeners itself, on the main
//! thread, without SO_REUSEPORT, before any shard starts:
//!
//! - SO_REUSEADDR only, so TIME_WAIT connections of an earlier run do not
//!   block a restart;
//! - a port in use by a live process is an error at once, naming the
//!   address and, where /proc shows it, the owner's PID;
//! - a port held by a listening socket that no process owns (the dead
//!   broker's, still being torn down) is retried, with a log line, for at
//!   most `bind_wait_ms`, until the kernel has really freed it.
//!
//! The bound sockets are handed to shard 0, which serves them (see
//! `acceptor`). Lifecycle: created by `Broker::start`, moved to shard 0's
//! executor, closed when that executor's accept tasks end.

use std::net::{SocketAddr, TcpListener, ToSocketAddrs};
use std::time::{Duration, Instant};
use tracing::{info, warn};

#[derive(Debug, thiserror::Error)]
pub enum BindError {
    #[error("{what} listener: cannot resolve '{addr}': {detail}")]
    Resolve {
        what: &'static str,
        addr: String,
        detail: String,
    },
    #[error("{what} listener: address {addr} is already in use by {owner}; stop it, or choose another address (--listen / --kafka-listen / --rpc-listen)")]
    InUse {
        what: &'static str,
        addr: SocketAddr,
        owner: String,
    },
    #[error("{what} listener: address {addr} stayed in use for {waited_ms} ms by a listening socket that no visible process owns; try again, or choose another address")]
    StillInUse {
        what: &'static str,
        addr: SocketAddr,
        waited_ms: u64,
    },
    #[error("{what} listener: cannot listen on {addr}")]
    Io {
        what: &'static str,
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// The client listeners, bound on the main thread and served by shard 0.
pub struct Listeners {
    pub native: TcpListener,
    pub kafka: Option<TcpListener>,
    /// Other brokers' listener (cluster mode only): taken by the cluster
    /// driver, not by the client accept loops.
    pub rpc: Option<TcpListener>,
}

impl Listeners {
    /// Bind every configured listener, exclusively.
    pub fn bind(config: &crate::config::BrokerConfig) -> Result<Listeners, BindError> {
        let wait = Duration::from_millis(config.bind_wait_ms);
        let native = bind_exclusive("native", &config.listen, wait)?;
        let kafka = if config.kafka_listen.is_empty() {
            None
        } else {
            Some(bind_exclusive("kafka", &config.kafka_listen, wait)?)
        };
        let rpc = if config.rpc_listen.is_empty() {
            None
        } else {
            Some(bind_exclusive("rpc", &config.rpc_listen, wait)?)
        };
        Ok(Listeners { native, kafka, rpc })
    }
}

/// Backlog of each listening socket.
const BACKLOG: i32 = 1024;
/// Pause between attempts while an orphaned socket is being torn down.
const RETRY_PAUSE: Duration = Duration::from_millis(25);

/// Bind `addr` for the listener called `what` (for messages), without
/// SO_REUSEPORT. See the module comment for the waiting rule.
pub fn bind_exclusive(
    what: &'static str,
    addr: &str,
    wait_max: Duration,
) -> Result<TcpListener, BindError> {
    let sa = addr
        .to_socket_addrs()
        .map_err(|e| BindError::Resolve {
            what,
            addr: addr.to_string(),
            detail: e.to_string(),
        })?
        .next()
        .ok_or_else(|| BindError::Resolve {
            what,
            addr: addr.to_string(),
            detail: "no address".into(),
        })?;
    let started = Instant::now();
    let mut logged = false;
    loop {
        match try_bind(sa) {
            Ok(l) => {
                if logged {
                    info!(%sa, listener = what, waited_ms = started.elapsed().as_millis() as u64, "address free again; bound");
                }
                return Ok(l);
            }
            Err(e) if e.raw_os_error() == Some(libc::EADDRINUSE) => {
                if let Some(owner) = port_owner(sa.port()) {
                    return Err(BindError::InUse {
                        what,
                        addr: sa,
                        owner,
                    });
                }
                if started.elapsed() >= wait_max {
                    return Err(BindError::StillInUse {
                        what,
                        addr: sa,
                        waited_ms: started.elapsed().as_millis() as u64,
                    });
                }
                if !logged {
                    warn!(%sa, listener = what, wait_max_ms = wait_max.as_millis() as u64,
                        "address held by a listening socket with no live process (a broker killed moments ago?); waiting until the kernel frees it");
                    logged = true;
                }
                std::thread::sleep(RETRY_PAUSE);
            }
            Err(source) => {
                return Err(BindError::Io {
                    what,
                    addr: sa,
                    source,
                })
            }
        }
    }
}

fn try_bind(sa: SocketAddr) -> std::io::Result<TcpListener> {
    use socket2::{Domain, Protocol, Socket, Type};
    let domain = if sa.is_ipv6() {
        Domain::IPV6
    } else {
        Domain::IPV4
    };
    let s = Socket::new(domain, Type::STREAM, Some(Protocol::TCP))?;
    s.set_reuse_address(true)?;
    s.bind(&sa.into())?;
    s.listen(BACKLOG)?;
    Ok(s.into())
}

/// "PID N (comm)" of a live process holding a listening TCP socket on
/// `port`, from /proc; None if no visible process holds one (the socket is
/// orphaned, or belongs to a process we may not inspect).
pub fn port_owner(port: u16) -> Option<String> {
    let inodes = listening_inodes(port);
    if inodes.is_empty() {
        return None;
    }
    let targets: Vec<String> = inodes.iter().map(|i| format!("socket:[{i}]")).collect();
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(fds) = std::fs::read_dir(entry.path().join("fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            let Ok(link) = std::fs::read_link(fd.path()) else {
                continue;
            };
            // A process that is exiting (a broker just sent SIGKILL) is no
            // owner: its socket is about to be orphaned, then freed, so the
            // caller waits for it instead of refusing a restart.
            if targets.iter().any(|t| link.as_os_str() == t.as_str())
                && crate::data_dir::process_is_running(pid)
            {
                let comm = std::fs::read_to_string(entry.path().join("comm")).unwrap_or_default();
                return Some(format!("PID {pid} ({})", comm.trim()));
            }
        }
    }
    None
}

/// Inodes of sockets in LISTEN state on `port` (IPv4 and IPv6).
fn listening_inodes(port: u16) -> Vec<u64> {
    const TCP_LISTEN: &str = "0A";
    let mut out = Vec::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(table) else {
            continue;
        };
        for line in text.lines().skip(1) {
            // sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() < 10 || f[3] != TCP_LISTEN {
                continue;
            }
            let local_port = f[1]
                .rsplit(':')
                .next()
                .and_then(|p| u16::from_str_radix(p, 16).ok());
            if local_port == Some(port) {
                if let Ok(inode) = f[9].parse::<u64>() {
                    if inode != 0 {
                        out.push(inode);
                    }
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_port_in_use_names_this_process() {
        let first = bind_exclusive("test", "127.0.0.1:0", Duration::from_secs(60)).unwrap();
        let addr = first.local_addr().unwrap().to_string();
        let t = Instant::now();
        match bind_exclusive("test", &addr, Duration::from_secs(60)) {
            Err(BindError::InUse { owner, .. }) => {
                assert!(
                    owner.contains(&format!("PID {}", std::process::id())),
                    "{owner}"
                )
            }
            other => panic!("expected InUse, got {other:?}"),
        }
        // A live owner is reported at once, not after the orphan wait.
        assert!(t.elapsed() < Duration::from_secs(30));
        drop(first);
        bind_exclusive("test", &addr, Duration::from_secs(5)).expect("free once closed");
    }
}
