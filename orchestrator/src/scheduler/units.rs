//! Slow work the loop hands off: trial merges, the new base of an early rebase, each
//! integration step, the files `vote` compares and the diffs a judge is shown. Each runs as
//! a unit of its own and reports back as an [`Event::Done`], as the merges of a task's deps
//! already did; meanwhile the loop goes on taking results, heartbeats and interrupts.
//!
//! A unit reads and writes only objects, which are written whole or not at all, so one that
//! an interrupt aborts leaves nothing behind that a later unit could trip on.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::sync::Arc;

use braid_shared::task;

use super::{Event, Scheduler};
use crate::merge::footprint::Footprint;
use crate::merge::{self, MergeError, Merger, PathConflict, Route, Step};
use crate::select;

/// A unit's answer, with the id it was started under.
#[derive(Debug)]
pub struct Done {
    id: u64,
    unit: Unit,
}

#[derive(Debug)]
pub(super) enum Unit {
    /// The trial merges of a new winner with the winners it may meet.
    Trials(Trials),
    /// The merge of a later task's base with an earlier task's winner, to start the later
    /// task again from.
    Rebased(Rebased),
    /// One step of the integration.
    Step(StepDone),
    /// The keys of the passing attempts' changes of a task, for `vote`.
    Votes {
        task: usize,
        /// The attempts the task had when they were read.
        attempts: usize,
        keys: HashMap<u32, u64>,
    },
    /// The diffs of a task's passing attempts, for its judge.
    Diffs {
        task: usize,
        attempts: usize,
        diffs: HashMap<u32, Arc<String>>,
    },
    /// The unit panicked: what it was.
    Panicked(String),
}

/// One side of a trial merge: a task's winner and what it touched against its base.
#[derive(Debug)]
pub(super) struct Side {
    pub(super) task: usize,
    pub(super) base: String,
    pub(super) commit: String,
    /// Known already, or `None` until the unit reads it.
    pub(super) footprint: Option<Arc<Footprint>>,
}

/// A conflict a trial merge foresaw.
#[derive(Debug)]
pub(super) struct Found {
    /// The task that comes first in the DAG's order, and its winner.
    pub(super) first: (usize, String),
    /// The task that comes second.
    pub(super) second: (usize, String),
    pub(super) conflicts: Vec<PathConflict>,
}

#[derive(Debug)]
pub(super) struct Trials {
    /// The task whose new winner was tried.
    pub(super) task: usize,
    /// Footprints read, to keep while the winners stand.
    pub(super) footprints: Vec<Read>,
    pub(super) found: Vec<Found>,
}

#[derive(Debug)]
pub(super) struct Rebased {
    /// The task whose trial merges led here.
    pub(super) task: usize,
    pub(super) found: Found,
    /// The conflicts still to tell after this one.
    pub(super) rest: VecDeque<Found>,
    /// The later task's base the merge started from.
    pub(super) base: String,
    pub(super) outcome: Result<Step, String>,
}

#[derive(Debug)]
pub(super) struct StepDone {
    pub(super) task: usize,
    /// The conflict an earlier step re-ran the task for, if one did.
    pub(super) rebased_for: Option<usize>,
    pub(super) outcome: Result<(Step, Route), MergeError>,
}

