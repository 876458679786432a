//! `select: judge`: a reviewing agent compares passing attempts two at a time.
//!
//! A judge that sees two candidates tends to prefer one of the two places, whatever is in
//! them, so every pair is judged in both orders: A against B, then B against A. Only a pick
//! that survives the swap counts as a win; a pick that flips, a tie, or a missing verdict is
//! a tie. The winner is the attempt with the most wins; attempts level on wins go to
//! `best`'s order (checks still failing as on the base, score, diff size, time).
//!
//! Judging N attempts costs up to N·(N-1) verdicts, so at most `max_pairs` pairs are judged.
//! When every pair fits they are judged at once; otherwise in Swiss rounds: attempts level
//! on wins meet, seeded by `best`'s order, one round after another until the pairs are spent
//! or no new pair is left.
//!
//! Invariant: everything here is pure; the scheduler runs the verdict jobs.

use std::collections::{BTreeMap, HashSet};
use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use crate::report::{AttemptReport, Usage};
use crate::select::{self, Verdict};

/// Most bytes of one diff in the judge's prompt; the whole diff is in its file.
pub const PROMPT_DIFF_MAX: usize = 48 << 10;
/// Most bytes of one diff in its file.
pub const FILE_DIFF_MAX: usize = 1 << 20;

/// What one verdict said, in the attempts' numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pick {
    /// This attempt is the better.
    Attempt(u32),
    /// Neither.
    Tie,
}

/// One verdict job's outcome: candidate A was attempt `a`, B was `b`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Judged {
    pub a: u32,
    pub b: u32,
    /// `None`: no verdict (the job failed, or its answer was not a verdict).
    pub pick: Option<Pick>,
}

/// The judge's tournament over one round of a task's passing attempts.
#[derive(Debug, Clone)]
pub struct Tournament {
    /// The task's round (re-runs on top of the integration) it judges.
    pub round: u32,
    /// The passing attempts, in `best`'s order.
    pub seeds: Vec<u32>,
    /// Most pairs judged.
    pub max_pairs: u32,
    /// Pairs scheduled so far, lower seed first.
    pub pairs: Vec<(u32, u32)>,
    /// Each candidate's diff against its base.
    pub diffs: BTreeMap<u32, std::sync::Arc<String>>,
}

/// How one pair came out, both orders together.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PairOutcome {
    /// The attempt both orders picked.
    pub winner: Option<u32>,
    /// The two orders picked different attempts.
    pub flipped: bool,
    /// Orders without a verdict.
    pub missing: u32,
}

impl Tournament {
    /// A tournament over `seeds` (in `best`'s order).
    pub fn new(round: u32, seeds: Vec<u32>, max_pairs: u32) -> Self {
        Tournament {
            round,
            seeds,
            max_pairs,
            pairs: Vec::new(),
            diffs: BTreeMap::new(),
        }
    }

    /// How many pairs there are among the candidates.
    pub fn possible(&self) -> u32 {
        let n = self.seeds.len() as u32;
        n * n.saturating_sub(1) / 2
    }

