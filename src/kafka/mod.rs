//! The Kafka wire-protocol listener.
use crate::server::conn::{Handled, Protocol};
use crate::shard::Shard;
use bytes::BytesMut;
use std::rc::Rc;

pub struct Kafka;

impl Kafka {
    pub fn new() -> Self {
        Kafka
    }
}

impl Default for Kafka {
    fn default() -> Self {
        Self::new()
    }
}

impl Protocol for Kafka {
    fn frame_len(&self, _buf: &[u8], _max: usize) -> Result<Option<usize>, Option<BytesMut>> {
        Err(None)
    }
    async fn handle(self: Rc<Self>, _shard: Rc<Shard>, _frame: BytesMut) -> Handled {
        Handled::Close(None)
    }
}
