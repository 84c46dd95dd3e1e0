//! Integration tests of the broker core: a real `shardlog serve` process,
//! real files, real sockets, driven through the CLI, the client library and
//! raw frames.

#[path = "../common/mod.rs"]
mod common;

mod bad_input;
mod cache_window;
mod crash;
mod disk_reads;
mod io_workers;
mod roundtrip;
mod segments;
mod validation;
mod visibility;

use std::future::Future;

/// Run async client code on a small tokio runtime.
pub fn block_on<F: Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}
