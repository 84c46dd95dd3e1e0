//! Listeners and connections: accept, read frames with bounds and timeouts,
//! dispatch requests to the shard, write responses.

pub mod acceptor;
pub mod bind;
pub mod budget;
pub mod conn;
pub mod native;
pub mod vectored;
