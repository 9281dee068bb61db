//! The Raft log in redb.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::sync::Arc;

use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{Entry, LogId, OptionalSend, RaftLogReader, StorageError, StorageIOError, Vote};
use parking_lot::Mutex;
use redb::{ReadableDatabase, ReadableTable};
use tokio::sync::{mpsc, oneshot};

use crate::db::{get_meta, put_meta, RaftDb, LOGS, META};
use crate::TypeConfig;

const VOTE: &str = "vote";
const COMMITTED: &str = "committed";
const LAST_PURGED: &str = "last_purged";

/// A write run on the writer thread.
type Work = Box<dyn FnOnce(&redb::Database) -> Result<(), redb::Error> + Send>;

/// Encoded entries of one append, by log id.
type Rows = Vec<(LogId<u64>, Vec<u8>)>;

/// Work for the writer thread, executed in order.
enum Op {
    /// Entries to make durable; the callback fires after the fsync.
    Append {
        rows: Rows,
        done: LogFlushed<TypeConfig>,
    },
    /// Any other write (vote, truncate, purge, committed), answered when done.
    Exec {
        work: Work,
        done: oneshot::Sender<Result<(), redb::Error>>,
    },
}

/// Entries appended but not yet durable, readable at once as openraft requires.
type Pending = Arc<Mutex<BTreeMap<u64, Entry<TypeConfig>>>>;

/// The log store; clones share the database and serve as log readers.
///
/// Appends return as soon as the entries are readable and are made durable by one writer
/// thread that commits every append waiting at that moment in a single fsynced transaction
/// (group commit), then tells openraft they are flushed. All writes go through that thread, in
/// order, so votes, truncations and purges stay serialised with appends.
#[derive(Clone)]
pub struct LogStore {
    db: RaftDb,
    pending: Pending,
    committed: Committed,
    ops: mpsc::UnboundedSender<Op>,
}

/// The latest committed log id openraft reported, not yet written.
type Committed = Arc<Mutex<Option<LogId<u64>>>>;

impl LogStore {
    /// A log store over an open Raft database; starts its writer thread.
    pub fn new(db: RaftDb) -> LogStore {
        let (ops, rx) = mpsc::unbounded_channel();
        let pending: Pending = Arc::default();
        let committed: Committed = Arc::default();
        let writer = Writer {
            db: db.clone(),
            pending: pending.clone(),
            committed: committed.clone(),
        };
        std::thread::Builder::new()
            .name("raft-log-writer".into())
            .spawn(move || writer.run(rx))
            .expect("log writer thread starts");
        LogStore {
            db,
            pending,
            committed,
            ops,
        }
    }

    /// Runs blocking reads off the async threads.
    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&redb::Database) -> Result<T, redb::Error> + Send + 'static,
    ) -> Result<T, redb::Error> {
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || f(&db))
            .await
            .unwrap_or_else(|e| Err(redb::Error::Corrupted(format!("storage task failed: {e}"))))
    }

    /// Runs a write on the writer thread, after every write queued before it.
    async fn exec(
        &self,
        work: impl FnOnce(&redb::Database) -> Result<(), redb::Error> + Send + 'static,
    ) -> Result<(), redb::Error> {
        let (done, rx) = oneshot::channel();
        let stopped = || redb::Error::Corrupted("the Raft log writer has stopped".into());
        self.ops
            .send(Op::Exec {
                work: Box::new(work),
                done,
            })
            .map_err(|_| stopped())?;
        rx.await.map_err(|_| stopped())?
    }
}

/// The writer thread's state.
struct Writer {
    db: RaftDb,
    pending: Pending,
    committed: Committed,
}

