//! A replicated partition's Raft state that is not in its log: the term,
//! the vote, the commit index, the log's first index with the term before
//! it (what retention compacted away), and the group's configuration.
//!
//! Two small files per partition directory, `raft.state.0` and
//! `raft.state.1`, written alternately through the storage seam
//! ([`Disk`], so the simulated disk can crash them) and synced: a save
//! overwrites the older slot, so a crash that tears it leaves the other,
//! and a load takes the valid slot with the higher sequence number (the
//! superblock scheme of TigerBeetle, without a rename that the seam does
//! not offer). Raft's promises need the term and vote on disk before a
//! vote or an append is answered; the commit index may lag (it is learnt
//! again from the leader).
//!
//! Layout of each slot (all integers little-endian):
//! ```text
//! u64 magic "SLRST003" | u32 crc32c (of everything after it) | u64 sequence
//! | u64 term | u64 vote | u64 commit | u64 first_index | u64 prev_term
//! | u32 voters | voters x u64 | u32 learners | learners x u64      (at most 64 members)
//! | u32 voters_outgoing | x u64 | u32 learners_next | x u64 | u8 auto_leave | u64 conf_index
//! | u64 start_offset | u8 resetting
//! | u32 producer_count | producer_count x producer entry
//! ```
//! The producer entries (layout in [`super::snapshot_data`], the same as
//! a snapshot's) are the idempotent-producer table as of `start_offset`:
//! the batches before it are gone, and a replica rebuilds its log's
//! table from these and the batches after it (after a restart or a
//! suffix truncation), and sends them in the snapshots it makes.
//! `start_offset` is where entry `first_index`'s frame starts (the log
//! start once retention or a snapshot moved it); `resetting` is set while
//! a snapshot's log restart is under way (a restart finishes it).
//! The configuration is the one in force after applying entry
//! `conf_index` (0: the group's initial one); `commit` never passes what
//! was applied, so a restart re-applies exactly the configuration changes
//! after `conf_index`. Magic "SLRST003" (read, never written) ends after
//! `resetting`: no producer table. Magic "SLRST002" (read, never written)
//! ends after the learners: no joint configuration, `conf_index` 0.
//!
//! Bytes read back are checked like bytes from a socket: a bad magic, a
//! CRC mismatch or a lying count is [`StateError::Corrupt`], never a panic
//! or a large allocation.

use crate::storage::file::{read_small_file, write_small_file, Disk};
use crate::storage::producer_state::{decode_table, encode_table, ProducerEntry, TableBytesError};
use std::path::Path;

/// The two slots' file names.
pub const FILE_NAMES: [&str; 2] = ["raft.state.0", "raft.state.1"];
const MAGIC: &[u8; 8] = b"SLRST004";
const MAGIC_V3: &[u8; 8] = b"SLRST003";
const MAGIC_V2: &[u8; 8] = b"SLRST002";
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
    /// In a joint configuration: the outgoing voters, and learners that
    /// become learners once it is left (raft-rs's `ConfState`).
    pub voters_outgoing: Vec<u64>,
    pub learners_next: Vec<u64>,
    pub auto_leave: bool,
    /// The entry whose configuration change this is (0: the initial one).
    pub conf_index: u64,
    /// The offset where entry `first_index`'s frame starts.
    pub start_offset: u64,
    /// A snapshot's log restart at `start_offset` is under way.
    pub resetting: bool,
    /// The idempotent producers as of `start_offset`, by producer id.
    pub start_producers: Vec<(i64, ProducerEntry)>,
}

impl ReplicaState {
    pub fn conf_state(&self) -> raft::eraftpb::ConfState {
        raft::eraftpb::ConfState {
            voters: self.voters.clone(),
            learners: self.learners.clone(),
            voters_outgoing: self.voters_outgoing.clone(),
            learners_next: self.learners_next.clone(),
            auto_leave: self.auto_leave,
            ..Default::default()
        }
    }

