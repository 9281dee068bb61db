//! openraft's storage conformance suite against the redb log store and the state machine.

use openraft::testing::{StoreBuilder, Suite};
use openraft::StorageError;
use trellis_state::Store;

use crate::{open_db, LogStore, StateMachine, TypeConfig};

struct Builder;

impl StoreBuilder<TypeConfig, LogStore, StateMachine, tempfile::TempDir> for Builder {
    async fn build(
        &self,
    ) -> Result<(tempfile::TempDir, LogStore, StateMachine), StorageError<u64>> {
        let dir = tempfile::tempdir().expect("temp dir");
        let db = open_db(&dir.path().join("raft.redb")).expect("db opens");
        let sm = StateMachine::open(db.clone(), Store::new("dc1"))?;
        Ok((dir, LogStore::new(db), sm))
    }
}

#[test]
fn openraft_storage_suite() {
    Suite::test_all(Builder).unwrap();
}
