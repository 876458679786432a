//! The journal: what a run decided, kept in SQLite (WAL), so a run that a crash or SIGKILL
//! ended continues where it was (`braid resume RUN`).
//!
//! The loop hands over each entry as it decides: a result it accepted (with what its import
//! found), each assignment, each decision it marks on the timeline (winners, integration
//! steps, conflicts), and the workers that joined. A thread of the journal's own writes
//! them in order and commits each turn of the loop as one transaction; a worker hears that
//! its result is taken only once the result is committed, so it keeps its copy until then.
//! (Measured on `braid-bench scheduler`: a commit per entry in the loop cut 20,500 attempts
//! a second to 6,900; written by the thread, 20,500 with the journal as without it.) A resumed run replays the
//! plan through the same loop; an attempt whose spec it has a result for (the same task,
//! base, prompt, feedback and agent: see [`spec_key`]) gets that result back instead of
//! running again, in the order the results first came, at the times they first came.
//! Merges are dated from their parents (see [`crate::merge`]), so the replay makes the
//! same commits and comes to the same decisions.
//!
//! `synchronous = NORMAL` in WAL mode: a committed entry survives the process being killed
//! (not the machine losing power), at tens of thousands of entries a second.
//!
//! Invariant: a journal that cannot be written never stops a run; the run then says it
//! cannot be resumed.

use std::path::Path;
use std::sync::{Arc, Mutex};

use braid_shared::proto as pb;
use prost::Message;
use rusqlite::{Connection, OptionalExtension, params};

use crate::plan::Plan;
use crate::report::WorkerReport;

/// The journal's file in a run's folder.
pub const FILE: &str = "journal.sqlite";

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS runs (
    run TEXT PRIMARY KEY,
    plan TEXT NOT NULL,
    options TEXT NOT NULL,
    started_at TEXT NOT NULL,
    started_unix_ms INTEGER NOT NULL,
    epoch INTEGER NOT NULL,
    status TEXT
);
CREATE TABLE IF NOT EXISTS results (
    run TEXT NOT NULL,
    seq INTEGER NOT NULL,
    key TEXT NOT NULL,
    task TEXT NOT NULL,
    n INTEGER NOT NULL,
    worker TEXT NOT NULL,
    started_ms INTEGER NOT NULL,
    finished_ms INTEGER NOT NULL,
    outcome TEXT NOT NULL,
    result BLOB NOT NULL,
    PRIMARY KEY (run, seq)
);
CREATE TABLE IF NOT EXISTS events (
    run TEXT NOT NULL,
    seq INTEGER NOT NULL,
    epoch INTEGER NOT NULL,
    at_ms INTEGER NOT NULL,
    kind TEXT NOT NULL,
    task TEXT,
    detail TEXT NOT NULL,
    PRIMARY KEY (run, seq)
);
CREATE TABLE IF NOT EXISTS workers (
    run TEXT NOT NULL,
    id TEXT NOT NULL,
    name TEXT NOT NULL,
    slots INTEGER NOT NULL,
    PRIMARY KEY (run, id)
);
";

/// How the run was started, so it resumes the same way.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct Started {
    /// Local workers and their slots.
    pub workers: u32,
    pub slots: u32,
    /// The planner that made the plan, for `braid run --goal`.
    #[serde(default)]
    pub planner: Option<crate::planner::PlannerReport>,
}

/// A run as the journal keeps it.
#[derive(Debug, Clone)]
pub struct RunRecord {
    pub run: String,
    pub plan: Plan,
    pub started: Started,
    /// When the run first started (RFC 3339) and in Unix milliseconds.
    pub started_at: String,
    pub started_unix_ms: i64,
    /// How many times the run has started: 1, then one more for each resume. Lease ids
    /// carry it, so a lease from before a restart is never taken for a new one.
    pub epoch: u32,
    /// How the run ended; `None` while it has not.
    pub status: Option<String>,
}

/// A result the run accepted.
#[derive(Debug, Clone)]
pub struct Journaled {
    /// Its place in the order results came in.
    pub seq: i64,
    /// The spec it answered (see [`spec_key`]).
    pub key: String,
    /// The task's id and the attempt's number, for people reading the journal.
    pub task: String,
    pub n: u32,
    /// The worker that ran it, and when (milliseconds after the run started).
    pub worker: String,
    pub started_ms: u64,
    pub finished_ms: u64,
    /// What the import of its objects found: the problems that fail it, or why its
    /// objects were refused.
    pub outcome: Result<Vec<String>, String>,
    /// The result, without its pack (its objects are in the repository).
    pub result: pb::AttemptResult,
}

