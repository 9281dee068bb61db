//! Any bytes as the body of the server port's apply RPC: decoding a `Write` answers or refuses,
//! never panics, and never yields what a caller may not send (the CA's state, a batch: the
//! `Write` type has no such variant); a decoded write survives a round trip through its own
//! encoding (what a follower forwards is what the leader decodes), and applying the command it
//! becomes to a store (twice, as a resent write would be) answers without panicking, leaves
//! every read answerable, and leaves a snapshot that restores.
#![no_main]

use libfuzzer_sys::fuzz_target;
use trellis_rpc::Write;
use trellis_state::{Command, Query, Store};

fuzz_target!(|data: &[u8]| {
    let Ok(write) = serde_json::from_slice::<Write>(data) else {
        return;
    };
    let encoded = serde_json::to_vec(&write).expect("a decoded write encodes");
    let again: Write = serde_json::from_slice(&encoded).expect("its own encoding decodes");
    assert_eq!(again, write, "a write changed on a round trip");
    let cmd = Command::from(write);
    assert!(
        !matches!(cmd, Command::CaSet { .. } | Command::Batch { .. }),
        "a caller's write became a command only servers make"
    );
    let store = Store::new("dc1");
    let _ = store.apply(1, cmd.clone());
    let _ = store.apply(2, cmd);
    for q in [Query::CaRoots, Query::CatalogServices, Query::CatalogNodes] {
        let _ = store.query(&q);
    }
    // What it left restores into another store (a snapshot a new member installs).
    let restored = Store::new("dc1");
    restored
        .restore_bytes(&store.snapshot_bytes())
        .expect("a store's own snapshot restores");
});
