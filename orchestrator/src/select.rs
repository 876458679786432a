//! Picking a task's winner among its attempts, and saying why in words.
//!
//! An attempt *passes* when its agent finished with a change and none of its checks failed
//! (a check that is `skipped` or `pre_existing` does not count against it). The policies:
//!
//! - `best`: the fewest `pre_existing` checks (an attempt that fixes a check the base fails
//!   beats one that leaves it failing), then the highest score, then the smallest diff
//!   (lines, then files), then the fastest, then the lowest number;
//! - `first-pass`: the first attempt to pass, by the time its result arrived;
//! - `vote`: passing attempts that made the same change, whitespace aside, form groups;
//!   the largest group wins, and its best member by `best` is the winner.
//!
//! Invariant: pure; the same attempts always give the same winner and the same reason.

use std::cmp::Ordering;
use std::collections::{BTreeMap, HashMap};

use crate::plan::Select;
use crate::report::{AttemptKind, AttemptReport, AttemptStatus, CheckStatus, seconds};

/// The winner's number and why it won, in words.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    /// The winning attempt's number.
    pub winner: u32,
    /// Why it won.
    pub reason: String,
}

/// Whether an attempt can win.
pub fn passes(a: &AttemptReport) -> bool {
    a.kind == AttemptKind::Task && a.status == AttemptStatus::Succeeded && a.commit.is_some()
}

/// Picks the winner of `attempts` under `policy`. `changes` maps each passing attempt to a
/// key of its whitespace-normalised change; only `vote` reads it.
pub fn pick(
    policy: Select,
    attempts: &[AttemptReport],
    changes: &HashMap<u32, u64>,
) -> Option<Verdict> {
    match policy {
        // The judge's tournament is the scheduler's; without one, `best` decides.
        Select::Best | Select::Judge => best(attempts),
        Select::FirstPass => first_pass(attempts),
        Select::Vote => vote(attempts, changes),
    }
}

/// `best`'s order: better attempts first.
fn rank(a: &AttemptReport, b: &AttemptReport) -> Ordering {
    let score = |x: &AttemptReport| x.score.unwrap_or(f64::NEG_INFINITY);
    still_failing(a)
        .len()
        .cmp(&still_failing(b).len())
        .then_with(|| score(b).total_cmp(&score(a)))
        .then_with(|| size(a).cmp(&size(b)))
        .then_with(|| a.duration_ms.cmp(&b.duration_ms))
        .then_with(|| a.n.cmp(&b.n))
}

/// The checks of `a` that fail as they did on the base.
fn still_failing(a: &AttemptReport) -> Vec<&str> {
    a.checks
        .iter()
        .filter(|c| c.status == CheckStatus::PreExisting)
        .map(|c| c.name.as_str())
        .collect()
}

/// Lines, then files changed.
fn size(a: &AttemptReport) -> (u64, u32) {
    (a.diff.insertions + a.diff.deletions, a.diff.files)
}

/// The passing attempts' numbers in `best`'s order, best first.
pub fn best_order(attempts: &[AttemptReport]) -> Vec<u32> {
    let mut passing: Vec<&AttemptReport> = attempts.iter().filter(|a| passes(a)).collect();
    passing.sort_by(|a, b| rank(a, b));
    passing.into_iter().map(|a| a.n).collect()
}

/// `select: best`.
pub fn best(attempts: &[AttemptReport]) -> Option<Verdict> {
    let mut passing: Vec<&AttemptReport> = attempts.iter().filter(|a| passes(a)).collect();
    passing.sort_by(|a, b| rank(a, b));
    let winner = *passing.first()?;
    let reason = if passing.len() == 1 {
        only_passing(winner, attempts)
    } else {
        why_ahead(winner, &passing[1..])
    };
    Some(Verdict {
        winner: winner.n,
        reason,
    })
}

/// Why `winner` ranks before `rest[0]`; `rest` are the other passing attempts in rank
/// order, never empty.
fn why_ahead(winner: &AttemptReport, rest: &[&AttemptReport]) -> String {
    let next = rest[0];
    let of = rest.len() + 1;
    let (mine, theirs) = (still_failing(winner), still_failing(next));
    if mine.len() != theirs.len() {
        let fixed: Vec<&str> = theirs.into_iter().filter(|c| !mine.contains(c)).collect();
        let alone = rest
            .iter()
            .all(|a| fixed.iter().all(|c| still_failing(a).contains(c)));
        return if alone {
            format!(
                "only attempt passing {} (the base fails it; the others still do)",
                fixed.join(", ")
            )
        } else {
            format!(
                "fewest checks still failing as on the base of {of} passing attempts \
                 (it passes {})",
                fixed.join(", ")
            )
        };
    }
    if winner.score != next.score {
        let score = winner.score.map_or("none".to_owned(), |s| s.to_string());
        let runner = next.score.map_or("none".to_owned(), |s| s.to_string());
        return format!("highest score {score} of {of} passing attempts (next: {runner})");
    }
    let (lines, files) = size(winner);
    if size(winner) != size(next) {
        return format!(
            "smallest diff of {of} passing attempts ({files} file{}, {lines} line{})",
            plural(files as u64),
            plural(lines)
        );
    }
    if winner.duration_ms != next.duration_ms {
        return format!(
            "fastest ({}) of {of} passing attempts with the same score and diff size",
            seconds(winner.duration_ms)
        );
    }
    format!("lowest number among {of} passing attempts that tie on score, diff and time")
}

