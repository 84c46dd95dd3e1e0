//! The batch frame: an rkyv-archived fixed header followed by the records.
//! Pure functions over bytes; no I/O, so it can be fuzzed and property-tested.

pub mod builder;
pub mod codec;
pub mod crc;
pub mod frame;
pub mod header;
pub mod record;
pub mod validate;

pub use builder::{
    for_each_batch_record, read_records, BatchBuilder, BatchRecord, ConsumedRecord, ProducerIds,
};
pub use codec::Compression;
pub use frame::FrameError;
pub use header::{BatchHeader, HEADER_LEN};
