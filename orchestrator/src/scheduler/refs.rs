//! Branch records, written by a thread of their own.
//!
//! Every accepted result with a commit gets its attempt's branch, and every winner its
//! task's; each is a few files (the ref, its lock, its reflog, their folders). Written in
//! the event loop, they were most of the loop's time per result, and every other result
//! waited behind them (see `cargo run --release -p braid-bench -- scheduler`). So the loop
//! hands each move to this writer and goes on; the writer makes whatever has piled up in
//! one transaction. Moves keep their order, so a winner's branch moves from where the
//! loop last put it. The scheduler waits for the writer before it reports, so every branch
//! named in report.json exists when braid exits; a move that fails fails the run.

use std::sync::mpsc;
use std::thread::JoinHandle;

use crate::merge::{BranchMove, Merger};

/// Most moves in one transaction.
const BATCH: usize = 256;

/// The writer: a channel in, a thread that owns its own handle on the repository.
#[derive(Debug)]
pub struct RefWriter {
    tx: Option<mpsc::Sender<BranchMove>>,
    thread: Option<JoinHandle<Vec<String>>>,
}

impl RefWriter {
    /// Starts the writer; `merger` should be a handle of its own, so it never waits on the
    /// loop's merges.
    pub fn start(merger: Merger) -> Self {
        let (tx, rx) = mpsc::channel::<BranchMove>();
        let thread = std::thread::Builder::new()
            .name("braid-refs".into())
            .spawn(move || write_all(&merger, &rx));
        match thread {
            Ok(thread) => RefWriter {
                tx: Some(tx),
                thread: Some(thread),
            },
            Err(err) => {
                // No thread: `send` makes each move at once, in the caller.
                tracing::warn!(%err, "could not start the branch writer; writing branches inline");
                RefWriter {
                    tx: None,
                    thread: None,
                }
            }
        }
    }

    /// Queues a move; with no thread, makes it now through `merger`.
    pub fn send(&self, merger: &Merger, branch: BranchMove) -> Result<(), String> {
        match &self.tx {
            Some(tx) => match tx.send(branch) {
                Ok(()) => Ok(()),
                Err(mpsc::SendError(branch)) => set_one(merger, &branch),
            },
            None => set_one(merger, &branch),
        }
    }

    /// Waits until every queued move is made; returns the moves that failed, in words.
    pub async fn finish(&mut self) -> Vec<String> {
        self.tx.take();
        let Some(thread) = self.thread.take() else {
            return Vec::new();
        };
        tokio::task::spawn_blocking(move || thread.join())
            .await
            .map_err(|e| e.to_string())
            .and_then(|joined| joined.map_err(|_| "the branch writer panicked".to_owned()))
            .unwrap_or_else(|e| vec![e])
    }
}

fn set_one(merger: &Merger, branch: &BranchMove) -> Result<(), String> {
    merger
        .set_refs(std::slice::from_ref(branch))
        .map_err(|e| format!("could not record branch {}: {e}", short(&branch.refname)))
}

fn short(refname: &str) -> &str {
    refname.strip_prefix("refs/heads/").unwrap_or(refname)
}

/// The thread: takes what has piled up, writes it in one transaction; when that fails,
/// one by one, so each failure names its branch.
fn write_all(merger: &Merger, rx: &mpsc::Receiver<BranchMove>) -> Vec<String> {
    let mut failures = Vec::new();
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        batch.extend(rx.try_iter().take(BATCH - 1));
        if merger.set_refs(&batch).is_ok() {
            continue;
        }
        for branch in &batch {
            if let Err(why) = set_one(merger, branch) {
                failures.push(why);
            }
        }
    }
    failures
}

#[cfg(test)]
mod tests {
    use super::*;
    use braid_tests::TestRepo;

    #[tokio::test]
    async fn every_move_is_made_in_order_and_failures_are_named() {
        let repo = TestRepo::init();
        let first = repo.git(&["rev-parse", "HEAD"]);
        let second = repo.commit(&[("a.txt", "a\n")], "second");
        let merger = Merger::open(&repo.path).unwrap();
        let mut writer = RefWriter::start(Merger::open(&repo.path).unwrap());
        let set = |name: &str, commit: &str, old: Option<&str>| BranchMove {
            refname: format!("refs/heads/braid/run/{name}"),
            commit: commit.to_owned(),
            old: old.map(str::to_owned),
        };
        for n in 0..50 {
            writer
                .send(&merger, set(&format!("t/{n}"), &first, None))
                .unwrap();
        }
        writer.send(&merger, set("t/winner", &first, None)).unwrap();
        writer
            .send(&merger, set("t/winner", &second, Some(&first)))
            .unwrap();
        // Created twice: the second must fail, and say which branch.
        writer.send(&merger, set("t/7", &second, None)).unwrap();
        let failures = writer.finish().await;
        assert_eq!(failures.len(), 1, "{failures:?}");
        assert!(failures[0].contains("braid/run/t/7"), "{failures:?}");
        assert_eq!(repo.git(&["rev-parse", "braid/run/t/7"]), first);
        assert_eq!(repo.git(&["rev-parse", "braid/run/t/49"]), first);
        assert_eq!(repo.git(&["rev-parse", "braid/run/t/winner"]), second);
        let refs = repo.git(&["for-each-ref", "--format=%(refname)", "refs/heads/braid"]);
        assert_eq!(refs.lines().count(), 51);
    }
}