    /// The pairs to judge next, given every verdict so far (all scheduled pairs must be
    /// judged); empty when the tournament is over. The pairs are added to `pairs`.
    pub fn next_pairs(&mut self, verdicts: &[Judged]) -> Vec<(u32, u32)> {
        let left = self.max_pairs.saturating_sub(self.pairs.len() as u32) as usize;
        if left == 0 {
            return Vec::new();
        }
        let played: HashSet<(u32, u32)> = self.pairs.iter().copied().collect();
        let seed = |n: u32| {
            self.seeds
                .iter()
                .position(|s| *s == n)
                .unwrap_or(usize::MAX)
        };
        let ordered = |x: u32, y: u32| if seed(x) <= seed(y) { (x, y) } else { (y, x) };
        let next: Vec<(u32, u32)> = if self.possible() as usize <= left {
            // Every pair fits: a round robin, all at once.
            let mut all = Vec::new();
            for (i, &x) in self.seeds.iter().enumerate() {
                for &y in &self.seeds[i + 1..] {
                    if !played.contains(&(x, y)) {
                        all.push((x, y));
                    }
                }
            }
            all
        } else {
            // A Swiss round: by points (a win 1, a tie ½), then seed; each meets the next
            // one it has not met.
            let points = |n: u32| -> u32 {
                self.pairs
                    .iter()
                    .filter(|(x, y)| *x == n || *y == n)
                    .map(|&(x, y)| match outcome(x, y, verdicts).winner {
                        Some(w) if w == n => 2,
                        Some(_) => 0,
                        None => 1,
                    })
                    .sum()
            };
            let mut standing: Vec<u32> = self.seeds.clone();
            standing.sort_by_key(|&n| (std::cmp::Reverse(points(n)), seed(n)));
            let mut free: Vec<u32> = standing;
            let mut round = Vec::new();
            while round.len() < left && free.len() >= 2 {
                let first = free.remove(0);
                let Some(at) = free
                    .iter()
                    .position(|&other| !played.contains(&ordered(first, other)))
                else {
                    continue;
                };
                let other = free.remove(at);
                round.push(ordered(first, other));
            }
            round
        };
        let next: Vec<(u32, u32)> = next.into_iter().take(left).collect();
        self.pairs.extend(&next);
        next
    }
}

/// How the pair `x`, `y` came out in `verdicts`.
pub fn outcome(x: u32, y: u32, verdicts: &[Judged]) -> PairOutcome {
    let picks: Vec<Option<Pick>> = verdicts
        .iter()
        .filter(|v| (v.a, v.b) == (x, y) || (v.a, v.b) == (y, x))
        .map(|v| v.pick)
        .collect();
    let missing = 2u32.saturating_sub(picks.iter().filter(|p| p.is_some()).count() as u32);
    let chosen: Vec<u32> = picks
        .iter()
        .filter_map(|p| match p {
            Some(Pick::Attempt(n)) => Some(*n),
            _ => None,
        })
        .collect();
    let agreed = missing == 0 && chosen.len() == 2 && chosen[0] == chosen[1];
    PairOutcome {
        winner: agreed.then(|| chosen[0]),
        flipped: chosen.len() == 2 && chosen[0] != chosen[1],
        missing,
    }
}

/// One verdict as the report keeps it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VerdictReport {
    /// The attempt shown as candidate A.
    pub a: u32,
    /// The attempt shown as candidate B.
    pub b: u32,
    /// What the judge wrote: `A`, `B` or `tie`; `null` when it gave no verdict.
    pub winner: Option<String>,
    /// Its one-line reason.
    pub reason: String,
    /// Why there is no verdict.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Wall-clock time of the job.
    pub duration_ms: u64,
    /// What it spent.
    pub usage: Usage,
    /// The job's log.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log: Option<String>,
}

/// One pair, both orders together.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PairReport {
    /// The two attempts.
    pub attempts: [u32; 2],
    /// The attempt both orders picked; `null` for a tie.
    pub winner: Option<u32>,
    /// The pick flipped when the order was swapped (so it counts as a tie).
    pub flipped: bool,
}

/// An attempt's record in the tournament.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Standing {
    /// The attempt.
    pub n: u32,
    /// Pairs it won in both orders.
    pub wins: u32,
    /// Pairs that were a tie.
    pub ties: u32,
    /// Pairs it lost in both orders.
    pub losses: u32,
}

/// The whole tournament of a task, as the report keeps it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JudgeReport {
    /// The reviewing agent.
    pub agent: String,
    /// The criteria it was given.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub criteria: String,
    /// The passing attempts, in `best`'s order.
    pub candidates: Vec<u32>,
    /// Pairs among them, and pairs judged (each in both orders), at most `max_pairs`.
    pub pairs_possible: u32,
    pub pairs_judged: u32,
    pub max_pairs: u32,
    /// Each pair's outcome.
    pub pairs: Vec<PairReport>,
    /// Each verdict, in the order they were asked for.
    pub verdicts: Vec<VerdictReport>,
    /// Wins, ties and losses, most wins first.
    pub standings: Vec<Standing>,
    /// The winner came from a tie on wins, settled by `best`'s order.
    pub tie_broken_by_best: bool,
    /// What the verdicts spent.
    pub usage: Usage,
}

