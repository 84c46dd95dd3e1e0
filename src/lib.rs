//! shardlog: a Kafka-style commit-log broker, thread-per-core on io_uring.
pub mod config;
pub mod event;
pub mod format;
pub mod storage;