impl Writer {
    fn run(self, mut rx: mpsc::UnboundedReceiver<Op>) {
        let mut next = rx.blocking_recv();
        while let Some(op) = next.take() {
            match op {
                Op::Exec { work, done } => {
                    let _ = done.send(work(&self.db));
                    next = rx.blocking_recv();
                }
                Op::Append { rows, done } => {
                    let mut batch = vec![(rows, done)];
                    // Take every append already waiting; stop at the first other op, which
                    // runs after this batch.
                    loop {
                        match rx.try_recv() {
                            Ok(Op::Append { rows, done }) => batch.push((rows, done)),
                            Ok(other) => {
                                next = Some(other);
                                break;
                            }
                            Err(_) => break,
                        }
                    }
                    self.flush(batch);
                    if next.is_none() {
                        next = rx.blocking_recv();
                    }
                }
            }
        }
    }

    fn flush(&self, batch: Vec<(Rows, LogFlushed<TypeConfig>)>) {
        let write = || -> Result<(), redb::Error> {
            let tx = self.db.begin_write()?;
            {
                let mut table = tx.open_table(LOGS)?;
                for (rows, _) in &batch {
                    for (id, bytes) in rows {
                        table.insert(id.index, bytes.as_slice())?;
                    }
                }
                let committed = *self.committed.lock();
                if let Some(bytes) = committed.and_then(|c| encode(&Some(c)).ok()) {
                    tx.open_table(META)?.insert(COMMITTED, bytes.as_slice())?;
                }
            }
            tx.commit()?;
            Ok(())
        };
        match write() {
            Ok(()) => {
                tracing::trace!(appends = batch.len(), "log batch flushed");
                let mut pending = self.pending.lock();
                for (rows, _) in &batch {
                    for (id, _) in rows {
                        // A later append may have replaced this index; keep that one.
                        if pending.get(&id.index).is_some_and(|e| e.log_id == *id) {
                            pending.remove(&id.index);
                        }
                    }
                }
                drop(pending);
                for (_, done) in batch {
                    done.log_io_completed(Ok(()));
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "Raft log write failed");
                for (_, done) in batch {
                    done.log_io_completed(Err(std::io::Error::other(e.to_string())));
                }
            }
        }
    }
}

fn decode<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, redb::Error> {
    serde_json::from_slice(bytes)
        .map_err(|e| redb::Error::Corrupted(format!("undecodable Raft record: {e}")))
}

/// Encodes a Raft record. Failure (a type that JSON cannot hold) is a storage error, never a
/// panic in the Raft core.
fn encode<T: serde::Serialize>(v: &T) -> Result<Vec<u8>, std::io::Error> {
    serde_json::to_vec(v).map_err(std::io::Error::other)
}