fn plural(n: u64) -> &'static str {
    if n == 1 { "" } else { "s" }
}

/// The reason of the only passing attempt: the checks the others failed, when any.
fn only_passing(winner: &AttemptReport, attempts: &[AttemptReport]) -> String {
    let mut failed: Vec<&str> = Vec::new();
    for a in attempts.iter().filter(|a| a.n != winner.n) {
        for c in &a.checks {
            if matches!(c.status, CheckStatus::Failed | CheckStatus::TimedOut)
                && !failed.contains(&c.name.as_str())
                && winner.checks.iter().any(|w| w.name == c.name)
            {
                failed.push(&c.name);
            }
        }
    }
    if !failed.is_empty() {
        return format!("only attempt passing {}", failed.join(", "));
    }
    let ran: Vec<&str> = winner
        .checks
        .iter()
        .filter(|c| c.status == CheckStatus::Passed)
        .map(|c| c.name.as_str())
        .collect();
    if ran.is_empty() {
        "only passing attempt: it finished with a change".to_owned()
    } else {
        format!(
            "only passing attempt: its checks passed ({})",
            ran.join(", ")
        )
    }
}

/// `select: first-pass`: the passing attempt whose result arrived first.
pub fn first_pass(attempts: &[AttemptReport]) -> Option<Verdict> {
    let winner = attempts
        .iter()
        .filter(|a| passes(a))
        .min_by_key(|a| (a.finished_ms.unwrap_or(u64::MAX), a.n))?;
    let at = winner
        .finished_ms
        .map(|ms| format!(" at {}", seconds(ms)))
        .unwrap_or_default();
    Some(Verdict {
        winner: winner.n,
        reason: format!("first attempt to pass{at}"),
    })
}

/// `select: vote`: the largest group of passing attempts with the same change.
pub fn vote(attempts: &[AttemptReport], changes: &HashMap<u32, u64>) -> Option<Verdict> {
    let mut passing: Vec<&AttemptReport> = attempts.iter().filter(|a| passes(a)).collect();
    passing.sort_by(|a, b| rank(a, b));
    passing.first()?;
    // Groups keyed by change; an attempt without a key is a group of its own.
    let key_of = |a: &AttemptReport| changes.get(&a.n).map_or((u64::MAX, a.n), |k| (*k, 0));
    let mut groups: BTreeMap<(u64, u32), Vec<&AttemptReport>> = BTreeMap::new();
    for a in &passing {
        groups.entry(key_of(a)).or_default().push(a);
    }
    let largest = groups.values().map(Vec::len).max().unwrap_or(0);
    if largest < 2 {
        let ranked = best(attempts)?;
        return Some(Verdict {
            winner: ranked.winner,
            reason: format!(
                "no two of {} passing attempts made the same change; {}",
                passing.len(),
                ranked.reason
            ),
        });
    }
    // Among equally large groups, the one holding the best-ranked attempt; members are
    // already in rank order.
    let group = passing
        .iter()
        .map(|a| &groups[&key_of(a)])
        .find(|g| g.len() == largest)?;
    let winner = group[0];
    let mut members: Vec<u32> = group.iter().map(|a| a.n).collect();
    members.sort_unstable();
    let names = members
        .iter()
        .map(u32::to_string)
        .collect::<Vec<_>>()
        .join(", ");
    let tied = groups.values().filter(|g| g.len() == largest).count();
    let mut reason = format!(
        "largest agreeing group: attempts {names} made the same change ({largest} of {} passing)",
        passing.len()
    );
    if tied > 1 {
        reason.push_str(&format!(
            "; {tied} groups of {largest} tie, this one holds the best-ranked attempt"
        ));
    }
    if group.len() > 1 {
        reason.push_str(&format!(
            "; {} ranks first in it: {}",
            winner.n,
            why_ahead(winner, &group[1..])
        ));
    }
    Some(Verdict {
        winner: winner.n,
        reason,
    })
}

