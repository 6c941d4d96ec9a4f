//! The durable log: sled 0.34, one tree, key = seq (big-endian u64), value = encoded event.
//!
//! Appends go in with `apply_batch` (atomic) and become durable at the next `flush`; the
//! ledger acknowledges a write only after a flush that covers it (group commit).
//! The next seq is derived from the last key, never from sled's `generate_id` (which jumps after
//! a crash), so seqs stay dense.

use crate::event::codec::{self, CodecError};
use crate::event::{Event, Hash};
use crate::model::Seq;
use std::path::Path;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Another process holds the database.
    #[error("the ledger at {0} is held by another process")]
    Locked(String),
    #[error("ledger storage error: {0}")]
    Sled(#[from] sled::Error),
    #[error("event {seq} is unreadable: {err}")]
    Corrupt { seq: Seq, err: CodecError },
    #[error("cannot open the ledger at {path}: {err}")]
    Open { path: String, err: String },
}

pub struct Store {
    db: sled::Db,
}

fn key(seq: Seq) -> [u8; 8] {
    seq.to_be_bytes()
}

fn seq_of(k: &[u8]) -> Seq {
    let mut b = [0u8; 8];
    b.copy_from_slice(&k[..8]);
    u64::from_be_bytes(b)
}

impl Store {
    pub fn open(dir: &Path) -> Result<Store, StoreError> {
        std::fs::create_dir_all(dir).map_err(|e| StoreError::Open {
            path: dir.display().to_string(),
            err: e.to_string(),
        })?;
        let cfg = sled::Config::new()
            .path(dir.join("db"))
            // Large enough that a million-event log folds without re-reading evicted pages.
            .cache_capacity(1 << 30)
            // Durability is ours: flush is called before every acknowledgement.
            .flush_every_ms(None);
        match cfg.open() {
            Ok(db) => Ok(Store { db }),
            Err(sled::Error::Io(e))
                if e.kind() == std::io::ErrorKind::WouldBlock || e.to_string().contains("lock") =>
            {
                Err(StoreError::Locked(dir.display().to_string()))
            }
            Err(e) => Err(StoreError::Open {
                path: dir.display().to_string(),
                err: e.to_string(),
            }),
        }
    }

    /// The last stored event's seq and hash (0 and zeros for an empty log).
    pub fn last(&self) -> Result<(Seq, Hash), StoreError> {
        match self.db.last()? {
            None => Ok((0, [0; 32])),
            Some((k, v)) => {
                let seq = seq_of(&k);
                let ev =
                    codec::decode(&v, false).map_err(|err| StoreError::Corrupt { seq, err })?;
                Ok((seq, ev.hash))
            }
        }
    }

    /// Write encoded events atomically (not yet durable: call [`Store::flush`]).
    pub fn append(&self, records: &[(Seq, Vec<u8>)]) -> Result<(), StoreError> {
        let mut batch = sled::Batch::default();
        for (seq, bytes) in records {
            batch.insert(&key(*seq), bytes.as_slice());
        }
        self.db.apply_batch(batch)?;
        Ok(())
    }

    pub fn flush(&self) -> Result<(), StoreError> {
        self.db.flush()?;
        Ok(())
    }

    pub fn get(&self, seq: Seq, verify: bool) -> Result<Option<Event>, StoreError> {
        match self.db.get(key(seq))? {
            None => Ok(None),
            Some(v) => codec::decode(&v, verify)
                .map(Some)
                .map_err(|err| StoreError::Corrupt { seq, err }),
        }
    }

    /// Raw records from `from` to `to` inclusive, in order.
    pub fn raw_range(
        &self,
        from: Seq,
        to: Seq,
    ) -> impl Iterator<Item = Result<(Seq, sled::IVec), StoreError>> {
        self.db
            .range(key(from)..=key(to))
            .map(|r| r.map(|(k, v)| (seq_of(&k), v)).map_err(StoreError::from))
    }

    /// Decoded events from `from` to `to` inclusive.
    pub fn range(
        &self,
        from: Seq,
        to: Seq,
        verify: bool,
    ) -> impl Iterator<Item = Result<Event, StoreError>> {
        self.raw_range(from, to).map(move |r| {
            let (seq, v) = r?;
            codec::decode(&v, verify).map_err(|err| StoreError::Corrupt { seq, err })
        })
    }

    pub fn is_empty(&self) -> bool {
        self.db.is_empty()
    }

    /// The latest state snapshot: `(seq it is as of, bytes)`. Snapshots live in their own tree;
    /// the log never depends on them.
    pub fn snapshot(&self) -> Result<Option<(Seq, sled::IVec)>, StoreError> {
        let tree = self.db.open_tree("snapshots")?;
        Ok(tree.last()?.map(|(k, v)| (seq_of(&k), v)))
    }

    /// Replace the snapshot with one as of `seq` (durable when this returns).
    pub fn put_snapshot(&self, seq: Seq, bytes: &[u8]) -> Result<(), StoreError> {
        let tree = self.db.open_tree("snapshots")?;
        tree.insert(key(seq), bytes)?;
        for old in tree.range(..key(seq)).keys() {
            tree.remove(old?)?;
        }
        tree.flush()?;
        Ok(())
    }

    /// Overwrite a stored record as is. Only for tests that simulate tampering.
    #[doc(hidden)]
    pub fn tamper(&self, seq: Seq, bytes: &[u8]) -> Result<(), StoreError> {
        self.db.insert(key(seq), bytes)?;
        self.db.flush()?;
        Ok(())
    }
}
