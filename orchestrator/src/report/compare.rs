//! `braid compare RUN TASK`: a task's attempts side by side, and how alike their changes
//! are.
//!
//! The numbers come from report.json; the diffs and the similarity come from the attempts'
//! branches, read with git. Similarity is the share of changed lines two attempts have in
//! common: the lines each one adds or removes, per path, as a set; the size of the
//! intersection over the size of the union.

use std::collections::HashSet;
use std::fmt::Write as _;

use braid_shared::git::{Git, GitError};
use serde::Serialize;

use super::{AttemptKind, AttemptReport, Report, TaskReport, seconds, word};

/// One task's attempts, compared.
#[derive(Debug, Clone, Serialize)]
pub struct Comparison {
    /// The run.
    pub run: String,
    /// The task.
    pub task: String,
    /// The commit the attempts are measured against.
    pub base: Option<String>,
    /// The selection policy.
    pub select: String,
    /// The winning attempt.
    pub winner: Option<u32>,
    /// Why it won, or why there is none.
    pub reason: Option<String>,
    /// The task's check names, in plan order.
    pub checks: Vec<String>,
    /// One row per attempt, by number.
    pub attempts: Vec<Row>,
    /// `similarity[i][j]`: the share of changed lines attempts `i` and `j` (in the order
    /// of `attempts`) have in common, from 0 to 1; `null` when either has no change.
    pub similarity: Vec<Vec<Option<f64>>>,
    /// One row per agent (and model), in the order they first appear: a bake-off's score.
    pub agents: Vec<AgentRow>,
    /// `select: judge`: the tournament, every verdict with its reason.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub judge: Option<crate::judge::JudgeReport>,
}

/// What one agent's attempts of the task came to.
#[derive(Debug, Clone, Serialize)]
pub struct AgentRow {
    /// The agent: a preset's name, `command`.
    pub agent: String,
    /// The model; `null` when the plan named none.
    pub model: Option<String>,
    /// Its attempts.
    pub attempts: u32,
    /// Of those, how many succeeded.
    pub passed: u32,
    /// Whether the winner is one of them.
    pub won: bool,
    /// What they spent together.
    pub usage: super::Usage,
    /// The median wall-clock time of its attempts.
    pub median_ms: u64,
}

/// One attempt in a comparison.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    /// The attempt's number.
    pub n: u32,
    /// How it ended.
    pub status: String,
    /// Each check's status, in the order of [`Comparison::checks`]; `null` when the
    /// attempt has no record of it.
    pub checks: Vec<Option<String>>,
    /// Its score.
    pub score: Option<f64>,
    /// Why it has no score.
    pub score_error: Option<String>,
    /// Files changed.
    pub files: u32,
    /// Lines added.
    pub insertions: u64,
    /// Lines removed.
    pub deletions: u64,
    /// Wall-clock time.
    pub duration_ms: u64,
    /// The agent: a preset's name, `command`.
    pub agent: Option<String>,
    /// The model it asked for.
    pub model: Option<String>,
    /// Model turns, where known.
    pub turns: Option<u32>,
    /// Cached input tokens, where known.
    pub cached_input_tokens: Option<u64>,
    /// Input tokens, where known.
    pub input_tokens: Option<u64>,
    /// Output tokens, where known.
    pub output_tokens: Option<u64>,
    /// Cost in US dollars, where known.
    pub cost_usd: Option<f64>,
    /// The attempt it continues, as a feedback retry.
    pub continues: Option<u32>,
    /// Whether it won.
    pub winner: bool,
    /// Why it won, or why it failed.
    pub note: Option<String>,
    /// Its diff against the task's base, when asked for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub diff: Option<String>,
    /// Its branch.
    pub branch: String,
    /// The worker that ran it.
    pub worker: Option<String>,
}

