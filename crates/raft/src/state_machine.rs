//! The Raft state machine: committed commands applied to the state store, snapshots in redb.

use std::io::Cursor;

use openraft::storage::{RaftStateMachine, Snapshot};
use openraft::{
    Entry, EntryPayload, LogId, OptionalSend, RaftSnapshotBuilder, SnapshotMeta, StorageError,
    StorageIOError, StoredMembership,
};
use serde::{Deserialize, Serialize};
use trellis_state::{Applied, Store};

use crate::db::{get_meta, put_meta, RaftDb};
use crate::{ServerNode, TypeConfig};

const SNAPSHOT_META: &str = "snapshot_meta";
const SNAPSHOT_DATA: &str = "snapshot_data";

/// What a snapshot's bytes hold besides the store: the Raft position they correspond to.
#[derive(Serialize, Deserialize)]
struct SnapshotFile {
    meta: SnapshotMeta<u64, ServerNode>,
    #[serde(with = "serde_bytes_as_str")]
    store: Vec<u8>,
}

/// Stores the embedded store snapshot (itself JSON) as a string to avoid a byte-array encoding.
mod serde_bytes_as_str {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(std::str::from_utf8(v).map_err(serde::ser::Error::custom)?)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        Ok(String::deserialize(d)?.into_bytes())
    }
}

/// Applies committed entries to a [`Store`] and keeps the latest snapshot durable.
pub struct StateMachine {
    store: Store,
    db: RaftDb,
    last_applied: Option<LogId<u64>>,
    membership: StoredMembership<u64, ServerNode>,
}

impl StateMachine {
    /// Opens the state machine: restores the store from the persisted snapshot if there is one;
    /// openraft then re-applies the committed log after it.
    pub fn open(db: RaftDb, store: Store) -> Result<StateMachine, StorageError<u64>> {
        let mut sm = StateMachine {
            store,
            db,
            last_applied: None,
            membership: StoredMembership::default(),
        };
        let saved =
            get_meta(&sm.db, SNAPSHOT_DATA).map_err(|e| StorageIOError::read_snapshot(None, &e))?;
        if let Some(bytes) = saved {
            sm.load(&bytes)?;
        }
        Ok(sm)
    }

    fn load(&mut self, bytes: &[u8]) -> Result<SnapshotMeta<u64, ServerNode>, StorageError<u64>> {
        let file: SnapshotFile =
            serde_json::from_slice(bytes).map_err(|e| StorageIOError::read_snapshot(None, &e))?;
        self.store
            .restore_bytes(&file.store)
            .map_err(|e| StorageIOError::read_snapshot(Some(file.meta.signature()), &e))?;
        self.last_applied = file.meta.last_log_id;
        self.membership = file.meta.last_membership.clone();
        Ok(file.meta)
    }
}

/// Builds a snapshot from a copy taken when openraft asked for the builder.
pub struct SnapshotBuilder {
    db: RaftDb,
    store: trellis_state::Snapshot,
    last_applied: Option<LogId<u64>>,
    membership: StoredMembership<u64, ServerNode>,
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError<u64>> {
        let snapshot_id = match self.last_applied {
            Some(l) => format!("{}-{}-{}", l.leader_id.term, l.index, rand_suffix()),
            None => format!("0-0-{}", rand_suffix()),
        };
        let meta = SnapshotMeta {
            last_log_id: self.last_applied,
            last_membership: self.membership.clone(),
            snapshot_id,
        };
        let store = serde_json::to_vec(&self.store)
            .map_err(|e| StorageIOError::write_snapshot(None, &e))?;
        let bytes = serde_json::to_vec(&SnapshotFile {
            meta: meta.clone(),
            store,
        })
        .map_err(|e| StorageIOError::write_snapshot(None, &e))?;
        let db = self.db.clone();
        let data = bytes.clone();
        let meta_bytes = serde_json::to_vec(&meta).expect("snapshot meta serialises");
        tokio::task::spawn_blocking(move || {
            put_meta(&db, &[(SNAPSHOT_META, &meta_bytes), (SNAPSHOT_DATA, &data)])
        })
        .await
        .map_err(|e| {
            StorageIOError::write_snapshot(
                Some(meta.signature()),
                &std::io::Error::other(e.to_string()),
            )
        })?
        .map_err(|e| StorageIOError::write_snapshot(Some(meta.signature()), &e))?;
        tracing::info!(snapshot = %meta.snapshot_id, "snapshot written");
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(bytes)),
        })
    }
}

