//! Any bytes as the body of the server port's apply RPC: decoding a `Command` answers or
//! refuses, never panics; a decoded command survives a round trip through its own encoding
//! (what a follower forwards is what the leader decodes), and applying it to a store (twice,
//! as a resent write would be) answers without panicking, leaves every read answerable, and
//! leaves a snapshot that restores.
#![no_main]

use libfuzzer_sys::fuzz_target;
use trellis_state::{Command, Query, Store};

fuzz_target!(|data: &[u8]| {
    let Ok(cmd) = serde_json::from_slice::<Command>(data) else {
        return;
    };
    let encoded = serde_json::to_vec(&cmd).expect("a decoded command encodes");
    let again: Command = serde_json::from_slice(&encoded).expect("its own encoding decodes");
    assert_eq!(again, cmd, "a command changed on a round trip");
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
