//! Conflicts told readably: for `braid report RUN --conflicts` and for report.md.

use std::fmt::Write as _;

use super::{ConflictReport, Prediction, Report, seconds, word};
use crate::merge::PathConflict;

impl Report {
    /// Every conflict of the run and every one a trial merge foresaw: the tasks, each path
    /// with its kind and git's words, and the hunks of text conflicts with both sides.
    pub fn conflicts_text(&self) -> String {
        let mut out = String::new();
        if self.result.conflicts.is_empty() && self.result.predicted.is_empty() {
            let _ = writeln!(out, "run {}: no conflicts", self.run);
            return out;
        }
        for (i, c) in self.result.conflicts.iter().enumerate() {
            let _ = writeln!(out, "{}", heading(i + 1, c));
            let _ = writeln!(out, "  {}", c.outcome);
            for detail in &c.details {
                path_text(&mut out, detail, false);
            }
            out.push('\n');
        }
        for p in &self.result.predicted {
            let _ = writeln!(out, "predicted {}", prediction(p));
        }
        out
    }

    /// The conflicts section of report.md.
    pub(super) fn conflicts_markdown(&self, md: &mut String) {
        if self.result.conflicts.is_empty() {
            let _ = writeln!(md, "\nNo conflicts.");
        } else {
            let _ = writeln!(md, "\n### Conflicts\n");
            for (i, c) in self.result.conflicts.iter().enumerate() {
                let _ = writeln!(md, "#### {}\n", heading(i + 1, c));
                let _ = writeln!(md, "{}\n", c.outcome);
                for detail in &c.details {
                    path_text(md, detail, true);
                }
            }
        }
        if !self.result.predicted.is_empty() {
            let _ = writeln!(md, "\n### Predicted by trial merges\n");
            for p in &self.result.predicted {
                let _ = writeln!(md, "- {}", prediction(p));
            }
        }
    }
}

fn heading(n: usize, c: &ConflictReport) -> String {
    format!(
        "conflict {n}: {} at {} ({})",
        c.tasks.join(" × "),
        c.stage,
        word(c.resolution).replace('_', " ")
    )
}

fn prediction(p: &Prediction) -> String {
    format!(
        "at {}: {} in {} ({})",
        seconds(p.at_ms),
        p.tasks.join(" × "),
        kinds(&p.details),
        p.action
    )
}

fn kinds(details: &[PathConflict]) -> String {
    details
        .iter()
        .map(|d| format!("{} ({})", d.path, d.kind.name()))
        .collect::<Vec<_>>()
        .join(", ")
}

fn path_text(out: &mut String, detail: &PathConflict, markdown: bool) {
    let (bullet, indent) = if markdown {
        ("- ", "  ")
    } else {
        ("  ", "    ")
    };
    let path = if markdown {
        format!("`{}`", detail.path)
    } else {
        detail.path.clone()
    };
    let _ = writeln!(out, "{bullet}{path}: {}", detail.kind.name());
    if let Some(placed) = &detail.placed {
        let _ = writeln!(out, "{indent}{placed}");
    }
    for message in &detail.messages {
        let _ = writeln!(out, "{indent}git: {message}");
    }
    for hunk in &detail.hunks {
        let _ = writeln!(
            out,
            "{indent}lines {}-{}{}:",
            hunk.start_line,
            hunk.end_line,
            if hunk.truncated { " (cut short)" } else { "" }
        );
        if markdown {
            let _ = writeln!(out, "\n{indent}```diff");
        }
        for (label, text) in [
            ("ours  ", &hunk.ours),
            ("base  ", &hunk.base),
            ("theirs", &hunk.theirs),
        ] {
            if text.is_empty() && label == "base  " {
                continue;
            }
            for line in text.lines() {
                let _ = writeln!(out, "{indent}  {label} | {line}");
            }
            if text.is_empty() {
                let _ = writeln!(out, "{indent}  {label} | (nothing)");
            }
        }
        if markdown {
            let _ = writeln!(out, "{indent}```");
        }
    }
    if detail.more_hunks > 0 {
        let _ = writeln!(out, "{indent}… and {} more hunk(s)", detail.more_hunks);
    }
}
