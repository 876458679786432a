//! Live progress: what the scheduler tells the person watching, and how it is shown.
//!
//! On a terminal, coloured status lines; otherwise plain lines with a timestamp, one event
//! each, for logs and CI. Everything goes to standard error so `--json` output stays clean.

use std::io::{IsTerminal, Write};

use tokio::sync::mpsc;

/// Something worth telling while a run goes on.
#[derive(Debug, Clone)]
pub enum Note {
    /// A worker registered.
    WorkerJoined {
        /// Its id.
        id: String,
        /// Its name.
        name: String,
        /// Its slots.
        slots: u32,
    },
    /// A worker was lost.
    WorkerLost {
        /// Its id.
        id: String,
        /// Why.
        reason: String,
    },
    /// A task's attempts are ready to run from this base.
    TaskStarted {
        /// The task.
        task: String,
        /// Its base commit.
        base: String,
        /// How many attempts.
        attempts: u32,
    },
    /// An attempt went to a worker.
    Assigned {
        /// The task.
        task: String,
        /// The attempt.
        n: u32,
        /// The worker.
        worker: String,
    },
    /// A line the agent printed.
    Output {
        /// The task.
        task: String,
        /// The attempt.
        n: u32,
        /// The line.
        line: String,
    },
    /// An attempt ended.
    AttemptDone {
        /// The task.
        task: String,
        /// The attempt.
        n: u32,
        /// Its status word.
        status: String,
        /// What to add.
        detail: String,
        /// What it spent, in a few words; empty when the agent reported nothing.
        spent: String,
    },
    /// An attempt's worker was lost, or the provider refused it for now.
    AttemptLost {
        /// The task.
        task: String,
        /// The attempt.
        n: u32,
        /// Whether it runs again.
        retried: bool,
        /// Why, when it was not the worker (a provider's rate limit).
        why: Option<String>,
    },
    /// A task ended.
    TaskDone {
        /// The task.
        task: String,
        /// Its status word.
        status: String,
        /// Winner and reason, or why it failed.
        detail: String,
    },
    /// Anything else, in a sentence.
    Info(String),
}

/// Shows notes until the channel closes.
pub async fn render(mut notes: mpsc::UnboundedReceiver<Note>, verbose: bool) {
    let tty = std::io::stderr().is_terminal();
    while let Some(note) = notes.recv().await {
        if let Some(line) = line(&note, verbose) {
            let mut err = std::io::stderr().lock();
            if tty {
                let _ = writeln!(err, "{}", colour(&note, &line));
            } else {
                let now = chrono::Utc::now().format("%H:%M:%S%.3f");
                let _ = writeln!(err, "{now} {line}");
            }
        }
    }
}

/// A note as one line, without its time; `None` for what is not shown.
pub fn line(note: &Note, verbose: bool) -> Option<String> {
    Some(match note {
        Note::WorkerJoined { id, name, slots } => {
            format!("worker {id} ({name}) joined with {slots} slot(s)")
        }
        Note::WorkerLost { id, reason } => format!("worker {id} lost: {reason}"),
        Note::TaskStarted {
            task,
            base,
            attempts,
        } => {
            format!(
                "{task}: starting {attempts} attempt(s) from {}",
                crate::report::short(base)
            )
        }
        Note::Assigned { task, n: 0, worker } => {
            format!("{task}: checks on the base running on {worker}")
        }
        Note::Assigned { task, n, worker } => format!("{task}#{n} running on {worker}"),
        Note::Output { task, n, line } if verbose => format!("{task}#{n} | {line}"),
        Note::Output { .. } => return None,
        Note::AttemptDone {
            task,
            n,
            status,
            detail,
            spent,
        } => {
            let mut line = format!("{task}#{n} {status}");
            if !spent.is_empty() {
                line.push_str(&format!(" ({spent})"));
            }
            if !detail.is_empty() {
                line.push_str(&format!(": {detail}"));
            }
            line
        }
        Note::AttemptLost {
            task,
            n,
            retried,
            why,
        } => {
            let who = if *n == 0 {
                format!("{task}: the checks on the base")
            } else {
                format!("{task}#{n}")
            };
            if let Some(why) = why {
                let then = if *retried {
                    "running it again, without using up an attempt"
                } else {
                    "giving up"
                };
                format!("{who}: {why}; {then}")
            } else if *retried {
                format!("{who} lost its worker; running it again")
            } else {
                format!("{who} lost its worker too often; giving up")
            }
        }
        Note::TaskDone {
            task,
            status,
            detail,
        } => format!("{task}: {status}, {detail}"),
        Note::Info(text) => text.clone(),
    })
}

fn colour(note: &Note, line: &str) -> String {
    let (code, mark) = match note {
        Note::AttemptDone { status, .. } | Note::TaskDone { status, .. }
            if status == "succeeded" =>
        {
            ("32", "✓")
        }
        Note::AttemptDone { .. }
        | Note::TaskDone { .. }
        | Note::WorkerLost { .. }
        | Note::AttemptLost { .. } => ("31", "✗"),
        Note::Assigned { .. } | Note::TaskStarted { .. } => ("36", "▶"),
        _ => ("2", "·"),
    };
    format!("\x1b[{code}m{mark}\x1b[0m {line}")
}