/// Compares the attempts of `task` in `report`. `diffs` keeps each attempt's diff in its
/// row.
pub async fn compare(
    report: &Report,
    task: &TaskReport,
    git: &Git,
    diffs: bool,
) -> Result<Comparison, GitError> {
    let attempts: Vec<&AttemptReport> = task
        .attempts
        .iter()
        .filter(|a| a.kind == AttemptKind::Task)
        .collect();
    let mut checks: Vec<String> = Vec::new();
    for a in &attempts {
        for c in &a.checks {
            if !checks.contains(&c.name) {
                checks.push(c.name.clone());
            }
        }
    }
    let mut texts = Vec::with_capacity(attempts.len());
    for a in &attempts {
        texts.push(match (&task.base, &a.commit) {
            (Some(base), Some(commit)) => Some(diff(git, base, commit).await?),
            _ => None,
        });
    }
    let lines: Vec<Option<HashSet<String>>> = texts
        .iter()
        .map(|t| t.as_deref().map(changed_lines))
        .collect();
    let similarity = lines
        .iter()
        .map(|a| {
            lines
                .iter()
                .map(|b| jaccard(a.as_ref(), b.as_ref()))
                .collect()
        })
        .collect();
    let rows = attempts
        .iter()
        .zip(texts)
        .map(|(a, text)| {
            let winner = task.winner == Some(a.n);
            Row {
                n: a.n,
                status: word(a.status),
                checks: checks
                    .iter()
                    .map(|name| {
                        a.checks
                            .iter()
                            .find(|c| &c.name == name)
                            .map(|c| word(c.status))
                    })
                    .collect(),
                score: a.score,
                score_error: a.score_error.clone(),
                files: a.diff.files,
                insertions: a.diff.insertions,
                deletions: a.diff.deletions,
                duration_ms: a.duration_ms,
                agent: a.agent.clone(),
                model: a.model.clone(),
                turns: a.usage.turns,
                cached_input_tokens: a.usage.cached_input_tokens,
                input_tokens: a.usage.input_tokens,
                output_tokens: a.usage.output_tokens,
                cost_usd: a.usage.cost_usd,
                continues: a.continues,
                winner,
                note: if winner {
                    task.reason.clone()
                } else {
                    a.error.clone()
                },
                diff: text.filter(|_| diffs),
                branch: a.branch.clone(),
                worker: a.worker.clone(),
            }
        })
        .collect();
    Ok(Comparison {
        run: report.run.clone(),
        task: task.id.clone(),
        base: task.base.clone(),
        select: task.select.clone(),
        winner: task.winner,
        reason: task.reason.clone(),
        checks,
        agents: agent_rows(task.winner, &attempts),
        attempts: rows,
        similarity,
        judge: task.judge.clone(),
    })
}

/// The per-agent summary of `attempts`.
fn agent_rows(winner: Option<u32>, attempts: &[&AttemptReport]) -> Vec<AgentRow> {
    type Key = (String, Option<String>);
    let mut groups: Vec<(Key, Vec<&AttemptReport>)> = Vec::new();
    for a in attempts {
        let key = (
            a.agent.clone().unwrap_or_else(|| "-".into()),
            a.model.clone(),
        );
        match groups.iter_mut().find(|(k, _)| *k == key) {
            Some((_, list)) => list.push(a),
            None => groups.push((key, vec![a])),
        }
    }
    groups
        .into_iter()
        .map(|((agent, model), list)| {
            let mut times: Vec<u64> = list.iter().map(|a| a.duration_ms).collect();
            times.sort_unstable();
            AgentRow {
                agent,
                model,
                attempts: list.len() as u32,
                passed: list
                    .iter()
                    .filter(|a| a.status == super::AttemptStatus::Succeeded)
                    .count() as u32,
                won: list.iter().any(|a| winner == Some(a.n)),
                usage: super::Usage::sum(list.iter().map(|a| &a.usage)),
                median_ms: times.get(times.len() / 2).copied().unwrap_or(0),
            }
        })
        .collect()
}

/// The diff from `base` to `commit`, as git prints it.
pub async fn diff(git: &Git, base: &str, commit: &str) -> Result<String, GitError> {
    git.run(&[
        "diff",
        "--no-color",
        "--no-ext-diff",
        "--no-renames",
        base,
        commit,
        "--",
    ])
    .await
}

/// The lines a diff adds or removes, each with its path and sign.
fn changed_lines(diff: &str) -> HashSet<String> {
    let mut path = "";
    let mut out = HashSet::new();
    for line in diff.lines() {
        if let Some(p) = line
            .strip_prefix("+++ ")
            .or_else(|| line.strip_prefix("--- "))
        {
            if p != "/dev/null" {
                path = p.get(2..).unwrap_or(p);
            }
        } else if line.starts_with('+') || line.starts_with('-') {
            out.insert(format!("{path}\t{line}"));
        }
    }
    out
}

