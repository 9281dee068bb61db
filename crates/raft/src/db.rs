//! The redb database that holds a server's Raft log, vote, committed pointer and snapshot.

use std::path::Path;
use std::sync::Arc;

use redb::{Database, ReadableDatabase, TableDefinition};

/// Log entries by index, JSON-encoded.
pub(crate) const LOGS: TableDefinition<u64, &[u8]> = TableDefinition::new("raft_log");
/// Small named values: vote, committed, last purged, snapshot meta and data.
pub(crate) const META: TableDefinition<&str, &[u8]> = TableDefinition::new("raft_meta");

/// A shared handle on the Raft database.
pub type RaftDb = Arc<Database>;

/// Why the Raft database could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// redb refused the file (corrupt, locked, or from another format).
    #[error("cannot open Raft database {path}: {source}")]
    Open {
        /// The file.
        path: String,
        /// The cause.
        source: redb::DatabaseError,
    },
    /// A table could not be created or read.
    #[error("Raft database {0}")]
    Table(String),
}

fn ensure_tables(db: &Database) -> Result<(), StorageError> {
    let tx = db
        .begin_write()
        .map_err(|e| StorageError::Table(e.to_string()))?;
    tx.open_table(LOGS)
        .map_err(|e| StorageError::Table(e.to_string()))?;
    tx.open_table(META)
        .map_err(|e| StorageError::Table(e.to_string()))?;
    tx.commit()
        .map_err(|e| StorageError::Table(e.to_string()))?;
    // A read proves the file is usable before the server starts on it.
    let rx = db
        .begin_read()
        .map_err(|e| StorageError::Table(e.to_string()))?;
    rx.open_table(META)
        .map_err(|e| StorageError::Table(e.to_string()))?;
    Ok(())
}

/// Opens (or creates) the database file at `path`; commits are fsynced.
///
/// The open verifies the whole file (redb's integrity check on open: the checksum of every
/// page of the committed trees). A plain open trusts a cleanly closed file and reads its pages
/// unchecked, so one page of foreign bytes made redb panic ("Invalid page type byte") during
/// open or the first read; verified, such a file is refused with [`StorageError::Open`] naming
/// the path, and every later read sees only checked pages. The cost is one read of the file
/// per start (the log is purged behind each snapshot, so the file stays small).
pub fn open_db(path: &Path) -> Result<RaftDb, StorageError> {
    let db = Database::builder()
        .set_check_integrity_on_open(true)
        .create(path)
        .map_err(|source| StorageError::Open {
            path: path.display().to_string(),
            source,
        })?;
    ensure_tables(&db)?;
    Ok(Arc::new(db))
}

/// An in-memory database for a dev agent: the same code path, nothing on disk.
pub fn open_memory_db() -> Result<RaftDb, StorageError> {
    let db = Database::builder()
        .create_with_backend(redb::backends::InMemoryBackend::new())
        .map_err(|source| StorageError::Open {
            path: "memory".into(),
            source,
        })?;
    ensure_tables(&db)?;
    Ok(Arc::new(db))
}

/// Reads one META value.
pub(crate) fn get_meta(db: &Database, key: &str) -> Result<Option<Vec<u8>>, redb::Error> {
    let rx = db.begin_read()?;
    let table = rx.open_table(META)?;
    Ok(table.get(key)?.map(|v| v.value().to_vec()))
}

/// Writes META values in one durable transaction.
pub(crate) fn put_meta(db: &Database, items: &[(&str, &[u8])]) -> Result<(), redb::Error> {
    let tx = db.begin_write()?;
    {
        let mut table = tx.open_table(META)?;
        for (k, v) in items {
            table.insert(*k, *v)?;
        }
    }
    tx.commit()?;
    Ok(())
}

/// This server's Raft node ID: made at random once and kept in the database.
pub fn node_id(db: &Database) -> Result<u64, StorageError> {
    const KEY: &str = "node_id";
    let err = |e: redb::Error| StorageError::Table(e.to_string());
    if let Some(bytes) = get_meta(db, KEY).map_err(err)? {
        let arr: [u8; 8] = bytes
            .as_slice()
            .try_into()
            .map_err(|_| StorageError::Table("node_id record is corrupt".into()))?;
        return Ok(u64::from_be_bytes(arr));
    }
    let id = rand_u64();
    put_meta(db, &[(KEY, &id.to_be_bytes())]).map_err(err)?;
    Ok(id)
}

fn rand_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    // RandomState is seeded from the OS; mix in the time so two calls differ.
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    h.finish() | 1
}
