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

mod logged_commands {
    use openraft::storage::RaftStateMachine;
    use openraft::{CommittedLeaderId, Entry, EntryPayload, LogId};
    use serde_json::json;
    use trellis_state::{Applied, Command, Store};

    use crate::{open_memory_db, LoggedCommand, StateMachine, TypeConfig};

    fn entry(index: u64, cmd: LoggedCommand) -> Entry<TypeConfig> {
        Entry {
            log_id: LogId::new(CommittedLeaderId::new(1, 0), index),
            payload: EntryPayload::Normal(cmd),
        }
    }

    fn known() -> Command {
        Command::Batch {
            commands: Vec::new(),
        }
    }

    #[test]
    fn commands_carry_their_type_and_decode_back() {
        let logged = LoggedCommand::new(&known());
        let text = serde_json::to_value(&logged).unwrap();
        assert_eq!(text["Type"], "Batch");
        assert!(text.get("IgnoreUnknown").is_none());
        assert_eq!(logged.decode().unwrap(), known());
        let skippable = LoggedCommand::ignorable(&known());
        assert_eq!(
            serde_json::to_value(&skippable).unwrap()["IgnoreUnknown"],
            true
        );
        assert_eq!(
            skippable.decode().unwrap(),
            known(),
            "a known type still applies"
        );
    }

    #[test]
    fn an_unknown_type_is_reported_with_its_flag() {
        let unknown = LoggedCommand::from_json(json!({"Type": "FromTheFuture", "x": 1}));
        let err = unknown.decode().unwrap_err();
        assert_eq!(err.type_name, "FromTheFuture");
        assert!(!err.ignorable);
        let flagged =
            LoggedCommand::from_json(json!({"Type": "FromTheFuture", "IgnoreUnknown": true}));
        assert!(flagged.decode().unwrap_err().ignorable);
    }

    #[tokio::test]
    async fn the_state_machine_skips_flagged_unknown_commands_and_refuses_others() {
        let store = Store::new("dc1");
        let mut sm = StateMachine::open(open_memory_db().unwrap(), store.clone()).unwrap();
        let out = sm
            .apply(vec![
                entry(1, LoggedCommand::new(&known())),
                entry(
                    2,
                    LoggedCommand::from_json(
                        json!({"Type": "FromTheFuture", "IgnoreUnknown": true}),
                    ),
                ),
            ])
            .await
            .unwrap();
        assert_eq!(out[1], Applied::Skipped("FromTheFuture".into()));
        let (applied, _) = sm.applied_state().await.unwrap();
        assert_eq!(applied.unwrap().index, 2);

        let err = sm
            .apply(vec![entry(
                3,
                LoggedCommand::from_json(json!({"Type": "FromTheFuture"})),
            )])
            .await
            .unwrap_err();
        assert!(err.to_string().contains("FromTheFuture"), "{err}");
    }
}
