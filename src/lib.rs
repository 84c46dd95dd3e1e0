//! shardlog: a Kafka-style commit-log broker, thread-per-core on io_uring.
pub mod broker;
pub mod client;
pub mod clock;
pub mod config;
pub mod data_dir;
pub mod event;
pub mod format;
pub mod groups;
pub mod kafka;
pub mod layering;
pub mod metadata;
pub mod partition;
pub mod protocol;
pub mod router;
pub mod server;
pub mod shard;
pub mod storage;