/// The winner of `tournament` among `attempts` (the round's, as reported), with the
/// report of the tournament and why it won.
pub fn decide(
    tournament: &Tournament,
    verdicts: &[Judged],
    attempts: &[AttemptReport],
) -> (Option<Verdict>, Vec<PairReport>, Vec<Standing>, bool) {
    let pairs: Vec<PairReport> = tournament
        .pairs
        .iter()
        .map(|&(x, y)| {
            let o = outcome(x, y, verdicts);
            PairReport {
                attempts: [x, y],
                winner: o.winner,
                flipped: o.flipped,
            }
        })
        .collect();
    let mut standings: Vec<Standing> = tournament
        .seeds
        .iter()
        .map(|&n| {
            let mine = pairs.iter().filter(|p| p.attempts.contains(&n));
            let (mut wins, mut ties, mut losses) = (0, 0, 0);
            for p in mine {
                match p.winner {
                    Some(w) if w == n => wins += 1,
                    Some(_) => losses += 1,
                    None => ties += 1,
                }
            }
            Standing {
                n,
                wins,
                ties,
                losses,
            }
        })
        .collect();
    // Stable: level on wins keeps `best`'s order.
    standings.sort_by_key(|s| std::cmp::Reverse(s.wins));
    let Some(top) = standings.first().map(|s| s.wins) else {
        return (select::best(attempts), pairs, standings, false);
    };
    let leaders: Vec<u32> = standings
        .iter()
        .filter(|s| s.wins == top)
        .map(|s| s.n)
        .collect();
    let flipped = pairs.iter().filter(|p| p.flipped).count();
    let missing: u32 = tournament
        .pairs
        .iter()
        .map(|&(x, y)| outcome(x, y, verdicts).missing)
        .sum();
    let mut notes = Vec::new();
    if flipped > 0 {
        notes.push(format!(
            "the pick flipped with the order in {flipped} of {} pair{}",
            pairs.len(),
            plural(pairs.len())
        ));
    }
    if missing > 0 {
        notes.push(format!("{missing} of {} verdicts missing", pairs.len() * 2));
    }
    let judged = format!(
        "{} of {} pair{} judged, each in both orders",
        pairs.len(),
        tournament.possible(),
        plural(tournament.possible() as usize)
    );
    if leaders.len() == 1 {
        let w = &standings[0];
        let mut reason = format!(
            "the judge's pick: it won {} of its {} pair{} in both orders ({judged})",
            w.wins,
            w.wins + w.ties + w.losses,
            plural((w.wins + w.ties + w.losses) as usize)
        );
        for note in &notes {
            let _ = write!(reason, "; {note}");
        }
        return (
            Some(Verdict {
                winner: w.n,
                reason,
            }),
            pairs,
            standings,
            false,
        );
    }
    let level: Vec<AttemptReport> = attempts
        .iter()
        .filter(|a| leaders.contains(&a.n))
        .cloned()
        .collect();
    let by_best = select::best(&level);
    let verdict = by_best.map(|v| {
        let names: Vec<String> = leaders.iter().map(|n| format!("#{n}")).collect();
        let mut reason = format!(
            "a tie in the judge's eyes: {} level at {top} win{} ({judged}",
            names.join(", "),
            if top == 1 { "" } else { "s" }
        );
        for note in &notes {
            let _ = write!(reason, "; {note}");
        }
        let _ = write!(reason, "); settled by best: {}", v.reason);
        Verdict {
            winner: v.winner,
            reason,
        }
    });
    (verdict, pairs, standings, true)
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}

