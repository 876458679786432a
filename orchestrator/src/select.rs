//! Picking a task's winner among its attempts.
//!
//! Invariant: pure; the same attempts always give the same winner and the same reason.

use crate::report::{AttemptReport, AttemptStatus, CheckStatus};

/// The winner's number and why it won, in words.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    /// The winning attempt's number.
    pub winner: u32,
    /// Why it won.
    pub reason: String,
}

/// `select: best`: among attempts that produced a commit and whose checks all passed, the
/// smallest diff (files, then lines), then the lowest attempt number. `None` when no attempt
/// qualifies.
pub fn best(attempts: &[AttemptReport]) -> Option<Verdict> {
    let passing: Vec<&AttemptReport> = attempts
        .iter()
        .filter(|a| {
            a.status == AttemptStatus::Succeeded
                && a.commit.is_some()
                && a.checks.iter().all(|c| c.status == CheckStatus::Passed)
        })
        .collect();
    let size = |a: &AttemptReport| (a.diff.files, a.diff.insertions + a.diff.deletions);
    let winner = *passing.iter().min_by_key(|a| (size(a), a.n))?;
    let checks = if winner.checks.is_empty() {
        "it finished with a change (no checks)".to_owned()
    } else {
        format!(
            "its checks passed ({})",
            winner
                .checks
                .iter()
                .map(|c| c.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        )
    };
    let reason = if passing.len() == 1 {
        format!("only passing attempt: {checks}")
    } else {
        let (files, lines) = size(winner);
        let tied = passing.iter().filter(|a| size(a) == (files, lines)).count();
        let mut reason = format!(
            "smallest diff of {} passing attempts ({files} file{}, {lines} line{})",
            passing.len(),
            if files == 1 { "" } else { "s" },
            if lines == 1 { "" } else { "s" },
        );
        if tied > 1 {
            reason.push_str(", lowest number among equal diffs");
        }
        reason
    };
    Some(Verdict {
        winner: winner.n,
        reason,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::{CheckReport, DiffReport};

    fn attempt(
        n: u32,
        status: AttemptStatus,
        files: u32,
        lines: u64,
        check: CheckStatus,
    ) -> AttemptReport {
        AttemptReport {
            n,
            status,
            commit: Some(format!("c{n}")),
            diff: DiffReport {
                files,
                insertions: lines,
                deletions: 0,
            },
            checks: vec![CheckReport {
                name: "unit".into(),
                status: check,
                exit_code: Some(0),
                duration_ms: 1,
                log: None,
            }],
            ..AttemptReport::empty(n, "b")
        }
    }

    #[test]
    fn smallest_passing_diff_wins_then_lowest_number() {
        use AttemptStatus::*;
        let attempts = [
            attempt(1, Failed, 1, 1, CheckStatus::Failed),
            attempt(2, Succeeded, 2, 10, CheckStatus::Passed),
            attempt(3, Succeeded, 1, 30, CheckStatus::Passed),
            attempt(4, Succeeded, 1, 30, CheckStatus::Passed),
        ];
        let verdict = best(&attempts).unwrap();
        assert_eq!(verdict.winner, 3);
        assert!(
            verdict
                .reason
                .contains("smallest diff of 3 passing attempts"),
            "{}",
            verdict.reason
        );
        assert!(
            verdict.reason.contains("lowest number"),
            "{}",
            verdict.reason
        );
    }

    #[test]
    fn only_passing_attempt_and_none() {
        use AttemptStatus::*;
        let attempts = [
            attempt(1, Failed, 1, 1, CheckStatus::Failed),
            attempt(2, Succeeded, 5, 50, CheckStatus::Passed),
        ];
        let verdict = best(&attempts).unwrap();
        assert_eq!(verdict.winner, 2);
        assert!(verdict.reason.starts_with("only passing attempt"));
        assert_eq!(best(&attempts[..1]), None);
    }
}