fn bounds(range: &impl RangeBounds<u64>) -> (u64, Option<u64>) {
    let start = match range.start_bound() {
        Bound::Included(s) => *s,
        Bound::Excluded(s) => s + 1,
        Bound::Unbounded => 0,
    };
    let end = match range.end_bound() {
        Bound::Included(e) => Some(*e),
        Bound::Excluded(0) => return (1, Some(0)),
        Bound::Excluded(e) => Some(e - 1),
        Bound::Unbounded => None,
    };
    (start, end)
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry<TypeConfig>>, StorageError<u64>> {
        let (start, end) = bounds(&range);
        let pending = self.pending.clone();
        let mut entries = self
            .blocking(move |db| {
                let rx = db.begin_read()?;
                let table = rx.open_table(LOGS)?;
                let mut out: Vec<Entry<TypeConfig>> = Vec::new();
                if end.is_some_and(|e| e < start) {
                    return Ok(out);
                }
                let iter = match end {
                    Some(e) => table.range(start..=e)?,
                    None => table.range(start..)?,
                };
                for item in iter {
                    let (_, v) = item?;
                    out.push(decode(v.value())?);
                }
                Ok(out)
            })
            .await
            .map_err(|e| StorageIOError::read_logs(&e))?;
        // Entries not yet durable are newer than whatever redb holds at their index.
        let pending = pending.lock();
        if !pending.is_empty() && end.is_none_or(|e| e >= start) {
            let upper = end.map(Bound::Included).unwrap_or(Bound::Unbounded);
            let mut merged: BTreeMap<u64, Entry<TypeConfig>> =
                entries.drain(..).map(|e| (e.log_id.index, e)).collect();
            for (idx, e) in pending.range((Bound::Included(start), upper)) {
                merged.insert(*idx, e.clone());
            }
            entries = merged.into_values().collect();
        }
        Ok(entries)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError<u64>> {
        self.blocking(|db| {
            let last_purged: Option<LogId<u64>> =
                get_meta(db, LAST_PURGED)?.map(|b| decode(&b)).transpose()?;
            let rx = db.begin_read()?;
            let table = rx.open_table(LOGS)?;
            let last = match table.last()? {
                Some((_, v)) => Some(decode::<Entry<TypeConfig>>(v.value())?.log_id),
                None => last_purged,
            };
            Ok(LogState {
                last_purged_log_id: last_purged,
                last_log_id: last,
            })
        })
        .await
        .map_err(|e| StorageIOError::read_logs(&e).into())
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<u64>) -> Result<(), StorageError<u64>> {
        let bytes = encode(vote).map_err(|e| StorageIOError::write_vote(&e))?;
        self.exec(move |db| put_meta(db, &[(VOTE, &bytes)]))
            .await
            .map_err(|e| StorageIOError::write_vote(&e).into())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<u64>>, StorageError<u64>> {
        self.blocking(|db| get_meta(db, VOTE)?.map(|b| decode(&b)).transpose())
            .await
            .map_err(|e| StorageIOError::read_vote(&e).into())
    }

    async fn save_committed(
        &mut self,
        committed: Option<LogId<u64>>,
    ) -> Result<(), StorageError<u64>> {
        // Kept in memory and written by the writer thread with the next batch of log entries:
        // a committed pointer that lags after a crash only means re-learning it from the
        // leader, and a separate transaction per commit would serialise every write behind it.
        *self.committed.lock() = committed;
        Ok(())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId<u64>>, StorageError<u64>> {
        if let Some(c) = *self.committed.lock() {
            return Ok(Some(c));
        }
        self.blocking(|db| {
            Ok(get_meta(db, COMMITTED)?
                .map(|b| decode(&b))
                .transpose()?
                .flatten())
        })
        .await
        .map_err(|e| StorageIOError::read(&e).into())
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), StorageError<u64>>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let entries: Vec<Entry<TypeConfig>> = entries.into_iter().collect();
        let mut rows = Vec::with_capacity(entries.len());
        for e in &entries {
            rows.push((
                e.log_id,
                encode(e).map_err(|err| StorageIOError::write_logs(&err))?,
            ));
        }
        {
            let mut pending = self.pending.lock();
            for e in entries {
                pending.insert(e.log_id.index, e);
            }
        }
        self.ops
            .send(Op::Append {
                rows,
                done: callback,
            })
            .map_err(|_| {
                StorageIOError::write_logs(&std::io::Error::other(
                    "the Raft log writer has stopped",
                ))
                .into()
            })
    }

    async fn truncate(&mut self, log_id: LogId<u64>) -> Result<(), StorageError<u64>> {
        self.pending.lock().retain(|idx, _| *idx < log_id.index);
        self.exec(move |db| {
            let tx = db.begin_write()?;
            {
                let mut table = tx.open_table(LOGS)?;
                table.retain_in(log_id.index.., |_, _| false)?;
            }
            tx.commit()?;
            Ok(())
        })
        .await
        .map_err(|e| StorageIOError::write_logs(&e).into())
    }

    async fn purge(&mut self, log_id: LogId<u64>) -> Result<(), StorageError<u64>> {
        let bytes = encode(&log_id).map_err(|e| StorageIOError::write_logs(&e))?;
        self.pending.lock().retain(|idx, _| *idx > log_id.index);
        self.exec(move |db| {
            let tx = db.begin_write()?;
            {
                let mut meta = tx.open_table(META)?;
                meta.insert(LAST_PURGED, bytes.as_slice())?;
                let mut table = tx.open_table(LOGS)?;
                table.retain_in(..=log_id.index, |_, _| false)?;
            }
            tx.commit()?;
            Ok(())
        })
        .await
        .map_err(|e| StorageIOError::write_logs(&e).into())
    }
}