/// A verdict as the judge wrote it: its answer file, else the last JSON object of its final
/// message. `A`, `B` or `tie`, and the first line of its reason.
pub fn parse_verdict(answer: &[u8], message: &str) -> Result<(String, String), String> {
    let text = String::from_utf8_lossy(answer);
    let value: serde_json::Value = if !text.trim().is_empty() {
        serde_json::from_str(text.trim()).map_err(|e| {
            format!(
                "the verdict file is not JSON ({e}); it says: {}",
                braid_worker::presets::cut(text.trim(), 200)
            )
        })?
    } else {
        last_json_object(message).ok_or_else(|| {
            if message.trim().is_empty() {
                "the judge wrote no verdict to $BRAID_VERDICT_FILE and said nothing".to_owned()
            } else {
                format!(
                    "the judge wrote no verdict to $BRAID_VERDICT_FILE, and its reply holds none: {}",
                    braid_worker::presets::cut(message.trim(), 200)
                )
            }
        })?
    };
    let winner = value["winner"].as_str().unwrap_or_default().trim();
    let winner = match winner.to_ascii_lowercase().as_str() {
        "a" => "A",
        "b" => "B",
        "tie" => "tie",
        _ => {
            return Err(format!(
                "the verdict's `winner` must be \"A\", \"B\" or \"tie\", not {}",
                value["winner"]
            ));
        }
    };
    let reason = value["reason"]
        .as_str()
        .unwrap_or_default()
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or_default();
    Ok((winner.to_owned(), braid_worker::presets::cut(reason, 300)))
}

/// The last `{...}` of `text` that is a JSON object.
fn last_json_object(text: &str) -> Option<serde_json::Value> {
    let starts: Vec<usize> = text.match_indices('{').map(|(i, _)| i).collect();
    for &start in starts.iter().rev() {
        let mut stream =
            serde_json::Deserializer::from_str(&text[start..]).into_iter::<serde_json::Value>();
        if let Some(Ok(value)) = stream.next()
            && value.is_object()
            && value.get("winner").is_some()
        {
            return Some(value);
        }
    }
    None
}

/// The judge's prompt for candidates `a` (shown as A) and `b` (as B) of a task.
pub fn prompt(task_prompt: &str, criteria: &str, a: &str, b: &str) -> String {
    let criteria = if criteria.trim().is_empty() {
        "Correct and complete for the task first; then simple, readable and consistent with \
         the code around it, with no changes the task did not ask for."
    } else {
        criteria.trim()
    };
    let mut text = String::new();
    let _ = write!(
        text,
        "# Review: which of two changes is better?\n\n\
         Two agents made a change for the same task in this repository. Both changes passed every \
         check the task has. You are the reviewer: decide which change is better. The current \
         folder is the repository at the commit both changes start from; it is read-only. Read \
         any file you need; change nothing.\n\n\
         ## The task\n\n{}\n\n## What makes a change better\n\n{criteria}\n",
        task_prompt.trim()
    );
    for (name, var, diff) in [("A", "BRAID_CANDIDATE_A", a), ("B", "BRAID_CANDIDATE_B", b)] {
        let _ = write!(
            text,
            "\n## Candidate {name}\n\nIts diff against the base (also in the file named by ${var}):\n\n```diff\n{}\n```\n",
            cut_diff(diff, PROMPT_DIFF_MAX, var)
        );
    }
    text.push_str(
        "\n## Your answer\n\nWrite one JSON object to the file named by $BRAID_VERDICT_FILE:\n\n\
         {\"winner\": \"A\", \"reason\": \"one line: why\"}\n\n\
         `winner` is \"A\", \"B\" or \"tie\". If you cannot write that file, end your reply with \
         that JSON object instead.\n",
    );
    text
}

