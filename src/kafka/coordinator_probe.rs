//! Asking another broker who coordinates a group: FindCoordinator v0 sent
//! to its Kafka listener.
//!
//! Why: a group's coordinator is the Raft leader of its replicated
//! `__consumer_offsets` partition, and a broker holding no replica of that
//! partition does not know the leader (the controller does not track Raft
//! leaders yet). Guessing the controller's placement sends clients to a
//! follower, and librdkafka's OffsetFetch (`committed()`) gives up on the
//! NOT_COORDINATOR that follows; "not available" left a librdkafka
//! consumer asking the same broker until its timeout (tests/cluster.rs,
//! four brokers). So such a broker asks a broker that holds a replica, and
//! relays what it says.
//!
//! The request and answer are a few fixed fields, encoded here by hand
//! (the broker's protocol crate is built for the broker's side only).

use futures::{AsyncReadExt, AsyncWriteExt};
use glommio::net::TcpStream;
use std::time::Duration;

const FIND_COORDINATOR: i16 = 10;
/// The client id of a probe: a broker asked by another answers from what
/// it knows itself, never asking on (two brokers that both knew no leader
/// would otherwise ask each other back and forth).
pub const CLIENT_ID: &str = "shardlog-coordinator-probe";
/// Largest answer read: a v0 answer is 4 fields and a host name.
const ANSWER_BYTES_MAX: usize = 4096;

/// What a probed broker said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Probe {
    /// It names this coordinator: (node, host, port).
    Named(i32, String, i32),
    /// It answered (or was reached) but named none.
    NoneNamed,
    /// No connection could be made within the timeout: from here, that
    /// broker is out of reach.
    Unreachable,
}

/// The coordinator of `group` as the broker at `addr` (its Kafka listener)
/// names it, within `timeout` in all.
pub async fn ask(addr: &str, group: &str, timeout: Duration) -> Probe {
    let connected = std::cell::Cell::new(false);
    let asked = async {
        let Ok(mut s) = TcpStream::connect_timeout(addr, timeout).await else {
            return Probe::Unreachable;
        };
        connected.set(true);
        let named = async {
            s.write_all(&request(group)?).await.ok()?;
            let mut len = [0u8; 4];
            s.read_exact(&mut len).await.ok()?;
            let n = usize::try_from(i32::from_be_bytes(len)).ok()?;
            if n > ANSWER_BYTES_MAX {
                return None;
            }
            let mut body = vec![0u8; n];
            s.read_exact(&mut body).await.ok()?;
            answer(&body)
        };
        match named.await {
            Some((node, host, port)) => Probe::Named(node, host, port),
            None => Probe::NoneNamed,
        }
    };
    futures_lite::future::or(asked, async {
        glommio::timer::sleep(timeout).await;
        // Connected but silent: reached, if slow.
        if connected.get() {
            Probe::NoneNamed
        } else {
            Probe::Unreachable
        }
    })
    .await
}

/// FindCoordinator v0 for `group`, length prefix included (header v1:
/// api key, version, correlation id, client id).
fn request(group: &str) -> Option<Vec<u8>> {
    let client = CLIENT_ID.as_bytes();
    let group_len = i16::try_from(group.len()).ok()?;
    let mut body = Vec::with_capacity(16 + client.len() + group.len());
    body.extend_from_slice(&FIND_COORDINATOR.to_be_bytes());
    body.extend_from_slice(&0i16.to_be_bytes());
    body.extend_from_slice(&1i32.to_be_bytes());
    body.extend_from_slice(&(client.len() as i16).to_be_bytes());
    body.extend_from_slice(client);
    body.extend_from_slice(&group_len.to_be_bytes());
    body.extend_from_slice(group.as_bytes());
    let mut frame = (body.len() as i32).to_be_bytes().to_vec();
    frame.extend_from_slice(&body);
    Some(frame)
}

/// A FindCoordinator v0 answer (after the length prefix): correlation id,
/// error code, node, host, port; None on an error or a short answer.
fn answer(b: &[u8]) -> Option<(i32, String, i32)> {
    let i16_at = |at: usize| Some(i16::from_be_bytes(b.get(at..at + 2)?.try_into().ok()?));
    let i32_at = |at: usize| Some(i32::from_be_bytes(b.get(at..at + 4)?.try_into().ok()?));
    if i16_at(4)? != 0 {
        return None;
    }
    let node = i32_at(6)?;
    let host_len = usize::try_from(i16_at(10)?).ok()?;
    let host = std::str::from_utf8(b.get(12..12 + host_len)?).ok()?;
    let port = i32_at(12 + host_len)?;
    (node >= 0).then(|| (node, host.to_string(), port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_decode_and_errors_name_nobody() {
        let mut ok = Vec::new();
        ok.extend_from_slice(&1i32.to_be_bytes());
        ok.extend_from_slice(&0i16.to_be_bytes());
        ok.extend_from_slice(&3i32.to_be_bytes());
        ok.extend_from_slice(&9i16.to_be_bytes());
        ok.extend_from_slice(b"127.0.0.1");
        ok.extend_from_slice(&9092i32.to_be_bytes());
        assert_eq!(answer(&ok), Some((3, "127.0.0.1".to_string(), 9092)));
        // Every cut is refused, never a panic.
        for n in 0..ok.len() {
            assert_eq!(answer(&ok[..n]), None, "cut at {n}");
        }
        let mut err = ok.clone();
        err[4..6].copy_from_slice(&15i16.to_be_bytes());
        assert_eq!(answer(&err), None);
        let r = request("g").unwrap();
        assert_eq!(
            i32::from_be_bytes(r[..4].try_into().unwrap()) as usize,
            r.len() - 4
        );
        assert_eq!(&r[r.len() - 3..], &[0, 1, b'g']);
    }
}