impl Scheduler {
    /// Starts `work` as a unit; its answer comes back as an event. Returns the unit's id.
    pub(super) fn offload<F>(&mut self, name: &'static str, work: F) -> u64
    where
        F: Future<Output = Unit> + Send + 'static,
    {
        let id = self.next_unit;
        self.next_unit += 1;
        let events = self.events.clone();
        let work = task::spawn(name, work);
        self.units.insert(id, work.abort_handle());
        // A unit that panicked says so rather than leave the loop waiting for it.
        task::spawn("unit-answer", async move {
            let unit = match work.await {
                Ok(unit) => unit,
                Err(err) if err.is_panic() => Unit::Panicked(format!("{name} failed: {err}")),
                Err(_) => return,
            };
            let _ = events.send(Event::Done(Box::new(Done { id, unit }))).await;
        });
        id
    }

    /// Whether unit `id` is still running.
    pub(super) fn unit_running(&self, id: Option<u64>) -> bool {
        id.is_some_and(|id| self.units.contains_key(&id))
    }

    /// Stops every unit: the run was interrupted, and nothing waits for their answers.
    pub(super) fn abort_units(&mut self) {
        for (_, handle) in self.units.drain() {
            handle.abort();
        }
    }

    /// Takes a unit's answer, unless the unit was aborted.
    pub(super) fn on_done(&mut self, done: Done) {
        if self.units.remove(&done.id).is_none() {
            return;
        }
        match done.unit {
            Unit::Trials(trials) => self.trials_done(trials),
            Unit::Rebased(rebased) => self.rebased(rebased),
            Unit::Step(step) => self.step_done(step),
            Unit::Votes {
                task,
                attempts,
                keys,
            } => {
                self.tasks[task].votes = Some((attempts, keys));
                self.dirty.push(task);
            }
            Unit::Diffs {
                task,
                attempts,
                diffs,
            } => {
                self.tasks[task].diffs = Some((attempts, diffs));
                self.dirty.push(task);
            }
            Unit::Panicked(why) => {
                self.error.get_or_insert(format!("the coordinator's {why}"));
            }
        }
    }
}

/// A footprint read for a task's winner: the task, the commit, what it touched.
pub(super) type Read = (usize, String, Arc<Footprint>);

/// What `side` touched: known already, or read now and added to `read`; `None` when its
/// paths cannot be listed.
fn footprint(merger: &Merger, side: &Side, read: &mut Vec<Read>) -> Option<Arc<Footprint>> {
    if let Some(known) = &side.footprint {
        return Some(Arc::clone(known));
    }
    match merger.changes(&side.base, &side.commit) {
        Ok(changes) => {
            let footprint = Arc::new(Footprint::of(&changes));
            read.push((side.task, side.commit.clone(), Arc::clone(&footprint)));
            Some(footprint)
        }
        Err(err) => {
            tracing::warn!(%err, "could not list a winner's paths");
            None
        }
    }
}

/// Trial-merges `mine` with each of `others` whose footprint meets its own, the one first
/// in the DAG's order as ours (each other's flag: it comes first).
pub(super) async fn trials(merger: Merger, mine: Side, others: Vec<(Side, bool)>) -> Unit {
    let task = mine.task;
    let reader = merger.clone();
    // The other sides that can meet mine, with the footprints read on the way.
    let meeting = tokio::task::spawn_blocking(move || {
        let mut read = Vec::new();
        let Some(own) = footprint(&reader, &mine, &mut read) else {
            return (mine, Vec::new(), read);
        };
        let meeting: Vec<(Side, bool)> = others
            .into_iter()
            .filter(|(other, _)| {
                footprint(&reader, other, &mut read).is_some_and(|theirs| theirs.meets(&own))
            })
            .collect();
        (mine, meeting, read)
    })
    .await;
    let (mine, meeting, footprints) = match meeting {
        Ok(read) => read,
        Err(err) => {
            tracing::warn!(%err, "reading winners' paths stopped");
            return Unit::Trials(Trials {
                task,
                footprints: Vec::new(),
                found: Vec::new(),
            });
        }
    };
    let mut found = Vec::new();
    for (other, other_first) in &meeting {
        let (first, second) = if *other_first {
            (other, &mine)
        } else {
            (&mine, other)
        };
        let merged = match merger.merge(&first.commit, &second.commit).await {
            Ok(merged) => merged,
            Err(err) => {
                tracing::warn!(%err, "a trial merge failed");
                continue;
            }
        };
        if let merge::Verdict::Conflicted { conflicts, .. } = merged.verdict {
            found.push(Found {
                first: (first.task, first.commit.clone()),
                second: (second.task, second.commit.clone()),
                conflicts,
            });
        }
    }
    Unit::Trials(Trials {
        task,
        footprints,
        found,
    })
}

/// Merges `theirs` into the later task's `base`, for it to start again from.
pub(super) async fn rebase_base(
    merger: Merger,
    task: usize,
    found: Found,
    rest: VecDeque<Found>,
    base: String,
    message: String,
) -> Unit {
    let outcome = merger
        .merge_commits(&base, &found.first.1, &message)
        .await
        .map(|(step, _)| step)
        .map_err(|e| e.to_string());
    Unit::Rebased(Rebased {
        task,
        found,
        rest,
        base,
        outcome,
    })
}

/// One integration step: merges `winner` into `current`.
pub(super) async fn step(
    merger: Merger,
    task: usize,
    rebased_for: Option<usize>,
    current: String,
    winner: String,
    message: String,
) -> Unit {
    let outcome = merger.merge_commits(&current, &winner, &message).await;
    Unit::Step(StepDone {
        task,
        rebased_for,
        outcome,
    })
}

/// A passing attempt's change, to read: its number, what it is measured from, its commit.
pub(super) type Change = (u32, String, String);

/// The keys `vote` compares the changes by.
pub(super) async fn votes(
    merger: Merger,
    task: usize,
    attempts: usize,
    changes: Vec<Change>,
) -> Unit {
    let read = tokio::task::spawn_blocking(move || {
        let mut keys = HashMap::new();
        for (n, base, commit) in changes {
            let files = merger.changed_paths(&base, &commit).and_then(|paths| {
                let tree = merger.tree_of(&commit)?;
                paths
                    .into_iter()
                    .map(|p| {
                        let content = merger.read_file(&tree, &p)?;
                        Ok((p, content))
                    })
                    .collect::<Result<Vec<_>, _>>()
            });
            match files {
                Ok(files) => {
                    keys.insert(n, select::change_key(&files));
                }
                Err(err) => tracing::warn!(%err, n, "could not read an attempt's change"),
            }
        }
        keys
    })
    .await;
    Unit::Votes {
        task,
        attempts,
        keys: read.unwrap_or_default(),
    }
}

/// The diffs a judge is shown, as git prints them.
pub(super) async fn diffs(
    git: braid_shared::git::Git,
    task: usize,
    attempts: usize,
    changes: Vec<Change>,
) -> Unit {
    let mut diffs = HashMap::new();
    for (n, base, commit) in changes {
        let args = [
            "diff",
            "--no-color",
            "--no-ext-diff",
            "--no-textconv",
            &base,
            &commit,
        ];
        let diff = match git.run(&args).await {
            Ok(diff) => diff,
            Err(err) => format!("(braid could not show this diff: {err})"),
        };
        diffs.insert(n, Arc::new(diff));
    }
    Unit::Diffs {
        task,
        attempts,
        diffs,
    }
}
