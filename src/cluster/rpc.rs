//! One RPC exchange: connect, send a request frame, read the response
//! frame, with a deadline on the whole exchange. Used for the rare
//! requests that want an answer (a proposal forwarded to the controller
//! leader, a broker's registration); Raft's own traffic uses the long-lived
//! connections of [`super::driver`].

use crate::controller::wire::{self, Request, Response, HEADER_BYTES};
use crate::protocol::DecodeError;
use bytes::BytesMut;
use futures::{AsyncReadExt, AsyncWriteExt};
use glommio::net::TcpStream;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum RpcError {
    #[error("rpc to {addr}: {source}")]
    Io {
        addr: String,
        source: std::io::Error,
    },
    #[error("rpc to {addr}: no answer within {ms} ms")]
    Timeout { addr: String, ms: u64 },
    #[error("rpc to {addr}: bad response: {source}")]
    Decode { addr: String, source: DecodeError },
    #[error("rpc to {addr}: response to another request")]
    Mismatch { addr: String },
}

/// Largest response read (a controller state of a big cluster).
pub const MAX_RESPONSE_BYTES: usize = 256 << 20;

pub async fn call(addr: &str, req: &Request, timeout: Duration) -> Result<Response, RpcError> {
    let exchange = async {
        let io = |source| RpcError::Io {
            addr: addr.to_string(),
            source,
        };
        let mut s = TcpStream::connect_timeout(addr, timeout)
            .await
            .map_err(|e| io(e.into()))?;
        s.set_nodelay(true).map_err(|e| io(e.into()))?;
        s.write_all(&wire::encode_request(1, req))
            .await
            .map_err(io)?;
        let mut h = [0u8; HEADER_BYTES];
        s.read_exact(&mut h).await.map_err(io)?;
        let decode = |source| RpcError::Decode {
            addr: addr.to_string(),
            source,
        };
        let header = wire::read_header(&h, MAX_RESPONSE_BYTES).map_err(decode)?;
        if header.correlation_id != 1 {
            return Err(RpcError::Mismatch {
                addr: addr.to_string(),
            });
        }
        let mut body = BytesMut::zeroed(header.body_len);
        s.read_exact(&mut body).await.map_err(io)?;
        wire::decode_response(header.api, body).map_err(decode)
    };
    futures_lite::future::or(exchange, async {
        glommio::timer::sleep(timeout).await;
        Err(RpcError::Timeout {
            addr: addr.to_string(),
            ms: timeout.as_millis() as u64,
        })
    })
    .await
}
