//! A replicated partition's Raft state that is not in its log: the term,
//! the vote, the commit index, the log's first index with the term before
//! it (what retention compacted away), and the group's configuration.
//!
//! One small file per partition directory, `raft.state`, replaced
//! atomically and durably (`metadata::durable`: temporary file, fsync,
//! rename, directory fsync). Raft's promises need the term and vote on disk
//! before a vote or an append is answered; the commit index may lag (it is
//! learnt again from the leader), so the driver saves it with the next
//! term or vote change, or when it advances the log start.
//!
//! Layout (all integers little-endian):
//! ```text
//! u64 magic "SLRST001" | u32 crc32c (of everything after it) | u64 term | u64 vote
//! | u64 commit | u64 first_index | u64 prev_term
//! | u32 voters | voters x u64 | u32 learners | learners x u64
//! ```
//!
//! Bytes read back are checked like bytes from a socket: a bad magic, a
//! CRC mismatch or a lying count is [`StateError::Corrupt`], never a panic
//! or a large allocation.

use crate::metadata::durable;
use crate::metadata::MetadataError;
use std::path::Path;

pub const FILE_NAME: &str = "raft.state";
const MAGIC: &[u8; 8] = b"SLRST001";
/// Most voters plus learners a group may list.
const MAX_MEMBERS: u32 = 64;

/// What a replica keeps outside its log.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReplicaState {
    pub term: u64,
    /// The replica voted for in `term` (0: none).
    pub vote: u64,
    pub commit: u64,
    /// The first index still in the log, and the term of the one before.
    pub first_index: u64,
    pub prev_term: u64,
    /// Replica ids (broker ids) of the group's voters and learners.
    pub voters: Vec<u64>,
    pub learners: Vec<u64>,
}

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("{path}: {why}")]
    Corrupt { path: String, why: String },
    #[error(transparent)]
    Io(#[from] MetadataError),
}

impl ReplicaState {
    pub fn encode(&self) -> Vec<u8> {
        assert!(
            self.voters.len() + self.learners.len() <= MAX_MEMBERS as usize,
            "a group of at most {MAX_MEMBERS} members"
        );
        let mut body = Vec::with_capacity(64);
        for v in [
            self.term,
            self.vote,
            self.commit,
            self.first_index,
            self.prev_term,
        ] {
            body.extend_from_slice(&v.to_le_bytes());
        }
        for list in [&self.voters, &self.learners] {
            body.extend_from_slice(&(list.len() as u32).to_le_bytes());
            for id in list {
                body.extend_from_slice(&id.to_le_bytes());
            }
        }
        let mut out = Vec::with_capacity(12 + body.len());
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&crc32c::crc32c(&body).to_le_bytes());
        out.extend_from_slice(&body);
        out
    }

    pub fn decode(bytes: &[u8]) -> Result<ReplicaState, String> {
        if bytes.len() < 12 || &bytes[..8] != MAGIC {
            return Err("not a replica state file (bad magic or too short)".into());
        }
        let crc = u32::from_le_bytes(bytes[8..12].try_into().expect("4 bytes"));
        let body = &bytes[12..];
        if crc32c::crc32c(body) != crc {
            return Err("CRC mismatch".into());
        }
        let mut at = 0usize;
        let mut take = |n: usize| -> Result<&[u8], String> {
            let s = body
                .get(at..at + n)
                .ok_or_else(|| format!("ends at byte {} of {}", body.len(), at + n))?;
            at += n;
            Ok(s)
        };
        let mut u64s = [0u64; 5];
        for v in &mut u64s {
            *v = u64::from_le_bytes(take(8)?.try_into().expect("8 bytes"));
        }
        let mut lists = [Vec::new(), Vec::new()];
        for list in &mut lists {
            let n = u32::from_le_bytes(take(4)?.try_into().expect("4 bytes"));
            if n > MAX_MEMBERS {
                return Err(format!("{n} members, at most {MAX_MEMBERS}"));
            }
            for _ in 0..n {
                list.push(u64::from_le_bytes(take(8)?.try_into().expect("8 bytes")));
            }
        }
        if at != body.len() {
            return Err(format!("{} bytes after the end", body.len() - at));
        }
        let [term, vote, commit, first_index, prev_term] = u64s;
        let [voters, learners] = lists;
        Ok(ReplicaState {
            term,
            vote,
            commit,
            first_index,
            prev_term,
            voters,
            learners,
        })
    }

    /// Replace `dir/raft.state` durably.
    pub fn save(&self, dir: &Path) -> Result<(), StateError> {
        Ok(durable::replace(dir, FILE_NAME, &self.encode())?)
    }

    /// `dir/raft.state`, or None if the replica has never saved one.
    pub fn load(dir: &Path) -> Result<Option<ReplicaState>, StateError> {
        let path = dir.join(FILE_NAME);
        match std::fs::read(&path) {
            Ok(bytes) => {
                ReplicaState::decode(&bytes)
                    .map(Some)
                    .map_err(|why| StateError::Corrupt {
                        path: path.display().to_string(),
                        why,
                    })
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(MetadataError::io("read", &path)(e).into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> ReplicaState {
        ReplicaState {
            term: 7,
            vote: 2,
            commit: 41,
            first_index: 30,
            prev_term: 5,
            voters: vec![1, 2, 3],
            learners: vec![4],
        }
    }

    #[test]
    fn saved_state_loads_back_and_damage_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        assert!(ReplicaState::load(dir.path()).unwrap().is_none());
        sample().save(dir.path()).unwrap();
        assert_eq!(ReplicaState::load(dir.path()).unwrap(), Some(sample()));
        let mut next = sample();
        next.term = 8;
        next.vote = 0;
        next.save(dir.path()).unwrap();
        assert_eq!(ReplicaState::load(dir.path()).unwrap(), Some(next));
        // Every truncation and every flipped byte is refused (CRC, magic or
        // bounds), never a panic.
        let bytes = sample().encode();
        for cut in 0..bytes.len() {
            assert!(ReplicaState::decode(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        for i in 0..bytes.len() {
            let mut d = bytes.clone();
            d[i] ^= 0x40;
            assert!(ReplicaState::decode(&d).is_err(), "flip at {i}");
        }
        std::fs::write(dir.path().join(FILE_NAME), b"SLRST001garbage").unwrap();
        assert!(matches!(
            ReplicaState::load(dir.path()),
            Err(StateError::Corrupt { .. })
        ));
    }

    #[test]
    fn a_lying_member_count_allocates_nothing() {
        let mut body = vec![0u8; 40];
        body.extend_from_slice(&u32::MAX.to_le_bytes());
        let mut bytes = MAGIC.to_vec();
        bytes.extend_from_slice(&crc32c::crc32c(&body).to_le_bytes());
        bytes.extend_from_slice(&body);
        let e = ReplicaState::decode(&bytes).unwrap_err();
        assert!(e.contains("members"), "{e}");
    }
}