/// `diff` cut at `max` bytes on a line's end, saying where the rest is.
pub fn cut_diff(diff: &str, max: usize, var: &str) -> String {
    if diff.len() <= max {
        return diff.trim_end().to_owned();
    }
    let mut end = max;
    while !diff.is_char_boundary(end) {
        end -= 1;
    }
    let end = diff[..end].rfind('\n').unwrap_or(end);
    format!(
        "{}\n… (cut at {} KiB; the whole diff is in ${var})",
        &diff[..end],
        max >> 10
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn judged(a: u32, b: u32, pick: Option<Pick>) -> Judged {
        Judged { a, b, pick }
    }

    #[test]
    fn a_pick_counts_only_when_it_survives_the_swap() {
        let agreed = [
            judged(1, 3, Some(Pick::Attempt(3))),
            judged(3, 1, Some(Pick::Attempt(3))),
        ];
        assert_eq!(outcome(1, 3, &agreed).winner, Some(3));
        let flipped = [
            judged(1, 3, Some(Pick::Attempt(1))),
            judged(3, 1, Some(Pick::Attempt(3))),
        ];
        let o = outcome(1, 3, &flipped);
        assert_eq!((o.winner, o.flipped), (None, true));
        let half = [judged(1, 3, Some(Pick::Attempt(3))), judged(3, 1, None)];
        let o = outcome(1, 3, &half);
        assert_eq!((o.winner, o.flipped, o.missing), (None, false, 1));
        let tie = [
            judged(1, 3, Some(Pick::Attempt(3))),
            judged(3, 1, Some(Pick::Tie)),
        ];
        assert_eq!(outcome(1, 3, &tie).winner, None);
    }

    #[test]
    fn every_pair_at_once_when_they_fit() {
        let mut t = Tournament::new(0, vec![2, 1, 3], 12);
        assert_eq!(t.next_pairs(&[]), vec![(2, 1), (2, 3), (1, 3)]);
        assert!(t.next_pairs(&[]).is_empty(), "all pairs were judged");
    }

    #[test]
    fn swiss_rounds_spend_at_most_max_pairs_and_never_repeat_a_pair() {
        let seeds: Vec<u32> = (1..=8).collect();
        let mut t = Tournament::new(0, seeds, 12);
        let mut verdicts = Vec::new();
        let mut rounds = 0;
        loop {
            let next = t.next_pairs(&verdicts);
            if next.is_empty() {
                break;
            }
            rounds += 1;
            assert!(next.len() <= 4, "a round pairs each attempt once");
            for (x, y) in next {
                // The lower number always wins, in both orders.
                let w = x.min(y);
                verdicts.push(judged(x, y, Some(Pick::Attempt(w))));
                verdicts.push(judged(y, x, Some(Pick::Attempt(w))));
            }
        }
        assert_eq!(t.pairs.len(), 12);
        assert_eq!(rounds, 3);
        let unique: HashSet<(u32, u32)> = t.pairs.iter().copied().collect();
        assert_eq!(unique.len(), 12);
        // Round 2 paired the winners of round 1 with each other.
        assert!(t.pairs[4..8].contains(&(1, 3)), "{:?}", t.pairs);
    }

    #[test]
    fn verdicts_are_read_from_the_file_or_the_reply() {
        assert_eq!(
            parse_verdict(br#"{"winner": "b", "reason": "smaller\nand clearer"}"#, ""),
            Ok(("B".into(), "smaller".into()))
        );
        let reply = "I compared both.\n{\"winner\": \"tie\", \"reason\": \"same\"}\nDone.";
        assert_eq!(parse_verdict(b"", reply), Ok(("tie".into(), "same".into())));
        assert!(parse_verdict(b"", "no verdict here").is_err());
        assert!(parse_verdict(br#"{"winner": "C"}"#, "").is_err());
        assert!(parse_verdict(b"A", "").is_err());
    }

    #[test]
    fn long_diffs_are_cut_on_a_line_in_the_prompt() {
        let diff = "+line\n".repeat(20_000);
        let cut = cut_diff(&diff, 1024, "BRAID_CANDIDATE_A");
        assert!(cut.len() < 1200);
        assert!(cut.ends_with("the whole diff is in $BRAID_CANDIDATE_A)"));
        assert!(cut.lines().rev().nth(1).unwrap() == "+line");
    }
}