fn jaccard(a: Option<&HashSet<String>>, b: Option<&HashSet<String>>) -> Option<f64> {
    let (a, b) = (a?, b?);
    let union = a.union(b).count();
    if union == 0 {
        return None;
    }
    Some(a.intersection(b).count() as f64 / union as f64)
}

impl Row {
    /// The note column: the retry chain, then why it won or failed, then a score error.
    pub fn note_text(&self) -> String {
        let mut note = Vec::new();
        if let Some(p) = self.continues {
            note.push(format!("continues {p}"));
        }
        note.extend(self.note.clone());
        note.extend(self.score_error.clone());
        note.join("; ")
    }

    /// Input and output tokens, or `-` when unknown.
    pub fn tokens_text(&self) -> String {
        match (self.input_tokens, self.output_tokens) {
            (None, None) => "-".into(),
            (i, o) => format!("{}/{}", i.unwrap_or(0), o.unwrap_or(0)),
        }
    }

    /// The cost, or `-` when unknown.
    pub fn cost_text(&self) -> String {
        self.cost_usd.map_or("-".into(), |c| format!("${c:.4}"))
    }
}

impl Comparison {
    /// The comparison as `braid compare` prints it.
    pub fn text(&self) -> String {
        let mut head: Vec<String> = vec!["attempt".into(), "status".into(), "agent".into()];
        head.extend(self.checks.iter().cloned());
        head.extend(
            [
                "score", "files", "lines", "time", "tokens", "cost", "turns", "note",
            ]
            .iter()
            .map(|s| (*s).to_owned()),
        );
        let mut rows: Vec<Vec<String>> = vec![head];
        for r in &self.attempts {
            let mut cells = vec![
                format!("{}{}", r.n, if r.winner { " ★" } else { "" }),
                r.status.clone(),
                match (&r.agent, &r.model) {
                    (Some(a), Some(m)) => format!("{a} {m}"),
                    (Some(a), None) => a.clone(),
                    _ => "-".into(),
                },
            ];
            cells.extend(
                r.checks
                    .iter()
                    .map(|c| c.clone().unwrap_or_else(|| "-".into())),
            );
            cells.push(match (&r.score, &r.score_error) {
                (Some(s), _) => s.to_string(),
                (None, Some(_)) => "error".into(),
                (None, None) => "-".into(),
            });
            cells.push(r.files.to_string());
            cells.push(format!("+{} -{}", r.insertions, r.deletions));
            cells.push(seconds(r.duration_ms));
            cells.push(r.tokens_text());
            cells.push(r.cost_text());
            cells.push(r.turns.map_or("-".into(), |t| t.to_string()));
            cells.push(r.note_text());
            rows.push(cells);
        }
        let mut out = String::new();
        let _ = writeln!(
            out,
            "run {} task {} (select: {}, base {})\n",
            self.run,
            self.task,
            self.select,
            self.base.as_deref().map(super::short).unwrap_or("-")
        );
        out.push_str(&table(&rows));
        match (self.winner, &self.reason) {
            (Some(n), Some(reason)) => {
                let _ = writeln!(out, "\nwinner: attempt {n}: {reason}");
            }
            (None, Some(reason)) => {
                let _ = writeln!(out, "\nno winner: {reason}");
            }
            _ => {}
        }
        if self.agents.len() > 1 {
            let _ = writeln!(out, "\nby agent:");
            let mut rows = vec![
                ["agent", "attempts", "passed", "median time", "spent", ""]
                    .map(String::from)
                    .to_vec(),
            ];
            for a in &self.agents {
                rows.push(vec![
                    match &a.model {
                        Some(m) => format!("{} {m}", a.agent),
                        None => a.agent.clone(),
                    },
                    a.attempts.to_string(),
                    a.passed.to_string(),
                    seconds(a.median_ms),
                    a.usage.text(),
                    if a.won {
                        "winner".into()
                    } else {
                        String::new()
                    },
                ]);
            }
            out.push_str(&table(&rows));
        }
        if let Some(judge) = &self.judge {
            out.push_str(&judge_text(judge));
        }
        let _ = writeln!(out, "\nsimilarity (share of changed lines in common):");
        let mut matrix: Vec<Vec<String>> = vec![
            std::iter::once(String::new())
                .chain(self.attempts.iter().map(|r| r.n.to_string()))
                .collect(),
        ];
        for (r, values) in self.attempts.iter().zip(&self.similarity) {
            matrix.push(
                std::iter::once(r.n.to_string())
                    .chain(
                        values
                            .iter()
                            .map(|v| v.map_or("-".into(), |v| format!("{v:.2}"))),
                    )
                    .collect(),
            );
        }
        out.push_str(&table(&matrix));
        for r in &self.attempts {
            if let Some(diff) = &r.diff {
                let _ = writeln!(out, "\n=== attempt {} ({}) ===", r.n, r.branch);
                out.push_str(diff);
                if !diff.ends_with('\n') && !diff.is_empty() {
                    out.push('\n');
                }
            }
        }
        out
    }
}

