//! A Raft database file with foreign bytes in it is refused at open with the documented error
//! (the path and redb's reason), never a panic, wherever the bytes land; a file that opens
//! reads back everything that was written.

use std::panic::AssertUnwindSafe;
use std::path::Path;

use redb::{ReadableDatabase, ReadableTable};

use crate::db::{get_meta, open_db, put_meta, LOGS};

const PAGE: usize = 4096;
const ENTRIES: u64 = 2000;

fn log_value(index: u64) -> Vec<u8> {
    format!("{index:08}-")
        .into_bytes()
        .into_iter()
        .cycle()
        .take(200 + (index as usize * 37) % 300)
        .collect()
}

fn snapshot_value() -> Vec<u8> {
    (0..20_000u32).map(|i| (i % 251) as u8).collect()
}

/// A database like a server's: a node ID, a vote, a snapshot and a log spanning many pages.
/// Returns the node ID, the file cleanly closed, and a copy taken while it was still open (what
/// a crash leaves).
fn write_database(path: &Path) -> (u64, Vec<u8>, Vec<u8>) {
    let db = open_db(path).unwrap();
    let id = crate::node_id(&db).unwrap();
    for chunk in 0..ENTRIES / 100 {
        let tx = db.begin_write().unwrap();
        {
            let mut t = tx.open_table(LOGS).unwrap();
            for index in chunk * 100..(chunk + 1) * 100 {
                t.insert(index, log_value(index).as_slice()).unwrap();
            }
        }
        tx.commit().unwrap();
    }
    put_meta(
        &db,
        &[("vote", b"{\"term\":3}"), ("snapshot", &snapshot_value())],
    )
    .unwrap();
    let crashed = std::fs::read(path).unwrap();
    drop(db);
    (id, std::fs::read(path).unwrap(), crashed)
}

/// Opens the file and reads everything back through the crate's own reads; `Ok` only when
/// all of it is what [`write_database`] wrote. With `crashed`, redb's crash recovery may fall
/// back to the commit before the last (it cannot tell a damaged last commit from a torn
/// one), which holds the whole log but not the last commit's vote and snapshot.
fn open_and_verify(path: &Path, id: u64, crashed: bool) -> Result<(), String> {
    let db = open_db(path).map_err(|e| e.to_string())?;
    assert_eq!(crate::node_id(&db).unwrap(), id, "node ID changed");
    let vote = get_meta(&db, "vote").unwrap();
    let snapshot = get_meta(&db, "snapshot").unwrap();
    if !(crashed && vote.is_none() && snapshot.is_none()) {
        assert_eq!(vote.as_deref(), Some(&b"{\"term\":3}"[..]));
        assert_eq!(snapshot, Some(snapshot_value()));
    }
    let rx = db.begin_read().unwrap();
    let logs = rx.open_table(LOGS).unwrap();
    let mut next = 0;
    for row in logs.iter().unwrap() {
        let (k, v) = row.unwrap();
        assert_eq!(k.value(), next, "log entry missing");
        assert_eq!(
            v.value(),
            log_value(next).as_slice(),
            "log entry {next} changed"
        );
        next += 1;
    }
    assert_eq!(next, ENTRIES, "log entries missing");
    Ok(())
}

/// xorshift64: the "random bytes", the same every run.
struct Bytes(u64);

impl Bytes {
    fn fill(&mut self, out: &mut [u8]) {
        for b in out {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            *b = self.0 as u8;
        }
    }
}

/// One page of random bytes at offsets across the file (page-aligned, the header included,
/// and straddling pages), in a cleanly closed file and in a crash image: each copy either
/// opens with its records intact (the bytes hit a free page) or is refused with
/// "cannot open Raft database <path>: ..."; redb never panics. Most copies are refused.
/// (Before the open verified the file, most clean copies panicked: "Invalid page type byte".)
#[test]
fn a_page_of_random_bytes_is_refused_with_the_path_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let (id, clean, crashed) = write_database(&dir.path().join("raft.redb"));
    let pages = clean.len() / PAGE;
    assert!(pages > 100, "the database spans {pages} pages");
    let mut offsets: Vec<usize> = (0..pages).step_by(5).map(|p| p * PAGE).collect();
    offsets.extend([1, PAGE / 2, 3 * PAGE + 1000, (pages / 2) * PAGE + 77]);
    offsets.extend((1..pages - 1).step_by(23).map(|p| p * PAGE + 2048));
    let mut rng = Bytes(0x9E37_79B9_7F4A_7C15);
    let mut refused = 0;
    let mut tried = 0;
    for (image, good) in [("clean", &clean), ("crashed", &crashed)] {
        for &at in &offsets {
            let mut bytes = good.clone();
            let end = (at + PAGE).min(bytes.len());
            rng.fill(&mut bytes[at..end]);
            let path = dir.path().join(format!("{image}-{at}.redb"));
            std::fs::write(&path, &bytes).unwrap();
            let outcome = std::panic::catch_unwind(AssertUnwindSafe(|| {
                open_and_verify(&path, id, image == "crashed")
            }));
            tried += 1;
            match outcome {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    refused += 1;
                    let want = format!("cannot open Raft database {}: ", path.display());
                    assert!(e.starts_with(&want), "{image} file, bytes at {at}: {e}");
                }
                Err(panic) => {
                    let msg = panic
                        .downcast_ref::<String>()
                        .map(String::as_str)
                        .or_else(|| panic.downcast_ref::<&str>().copied())
                        .unwrap_or("");
                    panic!("{image} file, random bytes at offset {at}: panicked: {msg}");
                }
            }
            std::fs::remove_file(&path).unwrap();
        }
    }
    assert!(
        refused * 2 > tried,
        "only {refused} of {tried} corrupted files refused"
    );
    // The untouched file still opens.
    let path = dir.path().join("untouched.redb");
    std::fs::write(&path, &clean).unwrap();
    open_and_verify(&path, id, false).unwrap();
}