fn rand_suffix() -> u64 {
    use std::time::{SystemTime, UNIX_EPOCH};
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogId<u64>>, StoredMembership<u64, ServerNode>), StorageError<u64>> {
        Ok((self.last_applied, self.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Applied>, StorageError<u64>>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut out = Vec::new();
        for entry in entries {
            let index = entry.log_id.index;
            self.last_applied = Some(entry.log_id);
            match entry.payload {
                EntryPayload::Blank => {
                    self.store.advance(index);
                    out.push(Applied::Done);
                }
                EntryPayload::Normal(logged) => match logged.decode() {
                    Ok(cmd) => out.push(self.store.apply(index, cmd)),
                    Err(unknown) if unknown.ignorable => {
                        tracing::warn!(index, command_type = %unknown.type_name, reason = %unknown.reason, "skipping a command this server cannot apply (marked safe to skip)");
                        self.store.advance(index);
                        out.push(Applied::Skipped(unknown.type_name));
                    }
                    Err(unknown) => {
                        tracing::error!(index, command_type = %unknown.type_name, reason = %unknown.reason, "refusing to apply a command this server does not know; upgrade this server");
                        let error = std::io::Error::other(format!(
                            "log entry {index}: command type {:?} is not known to this server ({}); upgrade it",
                            unknown.type_name, unknown.reason
                        ));
                        return Err(StorageIOError::apply(
                            entry.log_id,
                            openraft::AnyError::new(&error),
                        )
                        .into());
                    }
                },
                EntryPayload::Membership(m) => {
                    self.membership = StoredMembership::new(Some(entry.log_id), m);
                    self.store.advance(index);
                    out.push(Applied::Done);
                }
            }
        }
        Ok(out)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        SnapshotBuilder {
            db: self.db.clone(),
            store: self.store.snapshot(),
            last_applied: self.last_applied,
            membership: self.membership.clone(),
        }
    }

    async fn begin_receiving_snapshot(
        &mut self,
    ) -> Result<Box<Cursor<Vec<u8>>>, StorageError<u64>> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<u64, ServerNode>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError<u64>> {
        let bytes = snapshot.into_inner();
        let bytes_len = bytes.len();
        let loaded = self.load(&bytes)?;
        if loaded.last_log_id != meta.last_log_id {
            return Err(StorageIOError::read_snapshot(
                Some(meta.signature()),
                &std::io::Error::other("snapshot data does not match its metadata"),
            )
            .into());
        }
        let meta_bytes = serde_json::to_vec(meta).expect("snapshot meta serialises");
        let db = self.db.clone();
        let sig = meta.signature();
        tokio::task::spawn_blocking(move || {
            put_meta(
                &db,
                &[(SNAPSHOT_META, &meta_bytes), (SNAPSHOT_DATA, &bytes)],
            )
        })
        .await
        .map_err(|e| {
            StorageIOError::write_snapshot(Some(sig.clone()), &std::io::Error::other(e.to_string()))
        })?
        .map_err(|e| StorageIOError::write_snapshot(Some(sig), &e))?;
        tracing::info!(last_log_index = ?meta.last_log_id.map(|l| l.index), bytes = bytes_len, "installed a snapshot from the leader");
        Ok(())
    }

    async fn get_current_snapshot(
        &mut self,
    ) -> Result<Option<Snapshot<TypeConfig>>, StorageError<u64>> {
        let db = self.db.clone();
        let saved = tokio::task::spawn_blocking(move || get_meta(&db, SNAPSHOT_DATA))
            .await
            .map_err(|e| {
                StorageIOError::read_snapshot(None, &std::io::Error::other(e.to_string()))
            })?
            .map_err(|e| StorageIOError::read_snapshot(None, &e))?;
        let Some(bytes) = saved else { return Ok(None) };
        let file: SnapshotFile =
            serde_json::from_slice(&bytes).map_err(|e| StorageIOError::read_snapshot(None, &e))?;
        Ok(Some(Snapshot {
            meta: file.meta,
            snapshot: Box::new(Cursor::new(bytes)),
        }))
    }
}
