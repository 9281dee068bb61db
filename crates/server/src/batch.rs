//! Write batching: commands that arrive while a proposal is in flight go to Raft together.
//!
//! openraft 0.9 waits for each log append's fsync before taking the next, so one proposal per
//! write caps throughput at one fsync per write. The batcher keeps one proposal in flight and
//! gathers everything that arrives meanwhile into the next one (a [`Command::Batch`]); a lone
//! write is proposed as itself, so an idle server adds no latency.

use tokio::sync::{mpsc, oneshot};
use trellis_raft::{Raft, ServerNode};
use trellis_state::{Applied, Command};

use trellis_rpc::ApplyResponse;

/// Most commands in one Raft entry.
const MAX_BATCH: usize = 256;

/// What became of a submitted command.
pub(crate) enum Outcome {
    /// Committed and applied.
    Done(ApplyResponse),
    /// This server is not the leader; send it there (if known).
    Forward(Option<ServerNode>),
    /// Raft failed (stopped, storage error).
    Failed(String),
}

type Submission = (Command, oneshot::Sender<Outcome>);

/// Handle to the batching task.
pub(crate) struct Batcher {
    tx: mpsc::UnboundedSender<Submission>,
}

impl Batcher {
    /// Starts the batching task for `raft`.
    pub(crate) fn start(raft: Raft) -> Batcher {
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(run(raft, rx));
        Batcher { tx }
    }

    /// Proposes `cmd` with whatever else is waiting, and returns its own outcome.
    pub(crate) async fn submit(&self, cmd: Command) -> Outcome {
        let (done, rx) = oneshot::channel();
        if self.tx.send((cmd, done)).is_err() {
            return Outcome::Failed("write batcher stopped".into());
        }
        rx.await
            .unwrap_or_else(|_| Outcome::Failed("write batcher stopped".into()))
    }
}

async fn run(raft: Raft, mut rx: mpsc::UnboundedReceiver<Submission>) {
    while let Some(first) = rx.recv().await {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(s) => batch.push(s),
                Err(_) => break,
            }
        }
        let (mut cmds, waiters): (Vec<Command>, Vec<oneshot::Sender<Outcome>>) =
            batch.into_iter().unzip();
        let single = cmds.len() == 1;
        let proposal = if single {
            cmds.pop().expect("one command")
        } else {
            Command::Batch { commands: cmds }
        };
        match raft
            .client_write(trellis_raft::LoggedCommand::new(&proposal))
            .await
        {
            Ok(resp) => {
                let index = resp.log_id.index;
                let results = match (single, resp.data) {
                    (true, applied) => vec![applied],
                    (false, Applied::Batch(results)) if results.len() == waiters.len() => results,
                    (false, other) => {
                        vec![
                            Applied::Rejected(format!("unexpected batch outcome {other:?}"));
                            waiters.len()
                        ]
                    }
                };
                for (waiter, applied) in waiters.into_iter().zip(results) {
                    let _ = waiter.send(Outcome::Done(ApplyResponse { applied, index }));
                }
            }
            Err(openraft::error::RaftError::APIError(
                openraft::error::ClientWriteError::ForwardToLeader(fwd),
            )) => {
                for waiter in waiters {
                    let _ = waiter.send(Outcome::Forward(fwd.leader_node.clone()));
                }
            }
            Err(e) => {
                let msg = e.to_string();
                for waiter in waiters {
                    let _ = waiter.send(Outcome::Failed(msg.clone()));
                }
            }
        }
    }
}