/// The judge's tournament as `braid compare` prints it: each verdict, then the standings.
fn judge_text(judge: &crate::judge::JudgeReport) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "\njudge: {}, {} of {} pair{} judged (at most {}), each in both orders{}",
        judge.agent,
        judge.pairs_judged,
        judge.pairs_possible,
        if judge.pairs_possible == 1 { "" } else { "s" },
        judge.max_pairs,
        if judge.usage == super::Usage::default() {
            String::new()
        } else {
            format!("; spent {}", judge.usage.text())
        }
    );
    if !judge.criteria.is_empty() {
        let _ = writeln!(out, "criteria: {}", judge.criteria);
    }
    for v in &judge.verdicts {
        let said = match (&v.winner, &v.error) {
            (Some(w), _) => format!("{w}: {}", v.reason),
            (None, Some(e)) => format!("no verdict: {e}"),
            (None, None) => "no verdict".into(),
        };
        let _ = writeln!(out, "  #{} (A) vs #{} (B): {said}", v.a, v.b);
    }
    let mut rows = vec![
        ["attempt", "wins", "ties", "losses"]
            .map(String::from)
            .to_vec(),
    ];
    for s in &judge.standings {
        rows.push(vec![
            format!("#{}", s.n),
            s.wins.to_string(),
            s.ties.to_string(),
            s.losses.to_string(),
        ]);
    }
    out.push_str(&table(&rows));
    let flipped: Vec<String> = judge
        .pairs
        .iter()
        .filter(|p| p.flipped)
        .map(|p| format!("#{} and #{}", p.attempts[0], p.attempts[1]))
        .collect();
    if !flipped.is_empty() {
        let _ = writeln!(
            out,
            "the pick flipped with the order for {}: a tie",
            flipped.join(", ")
        );
    }
    if judge.tie_broken_by_best {
        let _ = writeln!(out, "level on wins: settled by best's order");
    }
    out
}

/// Rows as columns padded to their widest cell; the first row is the header.
fn table(rows: &[Vec<String>]) -> String {
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|c| {
            rows.iter()
                .filter_map(|r| r.get(c))
                .map(|s| s.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for row in rows {
        let cells: Vec<String> = row
            .iter()
            .enumerate()
            .map(|(c, s)| {
                let pad = widths[c].saturating_sub(s.chars().count());
                format!("{s}{}", " ".repeat(pad))
            })
            .collect();
        let _ = writeln!(out, "{}", cells.join("  ").trim_end());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn similarity_is_the_share_of_changed_lines_in_common() {
        let a = "--- a/x\n+++ b/x\n@@ -1 +1,2 @@\n-old\n+new\n+more\n";
        let b = "--- a/x\n+++ b/x\n@@ -1 +1 @@\n-old\n+new\n";
        let c = "--- a/y\n+++ b/y\n@@ -1 +1 @@\n-old\n+new\n";
        let (a, b, c) = (changed_lines(a), changed_lines(b), changed_lines(c));
        assert_eq!(jaccard(Some(&a), Some(&a)), Some(1.0));
        assert_eq!(jaccard(Some(&a), Some(&b)), Some(2.0 / 3.0));
        assert_eq!(jaccard(Some(&b), Some(&c)), Some(0.0));
        assert_eq!(jaccard(Some(&a), None), None);
    }

    #[test]
    fn new_and_deleted_files_keep_their_path() {
        let added = "--- /dev/null\n+++ b/new.txt\n@@ -0,0 +1 @@\n+hello\n";
        let gone = "--- a/old.txt\n+++ /dev/null\n@@ -1 +0,0 @@\n-bye\n";
        assert!(changed_lines(added).contains("new.txt\t+hello"));
        assert!(changed_lines(gone).contains("old.txt\t-bye"));
    }
}
