//! Results: each row is one measure of braid, its baseline measured in the same run, the
//! ratio of their medians, and the goal it is held to.

use std::fmt::Write;
use std::time::Duration;

use serde::Serialize;

/// What a row must reach.
#[derive(Debug, Clone, Copy, Serialize)]
#[serde(tag = "kind", content = "value", rename_all = "snake_case")]
pub enum Goal {
    /// braid's median over the baseline's median at most this.
    RatioAtMost(f64),
    /// braid's median at least this.
    AtLeast(f64),
    /// braid's median at most this.
    AtMost(f64),
    /// No goal: measured to be seen.
    None,
}

/// How a row's numbers read.
#[derive(Debug, Clone, Copy, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Unit {
    /// Seconds, shown in ms or s.
    Seconds,
    /// Attempts per second.
    PerSecond,
    /// Bytes, shown in MB.
    Bytes,
    /// A share (of a core), shown in percent.
    Share,
}

/// The baseline a row is compared with.
#[derive(Debug, Clone, Serialize)]
pub struct Baseline {
    /// What it is, in words.
    pub name: String,
    /// Its samples.
    pub samples: Vec<f64>,
}

/// One measure.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    /// The scenario.
    pub scenario: String,
    /// What braid did, in words.
    pub measure: String,
    /// How the numbers read.
    pub unit: Unit,
    /// braid's samples.
    pub samples: Vec<f64>,
    /// The baseline, when the goal is a ratio.
    pub baseline: Option<Baseline>,
    /// The goal.
    pub goal: Goal,
    /// Anything else worth knowing about the numbers.
    pub note: String,
}

/// The middle sample (the upper middle of an even count).
pub fn median(samples: &[f64]) -> f64 {
    let mut sorted = samples.to_vec();
    sorted.sort_by(f64::total_cmp);
    sorted.get(sorted.len() / 2).copied().unwrap_or(f64::NAN)
}

/// The `q` quantile (0..=1) of `samples`, by the nearest rank.
pub fn quantile(samples: &[f64], q: f64) -> f64 {
    let mut sorted = samples.to_vec();
    sorted.sort_by(f64::total_cmp);
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

/// Seconds of `d`.
pub fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

impl Row {
    /// braid's median.
    pub fn median(&self) -> f64 {
        median(&self.samples)
    }

    /// braid's median over the baseline's.
    pub fn ratio(&self) -> Option<f64> {
        self.baseline
            .as_ref()
            .map(|b| self.median() / median(&b.samples))
    }

    /// Whether the goal is met; `None` when there is none.
    pub fn met(&self) -> Option<bool> {
        match self.goal {
            Goal::RatioAtMost(x) => Some(self.ratio().is_some_and(|r| r <= x)),
            Goal::AtLeast(x) => Some(self.median() >= x),
            Goal::AtMost(x) => Some(self.median() <= x),
            Goal::None => None,
        }
    }

    fn goal_text(&self) -> String {
        match self.goal {
            Goal::RatioAtMost(x) => format!("≤ {x}×"),
            Goal::AtLeast(x) => format!("≥ {}", self.unit.show(x)),
            Goal::AtMost(x) => format!("≤ {}", self.unit.show(x)),
            Goal::None => "—".into(),
        }
    }
}

impl Unit {
    /// `value` in this unit, for people.
    pub fn show(self, value: f64) -> String {
        match self {
            // A difference of two times may come out below zero.
            Unit::Seconds if value < 0.0 => format!("−{}", self.show(-value)),
            Unit::Seconds if value < 0.001 => format!("{:.0} µs", value * 1e6),
            Unit::Seconds if value < 0.1 => format!("{:.2} ms", value * 1e3),
            Unit::Seconds if value < 10.0 => format!("{:.0} ms", value * 1e3),
            Unit::Seconds => format!("{value:.1} s"),
            Unit::PerSecond => format!("{value:.0}/s"),
            Unit::Bytes => format!("{:.0} MB", value / 1e6),
            Unit::Share => format!("{:.1}%", value * 100.0),
        }
    }
}

/// The rows as a Markdown table, as README.md shows it.
pub fn markdown(rows: &[Row]) -> String {
    let mut out = String::from(
        "| scenario | braid (median) | baseline (median) | ratio | goal | met |\n|---|---|---|---|---|---|\n",
    );
    for row in rows {
        let baseline = match &row.baseline {
            Some(b) => format!("{} {}", b.name, row.unit.show(median(&b.samples))),
            None => "—".into(),
        };
        let ratio = match row.ratio() {
            Some(r) if r < 1.0 => format!("{r:.3}× ({:.1}× faster)", 1.0 / r),
            Some(r) => format!("{r:.3}×"),
            None => "—".into(),
        };
        let _ = writeln!(
            out,
            "| {}: {} | {} | {} | {} | {} | {} |",
            row.scenario,
            row.measure,
            row.unit.show(row.median()),
            baseline,
            ratio,
            row.goal_text(),
            match row.met() {
                Some(true) => "yes",
                Some(false) => "**no**",
                None => "—",
            }
        );
    }
    out
}