/// What a resumed run starts from.
#[derive(Debug, Clone, Default)]
pub struct Resume {
    /// The run's epoch now.
    pub epoch: u32,
    /// Results in the order they came.
    pub results: Vec<Journaled>,
    /// Workers that served the run before.
    pub workers: Vec<WorkerReport>,
}

/// What names an attempt's spec: a hash of its bytes, without what changes from one
/// assignment to the next (its ports).
pub fn spec_key(spec: &pb::AttemptSpec) -> String {
    let mut spec = spec.clone();
    spec.port_base = 0;
    spec.port_count = 0;
    let bytes = spec.encode_to_vec();
    match gix::objs::compute_hash(gix::hash::Kind::Sha1, gix::objs::Kind::Blob, &bytes) {
        Ok(id) => id.to_string(),
        // Hashing in memory does not fail; were it to, the key only misses.
        Err(_) => String::new(),
    }
}

/// Run after the turn that made it is committed: an answer to a worker.
pub type AfterCommit = Box<dyn FnOnce() + Send>;

/// What the loop hands the journal's thread.
enum Op {
    Result(Box<Journaled>),
    Event {
        seq: i64,
        at_ms: u64,
        kind: String,
        task: Option<String>,
        detail: String,
    },
    Worker(WorkerReport),
    /// The end of the loop's turn: commit, then run these.
    Commit(Vec<AfterCommit>),
}

/// An open journal of one run. The loop hands it entries and the end of each turn; a
/// thread of its own writes them, one transaction per turn, so the loop never waits on
/// the disk, and what must wait for the commit (answering a worker that its result is
/// taken) runs after it.
pub struct Journal {
    tx: Option<std::sync::mpsc::Sender<Op>>,
    thread: Option<std::thread::JoinHandle<()>>,
    epoch: u32,
    next_seq: i64,
    next_event: i64,
    /// Why the journal stopped being written, once it did.
    broken: Arc<Mutex<Option<String>>>,
}

impl std::fmt::Debug for Journal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Journal")
            .field("epoch", &self.epoch)
            .finish_non_exhaustive()
    }
}

fn connect(path: &Path) -> rusqlite::Result<Connection> {
    let conn = Connection::open(path)?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    conn.execute_batch(SCHEMA)?;
    Ok(conn)
}

fn text(e: impl std::fmt::Display) -> String {
    e.to_string()
}

/// The journal's thread: writes what comes, commits at each turn's end.
fn write_all(
    conn: &Connection,
    run: &str,
    epoch: u32,
    rx: &std::sync::mpsc::Receiver<Op>,
    broken: &Mutex<Option<String>>,
) {
    let mut open = false;
    let note = |what: &str, done: rusqlite::Result<()>| {
        if let Err(err) = done {
            let mut broken = broken
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if broken.is_none() {
                tracing::warn!(%err, "could not write the run's journal");
                *broken = Some(format!("could not write the journal ({what}): {err}"));
            }
        }
    };
    for op in rx {
        if !open && !matches!(op, Op::Commit(_)) {
            note("a transaction", conn.execute_batch("BEGIN"));
            open = true;
        }
        match op {
            Op::Result(entry) => {
                let outcome = serde_json::to_string(&entry.outcome).unwrap_or_else(|_| "{}".into());
                let done = conn
                    .prepare_cached(
                        "INSERT INTO results (run, seq, key, task, n, worker, started_ms, finished_ms, outcome, result)
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
                    )
                    .and_then(|mut statement| {
                        statement.execute(params![
                            run,
                            entry.seq,
                            entry.key,
                            entry.task,
                            entry.n,
                            entry.worker,
                            entry.started_ms as i64,
                            entry.finished_ms as i64,
                            outcome,
                            entry.result.encode_to_vec()
                        ])
                    });
                note("a result", done.map(drop));
            }
            Op::Event {
                seq,
                at_ms,
                kind,
                task,
                detail,
            } => {
                let done = conn
                    .prepare_cached(
                        "INSERT INTO events (run, seq, epoch, at_ms, kind, task, detail)
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                    )
                    .and_then(|mut statement| {
                        statement.execute(params![
                            run,
                            seq,
                            epoch,
                            at_ms as i64,
                            kind,
                            task,
                            detail
                        ])
                    });
                note("an event", done.map(drop));
            }
            Op::Worker(worker) => {
                let done = conn.execute(
                    "INSERT OR REPLACE INTO workers (run, id, name, slots) VALUES (?1, ?2, ?3, ?4)",
                    params![run, worker.id, worker.name, worker.slots],
                );
                note("a worker", done.map(drop));
            }
            Op::Commit(after) => {
                if std::mem::take(&mut open) {
                    note("a commit", conn.execute_batch("COMMIT"));
                }
                for then in after {
                    then();
                }
            }
        }
    }
    if open {
        note("a commit", conn.execute_batch("COMMIT"));
    }
}