    pub fn set_conf_state(&mut self, cs: &raft::eraftpb::ConfState, index: u64) {
        self.voters = cs.voters.clone();
        self.learners = cs.learners.clone();
        self.voters_outgoing = cs.voters_outgoing.clone();
        self.learners_next = cs.learners_next.clone();
        self.auto_leave = cs.auto_leave;
        self.conf_index = index;
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("{path}: {why}")]
    Corrupt {
        path: String,
        #[source]
        why: StateDecodeError,
    },
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// Why one slot's bytes are not a replica state. A slot torn by a crash
/// shows up here too; [`StateFile::load`] ignores it when the other slot
/// is valid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StateDecodeError {
    #[error("not a replica state file: {len} bytes, bad magic or under 12 bytes")]
    NotAStateFile { len: usize },
    #[error("CRC mismatch: stored {stored:#010x}, body gives {computed:#010x}")]
    Crc { stored: u32, computed: u32 },
    #[error("the body ends at byte {have}, a field needs {need}")]
    Truncated { need: usize, have: usize },
    #[error("{count} members, at most {max}")]
    TooManyMembers { count: u32, max: u32 },
    #[error("flag {field} is {value}, not 0 or 1")]
    BadFlag { field: &'static str, value: u8 },
    #[error("producer table: {0}")]
    Table(#[from] TableBytesError),
    #[error("{extra} bytes after the end")]
    Trailing { extra: usize },
}

/// The state's two slots in one directory, and which one was written last.
/// Lifecycle: loaded once when the replica opens, then every save goes
/// through it, on the partition's shard.
pub struct StateFile<D: Disk> {
    disk: D,
    dir: std::path::PathBuf,
    /// Sequence number of the last save (0: none yet).
    seq: u64,
    /// Which slots' directory entries are durable.
    exists: [bool; 2],
}

impl<D: Disk> StateFile<D> {
    /// Read both slots; the valid one with the higher sequence wins. None
    /// when neither exists (a new replica). One damaged slot next to a
    /// valid one is a save torn by a crash, and is ignored; two damaged
    /// slots are an error.
    pub async fn load(
        disk: D,
        dir: &Path,
    ) -> Result<(StateFile<D>, Option<ReplicaState>), StateError> {
        let mut best: Option<(u64, ReplicaState)> = None;
        let mut damaged = Vec::new();
        let mut exists = [false; 2];
        for (slot, name) in FILE_NAMES.iter().enumerate() {
            let path = dir.join(name);
            if !disk.exists(&path) {
                continue;
            }
            exists[slot] = true;
            let bytes = read_small_file(&disk, &path)
                .await
                .map_err(|source| StateError::Io {
                    path: path.display().to_string(),
                    source,
                })?;
            match ReplicaState::decode(&bytes) {
                Ok((seq, st)) => {
                    if best.as_ref().is_none_or(|(s, _)| seq > *s) {
                        best = Some((seq, st));
                    }
                }
                Err(why) => damaged.push(StateError::Corrupt {
                    path: path.display().to_string(),
                    why,
                }),
            }
        }
        if best.is_none() && damaged.len() == FILE_NAMES.len() {
            return Err(damaged.remove(0));
        }
        let seq = best.as_ref().map_or(0, |(s, _)| *s);
        let file = StateFile {
            disk,
            dir: dir.to_path_buf(),
            seq,
            exists,
        };
        Ok((file, best.map(|(_, st)| st)))
    }

    /// Save `st` durably into the older slot. A slot's first save also
    /// syncs the directory: until then a crash may forget the file (the
    /// replica simulation found a vote forgotten that way, and two leaders
    /// in one term).
    pub async fn save(&mut self, st: &ReplicaState) -> Result<(), StateError> {
        let seq = self.seq + 1;
        let slot = (seq % 2) as usize;
        let path = self.dir.join(FILE_NAMES[slot]);
        let io = |source| StateError::Io {
            path: path.display().to_string(),
            source,
        };
        write_small_file(&self.disk, &path, &st.encode(seq))
            .await
            .map_err(io)?;
        if !self.exists[slot] {
            self.disk.sync_dir(&self.dir).await.map_err(io)?;
            self.exists[slot] = true;
        }
        self.seq = seq;
        Ok(())
    }
}

impl ReplicaState {
    /// The slot bytes, with sequence number `seq`.
    pub fn encode(&self, seq: u64) -> Vec<u8> {
        for list in [
            &self.voters,
            &self.learners,
            &self.voters_outgoing,
            &self.learners_next,
        ] {
            assert!(
                list.len() <= MAX_MEMBERS as usize,
                "a group of at most {MAX_MEMBERS} members"
            );
        }
        let mut body = Vec::with_capacity(64);
        for v in [
            seq,
            self.term,
            self.vote,
            self.commit,
            self.first_index,
            self.prev_term,
        ] {
            body.extend_from_slice(&v.to_le_bytes());
        }
        for list in [
            &self.voters,
            &self.learners,
            &self.voters_outgoing,
            &self.learners_next,
        ] {
            body.extend_from_slice(&(list.len() as u32).to_le_bytes());
            for id in list {
                body.extend_from_slice(&id.to_le_bytes());
            }
        }
        body.push(self.auto_leave as u8);
        body.extend_from_slice(&self.conf_index.to_le_bytes());
        body.extend_from_slice(&self.start_offset.to_le_bytes());
        body.push(self.resetting as u8);
        encode_table(&self.start_producers, &mut body);
        let mut out = Vec::with_capacity(12 + body.len());
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&crate::format::crc::crc32c(&body).to_le_bytes());
        out.extend_from_slice(&body);
        out
    }

    /// A slot's sequence number and state.
    pub fn decode(bytes: &[u8]) -> Result<(u64, ReplicaState), StateDecodeError> {
        if bytes.len() < 12
            || (&bytes[..8] != MAGIC && &bytes[..8] != MAGIC_V3 && &bytes[..8] != MAGIC_V2)
        {
            return Err(StateDecodeError::NotAStateFile { len: bytes.len() });
        }
        let v4 = &bytes[..8] == MAGIC;
        let v3 = v4 || &bytes[..8] == MAGIC_V3;
        let crc = u32::from_le_bytes(bytes[8..12].try_into().expect("4 bytes"));
        let body = &bytes[12..];
        let computed = crate::format::crc::crc32c(body);
        if computed != crc {
            return Err(StateDecodeError::Crc {
                stored: crc,
                computed,
            });
        }
        let mut at = 0usize;
        let mut take = |n: usize| -> Result<&[u8], StateDecodeError> {
            let s = body.get(at..at + n).ok_or(StateDecodeError::Truncated {
                need: at + n,
                have: body.len(),
            })?;
            at += n;
            Ok(s)
        };
        let mut u64s = [0u64; 6];
        for v in &mut u64s {
            *v = u64::from_le_bytes(take(8)?.try_into().expect("8 bytes"));
        }
        let mut lists = [Vec::new(), Vec::new(), Vec::new(), Vec::new()];
        let count = if v3 { 4 } else { 2 };
        for list in &mut lists[..count] {
            let n = u32::from_le_bytes(take(4)?.try_into().expect("4 bytes"));
            if n > MAX_MEMBERS {
                return Err(StateDecodeError::TooManyMembers {
                    count: n,
                    max: MAX_MEMBERS,
                });
            }
            for _ in 0..n {
                list.push(u64::from_le_bytes(take(8)?.try_into().expect("8 bytes")));
            }
        }
        let flag = |field: &'static str, value: u8| match value {
            0 => Ok(false),
            1 => Ok(true),
            value => Err(StateDecodeError::BadFlag { field, value }),
        };
        let auto_leave = if v3 {
            flag("auto_leave", take(1)?[0])?
        } else {
            false
        };
        let mut tail = [0u64; 2];
        let mut resetting = false;
        if v3 {
            tail[0] = u64::from_le_bytes(take(8)?.try_into().expect("8 bytes"));
            tail[1] = u64::from_le_bytes(take(8)?.try_into().expect("8 bytes"));
            resetting = flag("resetting", take(1)?[0])?;
        }
        let [conf_index, start_offset] = tail;
        let mut start_producers = Vec::new();
        if v4 {
            let (table, used) = decode_table(&body[at..])?;
            start_producers = table;
            at += used;
        }
        if at != body.len() {
            return Err(StateDecodeError::Trailing {
                extra: body.len() - at,
            });
        }
        let [seq, term, vote, commit, first_index, prev_term] = u64s;
        let [voters, learners, voters_outgoing, learners_next] = lists;
        Ok((
            seq,
            ReplicaState {
                term,
                vote,
                commit,
                first_index,
                prev_term,
                voters,
                learners,
                voters_outgoing,
                learners_next,
                auto_leave,
                conf_index,
                start_offset,
                resetting,
                start_producers,
            },
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::sim::SimDisk;

    fn sample() -> ReplicaState {
        ReplicaState {
            term: 7,
            vote: 2,
            commit: 41,
            first_index: 30,
            prev_term: 5,
            voters: vec![1, 2, 3],
            learners: vec![4],
            voters_outgoing: vec![1, 2, 5],
            learners_next: vec![],
            auto_leave: true,
            conf_index: 40,
            start_offset: 1234,
            resetting: true,
            start_producers: vec![(
                77,
                ProducerEntry {
                    epoch: 1,
                    batches: [crate::storage::producer_state::SeqBatch {
                        first_seq: 5,
                        last_seq: 7,
                        base_offset: 1200,
                        last_offset: 1202,
                    }]
                    .into(),
                    last_seen_offset: 1202,
                    last_timestamp: 99,
                },
            )],
        }
    }

    fn run<F: std::future::Future<Output = ()>>(f: F) {
        glommio::LocalExecutorBuilder::default()
            .make()
            .unwrap()
            .run(f);
    }

    #[test]
    fn saved_state_loads_back_and_a_torn_save_leaves_the_older_one() {
        run(async {
            let disk = SimDisk::new(7);
            let dir = Path::new("/p");
            disk.create_dir_all(dir).unwrap();
            let (mut f, st) = StateFile::load(disk.clone(), dir).await.unwrap();
            assert!(st.is_none());
            f.save(&sample()).await.unwrap();
            let mut next = sample();
            next.term = 8;
            next.vote = 0;
            f.save(&next).await.unwrap();
            // Both saves survive a crash: the slots' directory entries were synced.
            disk.crash();
            let (_, st) = StateFile::load(disk.clone(), dir).await.unwrap();
            assert_eq!(st, Some(next.clone()));
            // Damage the newer slot (as a torn write would): the older one wins.
            let newer = dir.join(FILE_NAMES[0]);
            let mut bytes = disk.contents(&newer).unwrap();
            bytes[20] ^= 1;
            disk.set_contents(&newer, bytes);
            let (mut f, st) = StateFile::load(disk.clone(), dir).await.unwrap();
            assert_eq!(st, Some(sample()));
            // The next save replaces the damaged slot and wins.
            let mut third = next.clone();
            third.term = 9;
            f.save(&third).await.unwrap();
            let (_, st) = StateFile::load(disk.clone(), dir).await.unwrap();
            assert_eq!(st, Some(third));
            // Both slots damaged: an error naming a file, not a fresh replica.
            for name in FILE_NAMES {
                disk.set_contents(&dir.join(name), b"SLRST002garbage".to_vec());
            }
            assert!(matches!(
                StateFile::load(disk.clone(), dir).await,
                Err(StateError::Corrupt { .. })
            ));
        });
    }

    #[test]
    fn every_cut_and_flipped_byte_is_refused() {
        let bytes = sample().encode(3);
        assert_eq!(ReplicaState::decode(&bytes).unwrap(), (3, sample()));
        for cut in 0..bytes.len() {
            assert!(ReplicaState::decode(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        for i in 0..bytes.len() {
            let mut d = bytes.clone();
            d[i] ^= 0x40;
            assert!(ReplicaState::decode(&d).is_err(), "flip at {i}");
        }
    }

    #[test]
    fn a_version_2_file_reads_as_the_initial_configuration() {
        let mut body = Vec::new();
        for v in [3u64, 7, 2, 41, 30, 5] {
            body.extend_from_slice(&v.to_le_bytes());
        }
        for list in [&[1u64, 2, 3][..], &[][..]] {
            body.extend_from_slice(&(list.len() as u32).to_le_bytes());
            for id in list {
                body.extend_from_slice(&id.to_le_bytes());
            }
        }
        let mut bytes = MAGIC_V2.to_vec();
        bytes.extend_from_slice(&crate::format::crc::crc32c(&body).to_le_bytes());
        bytes.extend_from_slice(&body);
        let (seq, st) = ReplicaState::decode(&bytes).unwrap();
        assert_eq!(seq, 3);
        assert_eq!(st.voters, vec![1, 2, 3]);
        assert_eq!((st.conf_index, st.auto_leave), (0, false));
        assert!(st.voters_outgoing.is_empty() && st.learners_next.is_empty());
    }

    #[test]
    fn a_version_3_file_reads_with_no_producer_table() {
        let v4 = sample().encode(3);
        // Version 3 is version 4 without the table (its last 4 + 32 + 24
        // bytes here): same fields, a new magic and CRC.
        let body = &v4[12..v4.len() - (4 + 32 + 24)];
        let mut bytes = MAGIC_V3.to_vec();
        bytes.extend_from_slice(&crate::format::crc::crc32c(body).to_le_bytes());
        bytes.extend_from_slice(body);
        let (seq, st) = ReplicaState::decode(&bytes).unwrap();
        assert_eq!(seq, 3);
        assert_eq!(
            st,
            ReplicaState {
                start_producers: Vec::new(),
                ..sample()
            }
        );
    }

    #[test]
    fn a_lying_member_count_allocates_nothing() {
        let mut body = vec![0u8; 48];
        body.extend_from_slice(&u32::MAX.to_le_bytes());
        let mut bytes = MAGIC.to_vec();
        bytes.extend_from_slice(&crate::format::crc::crc32c(&body).to_le_bytes());
        bytes.extend_from_slice(&body);
        let e = ReplicaState::decode(&bytes).unwrap_err();
        assert_eq!(
            e,
            StateDecodeError::TooManyMembers {
                count: u32::MAX,
                max: MAX_MEMBERS
            }
        );
    }
}