/// A change's key for `vote`: the changed paths with their new contents, whitespace
/// aside. Lines are trimmed, runs of whitespace become one space, and blank lines drop
/// out, so two attempts whose diffs differ only in indentation or spacing agree.
pub fn change_key(files: &[(String, Option<Vec<u8>>)]) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut sorted: Vec<&(String, Option<Vec<u8>>)> = files.iter().collect();
    sorted.sort_by(|a, b| a.0.cmp(&b.0));
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    for (path, content) in sorted {
        path.hash(&mut hasher);
        match content {
            None => 0u8.hash(&mut hasher),
            Some(bytes) => {
                1u8.hash(&mut hasher);
                for line in String::from_utf8_lossy(bytes).lines() {
                    let words: Vec<&str> = line.split_whitespace().collect();
                    if !words.is_empty() {
                        words.join(" ").hash(&mut hasher);
                    }
                }
            }
        }
    }
    hasher.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::{CheckReport, DiffReport};

    fn attempt(n: u32, passed: bool, lines: u64, score: Option<f64>) -> AttemptReport {
        AttemptReport {
            n,
            status: if passed {
                AttemptStatus::Succeeded
            } else {
                AttemptStatus::Failed
            },
            commit: Some(format!("c{n}")),
            diff: DiffReport {
                files: 1,
                insertions: lines,
                deletions: 0,
            },
            checks: vec![CheckReport {
                name: "unit".into(),
                status: if passed {
                    CheckStatus::Passed
                } else {
                    CheckStatus::Failed
                },
                exit_code: Some(if passed { 0 } else { 1 }),
                duration_ms: 1,
                log: None,
                note: None,
                package: None,
                package_dir: None,
                affected: None,
            }],
            score,
            duration_ms: 1000,
            ..AttemptReport::empty(n, "b")
        }
    }

    #[test]
    fn best_ranks_score_then_size_then_time_then_number() {
        let mut attempts = vec![
            attempt(1, false, 1, Some(9.0)),
            attempt(2, true, 10, Some(0.5)),
            attempt(3, true, 30, Some(0.93)),
            attempt(4, true, 1, None),
        ];
        let v = best(&attempts).unwrap();
        assert_eq!(v.winner, 3);
        assert_eq!(
            v.reason,
            "highest score 0.93 of 3 passing attempts (next: 0.5)"
        );

        for a in &mut attempts {
            a.score = None;
        }
        let v = best(&attempts).unwrap();
        assert_eq!(
            (v.winner, v.reason.as_str()),
            (4, "smallest diff of 3 passing attempts (1 file, 1 line)")
        );

        attempts[1].diff.insertions = 1;
        attempts[1].duration_ms = 500;
        let v = best(&attempts).unwrap();
        assert_eq!(v.winner, 2);
        assert!(v.reason.starts_with("fastest (0.5s)"), "{}", v.reason);

        attempts[1].duration_ms = 1000;
        let v = best(&attempts).unwrap();
        assert_eq!(v.winner, 2);
        assert!(v.reason.starts_with("lowest number"), "{}", v.reason);
    }

    #[test]
    fn the_only_passing_attempt_names_what_the_others_failed() {
        let attempts = [attempt(1, false, 1, None), attempt(2, true, 5, None)];
        let v = best(&attempts).unwrap();
        assert_eq!(
            (v.winner, v.reason.as_str()),
            (2, "only attempt passing unit")
        );
        assert_eq!(best(&attempts[..1]), None);
    }

    #[test]
    fn first_pass_takes_the_earliest_result() {
        let mut attempts = vec![
            attempt(1, true, 1, Some(5.0)),
            attempt(2, true, 9, None),
            attempt(3, false, 1, None),
        ];
        attempts[0].finished_ms = Some(900);
        attempts[1].finished_ms = Some(300);
        attempts[2].finished_ms = Some(100);
        let v = first_pass(&attempts).unwrap();
        assert_eq!(
            (v.winner, v.reason.as_str()),
            (2, "first attempt to pass at 0.3s")
        );
    }

    #[test]
    fn vote_takes_the_largest_group_even_over_a_better_score() {
        let attempts = vec![
            attempt(1, true, 5, None),
            attempt(2, true, 1, Some(1.0)),
            attempt(3, true, 5, None),
            attempt(4, false, 5, None),
            attempt(5, true, 5, None),
        ];
        let changes = HashMap::from([(1, 7), (2, 8), (3, 7), (4, 7), (5, 7)]);
        let v = vote(&attempts, &changes).unwrap();
        assert_eq!(v.winner, 1);
        assert!(
            v.reason.starts_with(
                "largest agreeing group: attempts 1, 3, 5 made the same change (3 of 4 passing)"
            ),
            "{}",
            v.reason
        );
        let alone = HashMap::from([(1, 1), (2, 2), (3, 3), (5, 5)]);
        let v = vote(&attempts, &alone).unwrap();
        assert_eq!(v.winner, 2);
        assert!(v.reason.starts_with("no two of 4"), "{}", v.reason);
    }

    #[test]
    fn change_keys_ignore_whitespace_only() {
        let a = change_key(&[("a.rs".into(), Some(b"fn f() {\n    x + 1\n}\n".to_vec()))]);
        let b = change_key(&[("a.rs".into(), Some(b"fn f() {\n\n\tx  +  1 \n}".to_vec()))]);
        let c = change_key(&[("a.rs".into(), Some(b"fn f() {\n    x + 2\n}\n".to_vec()))]);
        let d = change_key(&[("b.rs".into(), Some(b"fn f() {\n    x + 1\n}\n".to_vec()))]);
        let gone = change_key(&[("a.rs".into(), None)]);
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_ne!(a, d);
        assert_ne!(a, gone);
    }
}