impl Journal {
    /// Makes the journal of a new run at `path`.
    pub fn create(path: &Path, record: &RunRecord) -> Result<Journal, String> {
        let conn = connect(path).map_err(text)?;
        let plan = serde_json::to_string(&record.plan).map_err(text)?;
        let started = serde_json::to_string(&record.started).map_err(text)?;
        conn.execute(
            "INSERT INTO runs (run, plan, options, started_at, started_unix_ms, epoch, status)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, NULL)",
            params![
                record.run,
                plan,
                started,
                record.started_at,
                record.started_unix_ms,
                record.epoch
            ],
        )
        .map_err(text)?;
        Ok(Journal::start(conn, &record.run, record.epoch, 1, 1))
    }

    fn start(conn: Connection, run: &str, epoch: u32, next_seq: i64, next_event: i64) -> Journal {
        let (tx, rx) = std::sync::mpsc::channel::<Op>();
        let broken = Arc::new(Mutex::new(None));
        let thread = {
            let (run, broken) = (run.to_owned(), Arc::clone(&broken));
            std::thread::Builder::new()
                .name("braid-journal".into())
                .spawn(move || write_all(&conn, &run, epoch, &rx, &broken))
        };
        match thread {
            Ok(thread) => Journal {
                tx: Some(tx),
                thread: Some(thread),
                epoch,
                next_seq,
                next_event,
                broken,
            },
            Err(err) => {
                *broken
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner) =
                    Some(format!("could not start the journal's thread: {err}"));
                Journal {
                    tx: None,
                    thread: None,
                    epoch,
                    next_seq,
                    next_event,
                    broken,
                }
            }
        }
    }

    /// Reads the journal at `path` for resuming its run: the run, with the epoch it
    /// resumes in (one more than before), and what it had done.
    pub fn read(path: &Path) -> Result<(RunRecord, Resume), String> {
        if !path.is_file() {
            return Err(format!("{} does not exist", path.display()));
        }
        let conn = connect(path).map_err(text)?;
        let row = conn
            .query_row(
                "SELECT run, plan, options, started_at, started_unix_ms, epoch, status FROM runs",
                [],
                |row| {
                    Ok((
                        row.get::<_, String>(0)?,
                        row.get::<_, String>(1)?,
                        row.get::<_, String>(2)?,
                        row.get::<_, String>(3)?,
                        row.get::<_, i64>(4)?,
                        row.get::<_, u32>(5)?,
                        row.get::<_, Option<String>>(6)?,
                    ))
                },
            )
            .optional()
            .map_err(text)?
            .ok_or_else(|| "the journal holds no run".to_owned())?;
        let (run, plan, started, started_at, started_unix_ms, epoch, status) = row;
        let plan: Plan = serde_json::from_str(&plan)
            .map_err(|e| format!("the journal's plan cannot be read by this braid: {e}"))?;
        let started: Started = serde_json::from_str(&started).map_err(text)?;
        let epoch = epoch + 1;
        let mut results = Vec::new();
        {
            let mut statement = conn
                .prepare(
                    "SELECT seq, key, task, n, worker, started_ms, finished_ms, outcome, result
                     FROM results WHERE run = ?1 ORDER BY seq",
                )
                .map_err(text)?;
            let rows = statement
                .query_map(params![run], |row| {
                    Ok((
                        row.get::<_, i64>(0)?,
                        row.get::<_, String>(1)?,
                        row.get::<_, String>(2)?,
                        row.get::<_, u32>(3)?,
                        row.get::<_, String>(4)?,
                        row.get::<_, i64>(5)?,
                        row.get::<_, i64>(6)?,
                        row.get::<_, String>(7)?,
                        row.get::<_, Vec<u8>>(8)?,
                    ))
                })
                .map_err(text)?;
            for row in rows {
                let (seq, key, task, n, worker, started_ms, finished_ms, outcome, bytes) =
                    row.map_err(text)?;
                let outcome: Result<Vec<String>, String> =
                    serde_json::from_str(&outcome).map_err(text)?;
                let result = pb::AttemptResult::decode(bytes.as_slice()).map_err(text)?;
                results.push(Journaled {
                    seq,
                    key,
                    task,
                    n,
                    worker,
                    started_ms: started_ms as u64,
                    finished_ms: finished_ms as u64,
                    outcome,
                    result,
                });
            }
        }
        let mut workers = Vec::new();
        {
            let mut statement = conn
                .prepare("SELECT id, name, slots FROM workers WHERE run = ?1 ORDER BY rowid")
                .map_err(text)?;
            let rows = statement
                .query_map(params![run], |row| {
                    Ok(WorkerReport {
                        id: row.get(0)?,
                        name: row.get(1)?,
                        slots: row.get(2)?,
                    })
                })
                .map_err(text)?;
            for row in rows {
                workers.push(row.map_err(text)?);
            }
        }
        let record = RunRecord {
            run,
            plan,
            started,
            started_at,
            started_unix_ms,
            epoch,
            status,
        };
        let resume = Resume {
            epoch,
            results,
            workers,
        };
        Ok((record, resume))
    }

    /// Opens the journal at `path` of run `run` to go on writing it, in epoch `epoch`.
    pub fn reopen(path: &Path, run: &str, epoch: u32) -> Result<Journal, String> {
        let conn = connect(path).map_err(text)?;
        conn.execute(
            "UPDATE runs SET epoch = ?1 WHERE run = ?2",
            params![epoch, run],
        )
        .map_err(text)?;
        let next = |table: &str| -> Result<i64, String> {
            conn.query_row(
                &format!("SELECT COALESCE(MAX(seq), 0) + 1 FROM {table} WHERE run = ?1"),
                params![run],
                |row| row.get(0),
            )
            .map_err(text)
        };
        let (next_seq, next_event) = (next("results")?, next("events")?);
        Ok(Journal::start(conn, run, epoch, next_seq, next_event))
    }

    /// The run's epoch.
    pub fn epoch(&self) -> u32 {
        self.epoch
    }

    /// Why the journal stopped being written, if it did.
    pub fn broken(&self) -> Option<String> {
        self.broken
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    fn send(&self, op: Op) {
        let sent = self.tx.as_ref().is_some_and(|tx| tx.send(op).is_ok());
        if !sent {
            let mut broken = self
                .broken
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if broken.is_none() {
                *broken = Some("the journal's thread is gone".into());
            }
        }
    }

    /// Records a result the run accepted; returns its place in the order.
    pub fn result(&mut self, mut entry: Journaled) -> i64 {
        entry.seq = self.next_seq;
        self.next_seq += 1;
        entry.result.pack.clear();
        let seq = entry.seq;
        self.send(Op::Result(Box::new(entry)));
        seq
    }

    /// Records a decision or transition: `kind` (`assigned`, `winner`, `integrated`, …),
    /// the task it concerns, a sentence.
    pub fn event(&mut self, at_ms: u64, kind: &str, task: Option<&str>, detail: &str) {
        let seq = self.next_event;
        self.next_event += 1;
        self.send(Op::Event {
            seq,
            at_ms,
            kind: kind.to_owned(),
            task: task.map(str::to_owned),
            detail: detail.to_owned(),
        });
    }

    /// Records a worker that joined the run.
    pub fn worker(&mut self, worker: &WorkerReport) {
        self.send(Op::Worker(worker.clone()));
    }

    /// Ends the loop's turn: what it wrote is committed, and then `after` runs (with no
    /// journal thread, at once).
    pub fn commit(&mut self, after: Vec<AfterCommit>) {
        match &self.tx {
            Some(tx) => {
                if let Err(std::sync::mpsc::SendError(Op::Commit(after))) =
                    tx.send(Op::Commit(after))
                {
                    for then in after {
                        then();
                    }
                }
            }
            None => {
                for then in after {
                    then();
                }
            }
        }
    }

    /// Writes everything handed over and stops the thread.
    pub async fn finish(&mut self) {
        self.tx = None;
        if let Some(thread) = self.thread.take() {
            let _ = tokio::task::spawn_blocking(move || thread.join()).await;
        }
    }
}

/// Records in the journal at `path` that run `run` ended with `status`, so it is not
/// resumed; a journal that cannot be written is only worth a warning now.
pub fn end(path: &Path, run: &str, status: &str) {
    let ended = connect(path).and_then(|conn| {
        conn.execute(
            "UPDATE runs SET status = ?1 WHERE run = ?2",
            params![status, run],
        )
    });
    if let Err(err) = ended {
        tracing::warn!(%err, "could not record the run's end in its journal");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_spec_keeps_its_key_whatever_its_ports_and_the_order_of_its_maps() {
        let mut spec = pb::AttemptSpec {
            task_id: "t".into(),
            attempt: 1,
            base_commit: "a".repeat(40),
            agent: Some(pb::AgentSpec {
                env: [
                    ("B".to_owned(), "2".to_owned()),
                    ("A".to_owned(), "1".to_owned()),
                ]
                .into_iter()
                .collect(),
                ..Default::default()
            }),
            ..Default::default()
        };
        let key = spec_key(&spec);
        assert_eq!(key.len(), 40);
        spec.port_base = 20_040;
        spec.port_count = 20;
        assert_eq!(spec_key(&spec), key);
        spec.feedback = "the unit check failed".into();
        assert_ne!(spec_key(&spec), key);
    }
}
