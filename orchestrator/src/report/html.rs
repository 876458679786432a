//! report.html: one self-contained page for a run. The DAG drawn as SVG with each task
//! coloured by status, each task's attempts side by side with their diffs and how alike
//! they are, the conflicts, the verification, and a timeline of which attempt ran on which
//! worker slot when.
//!
//! Invariant: the page loads nothing. No scripts, no fonts, no images, no links out: styles
//! are inline and the drawings are inline SVG, so it opens the same from a mail attachment
//! as from the state directory.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use super::compare::Comparison;
use super::{AttemptReport, Report, TaskReport, seconds, short, word};

/// Escapes text for HTML.
fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

const STYLE: &str = "
body{font:14px/1.45 system-ui,sans-serif;margin:2em auto;max-width:1200px;padding:0 1em;color:#1d2330}
h1{font-size:1.5em}h2{margin-top:2em;border-bottom:1px solid #ccd;padding-bottom:.2em}
table{border-collapse:collapse;margin:.6em 0}td,th{border:1px solid #ccd;padding:.25em .55em;text-align:left;vertical-align:top}
th{background:#eef0f5}.num{text-align:right}
.beside{display:flex;flex-wrap:wrap;gap:2em;align-items:flex-start}.judge td{max-width:32em}
.succeeded,.passed{color:#17733a}.failed,.timed_out,.lost{color:#b3261e}.cancelled,.skipped,.blocked{color:#6b6f7a}.pre_existing{color:#9a6700}
tr.winner{background:#eefaf0}
pre{background:#f6f7f9;padding:.6em;overflow:auto;font-size:12px}
pre .add{color:#17733a}pre .del{color:#b3261e}pre .hunk{color:#5a39a8}
svg text{font:12px system-ui,sans-serif}
.meta{color:#555}
";

/// Fill colours of task and attempt statuses in the drawings.
fn fill(status: &str) -> &'static str {
    match status {
        "succeeded" | "passed" => "#c9ecd4",
        "failed" | "timed_out" | "lost" => "#f6c9c5",
        "blocked" => "#e6e0f0",
        _ => "#e4e6eb",
    }
}

impl Report {
    /// The report as one HTML page; `comparisons` holds each task's attempts compared, with
    /// diffs, in task order.
    pub fn html(&self, comparisons: &[Comparison]) -> String {
        let mut h = String::new();
        let title = format!(
            "braid {} {}: {}",
            self.name.as_deref().unwrap_or("run"),
            self.run,
            word(self.status)
        );
        let _ = write!(
            h,
            "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
             <meta name=\"viewport\" content=\"width=device-width\">\
             <title>{}</title><style>{STYLE}</style></head><body>\n",
            esc(&title)
        );
        let _ = writeln!(
            h,
            "<h1>{}</h1><p class=\"meta\">repository <code>{}</code> · base <code>{}</code> ({}) · started {} · took {} · result <code>{}</code> at <code>{}</code></p>",
            esc(&title),
            esc(&self.repo),
            short(&self.base),
            esc(&self.base_rev),
            esc(&self.started_at),
            seconds(self.duration_ms),
            esc(&self.result.branch),
            self.result.commit.as_deref().map(short).unwrap_or("none"),
        );
        if self.usage != super::Usage::default() {
            let _ = writeln!(
                h,
                "<p class=\"meta\">spent: {}</p>",
                esc(&self.usage.text())
            );
        }
        for why in &self.stopped {
            let _ = writeln!(
                h,
                "<p class=\"stopped\"><strong>Stopped early:</strong> {}</p>",
                esc(why)
            );
        }
        h.push_str("<h2>Tasks</h2>\n");
        h.push_str(&self.dag_svg());
        for (task, comparison) in self.tasks.iter().zip(comparisons) {
            task_section(&mut h, task, comparison);
        }
        self.integration_section(&mut h);
        h.push_str("<h2>Timeline</h2>\n");
        h.push_str(&self.timeline_svg());
        h.push_str("</body></html>\n");
        h
    }

    /// The DAG, one column per layer.
    fn dag_svg(&self) -> String {
        let index: BTreeMap<&str, usize> = self
            .tasks
            .iter()
            .enumerate()
            .map(|(i, t)| (t.id.as_str(), i))
            .collect();
        // A task's layer is one more than its deepest dep's; deps come first in a plan's
        // DAG order, but not necessarily in plan order, so repeat until nothing moves.
        let mut layer = vec![0usize; self.tasks.len()];
        for _ in 0..self.tasks.len() {
            for (i, t) in self.tasks.iter().enumerate() {
                for d in &t.deps {
                    if let Some(&j) = index.get(d.as_str()) {
                        layer[i] = layer[i].max(layer[j] + 1);
                    }
                }
            }
        }
        let (w, hgt, gap_x, gap_y) = (170.0, 44.0, 70.0, 18.0);
        let mut rows = vec![0usize; self.tasks.len() + 1];
        let mut at = vec![(0.0, 0.0); self.tasks.len()];
        for (i, &l) in layer.iter().enumerate() {
            at[i] = (
                10.0 + l as f64 * (w + gap_x),
                10.0 + rows[l] as f64 * (hgt + gap_y),
            );
            rows[l] += 1;
        }
        let width = 20.0 + (layer.iter().max().map_or(0, |m| m + 1)) as f64 * (w + gap_x);
        let height = 20.0 + rows.iter().max().copied().unwrap_or(1) as f64 * (hgt + gap_y);
        let mut s = format!(
            "<svg class=\"dag\" role=\"img\" aria-label=\"task graph\" width=\"{width}\" height=\"{height}\" viewBox=\"0 0 {width} {height}\">\
             <defs><marker id=\"arrow\" viewBox=\"0 0 10 10\" refX=\"10\" refY=\"5\" markerWidth=\"7\" markerHeight=\"7\" orient=\"auto\"><path d=\"M0,0L10,5L0,10z\" fill=\"#667\"/></marker></defs>\n"
        );
        for (i, t) in self.tasks.iter().enumerate() {
            for d in &t.deps {
                if let Some(&j) = index.get(d.as_str()) {
                    let (x1, y1) = (at[j].0 + w, at[j].1 + hgt / 2.0);
                    let (x2, y2) = (at[i].0, at[i].1 + hgt / 2.0);
                    let _ = writeln!(
                        s,
                        "<path class=\"edge\" d=\"M{x1},{y1} C{},{y1} {},{y2} {x2},{y2}\" fill=\"none\" stroke=\"#667\" marker-end=\"url(#arrow)\"/>",
                        x1 + gap_x / 2.0,
                        x2 - gap_x / 2.0
                    );
                }
            }
        }
        for (i, t) in self.tasks.iter().enumerate() {
            let status = word(t.status);
            let (x, y) = at[i];
            let winner = t.winner.map(|n| format!("winner #{n}")).unwrap_or_default();
            let _ = writeln!(
                s,
                "<a href=\"#task-{id}\"><g class=\"node\" data-task=\"{id}\" data-status=\"{status}\"><title>{id}: {status}</title>\
                 <rect x=\"{x}\" y=\"{y}\" width=\"{w}\" height=\"{hgt}\" rx=\"6\" fill=\"{}\" stroke=\"#556\"/>\
                 <text x=\"{}\" y=\"{}\" font-weight=\"600\">{id}</text><text x=\"{}\" y=\"{}\">{status} {winner}</text></g></a>",
                fill(&status),
                x + 8.0,
                y + 18.0,
                x + 8.0,
                y + 35.0,
                id = esc(&t.id),
            );
        }
        s.push_str("</svg>\n");
        s
    }

    fn integration_section(&self, h: &mut String) {
        h.push_str("<h2>Integration</h2>\n");
        if self.result.integrated.is_empty() {
            h.push_str("<p>Nothing was integrated.</p>\n");
        } else {
            h.push_str(
                "<table class=\"steps\"><tr><th>task</th><th>route</th><th>commit</th></tr>\n",
            );
            for step in &self.result.steps {
                let _ = writeln!(
                    h,
                    "<tr><td>{}</td><td>{}</td><td><code>{}</code></td></tr>",
                    esc(&step.task),
                    esc(&step.route),
                    short(&step.commit)
                );
            }
            h.push_str("</table>\n");
        }
        h.push_str("<h3>Conflicts</h3>\n");
        if self.result.conflicts.is_empty() && self.result.predicted.is_empty() {
            h.push_str("<p class=\"conflicts\">No conflicts.</p>\n");
        } else {
            h.push_str("<table class=\"conflicts\"><tr><th>tasks</th><th>stage</th><th>paths</th><th>outcome</th></tr>\n");
            for c in &self.result.conflicts {
                let paths: Vec<String> = c
                    .details
                    .iter()
                    .map(|d| format!("{} ({})", esc(&d.path), esc(&word(d.kind))))
                    .collect();
                let paths = if paths.is_empty() {
                    esc(&c.paths.join(", "))
                } else {
                    paths.join("<br>")
                };
                let _ = writeln!(
                    h,
                    "<tr><td>{}</td><td>{}</td><td>{paths}</td><td>{}</td></tr>",
                    esc(&c.tasks.join(" × ")),
                    esc(&c.stage),
                    esc(&c.outcome)
                );
            }
            for p in &self.result.predicted {
                let _ = writeln!(
                    h,
                    "<tr><td>{}</td><td>predicted at {}</td><td>{}</td><td>{}</td></tr>",
                    esc(&p.tasks.join(" × ")),
                    seconds(p.at_ms),
                    esc(&p.paths.join(", ")),
                    esc(&p.action)
                );
            }
            h.push_str("</table>\n");
        }
        h.push_str("<h3>Verification</h3>\n");
        if self.result.verify.is_empty() {
            h.push_str("<p class=\"verify\">No verify checks.</p>\n");
        } else {
            h.push_str("<table class=\"verify\"><tr><th>check</th><th>status</th><th>exit</th><th>time</th></tr>\n");
            for c in &self.result.verify {
                let status = word(c.status);
                let _ = writeln!(
                    h,
                    "<tr><td>{}</td><td class=\"{status}\">{status}</td><td>{}</td><td>{}</td></tr>",
                    esc(&c.name),
                    c.exit_code.map_or("-".into(), |c| c.to_string()),
                    seconds(c.duration_ms)
                );
            }
            h.push_str("</table>\n");
        }
    }

    /// Which attempt ran on which worker slot when.
    fn timeline_svg(&self) -> String {
        let mut runs: Vec<(&TaskReport, &AttemptReport)> = self
            .tasks
            .iter()
            .flat_map(|t| t.attempts.iter().map(move |a| (t, a)))
            .filter(|(_, a)| a.started_ms.is_some() && a.worker.is_some())
            .collect();
        runs.sort_by_key(|(_, a)| (a.started_ms, a.n));
        // Each worker's slots are lanes; an attempt takes the first lane free at its start.
        let mut lanes: BTreeMap<&str, Vec<u64>> = BTreeMap::new();
        let mut placed = Vec::new();
        for (t, a) in &runs {
            let worker = a.worker.as_deref().unwrap_or("");
            let start = a.started_ms.unwrap_or(0);
            let end = a
                .finished_ms
                .unwrap_or(start + a.duration_ms)
                .max(start + 1);
            let free = lanes.entry(worker).or_default();
            let lane = match free.iter().position(|&busy| busy <= start) {
                Some(lane) => {
                    free[lane] = end;
                    lane
                }
                None => {
                    free.push(end);
                    free.len() - 1
                }
            };
            placed.push((*t, *a, worker, lane, start, end));
        }
        let mut rows: Vec<(String, usize)> = Vec::new();
        for (worker, lanes) in &lanes {
            for lane in 0..lanes.len() {
                rows.push((worker.to_string(), lane));
            }
        }
        let span = self.duration_ms.max(1) as f64;
        let (left, plot, row_h) = (110.0, 1000.0, 26.0);
        let height = 30.0 + rows.len().max(1) as f64 * row_h;
        let mut s = format!(
            "<svg class=\"timeline\" role=\"img\" aria-label=\"attempts over time\" width=\"{}\" height=\"{height}\" viewBox=\"0 0 {} {height}\">\n",
            left + plot + 10.0,
            left + plot + 10.0
        );
        for (i, (worker, lane)) in rows.iter().enumerate() {
            let _ = writeln!(
                s,
                "<text x=\"4\" y=\"{}\">{} slot {}</text>",
                20.0 + i as f64 * row_h + 13.0,
                esc(worker),
                lane + 1
            );
        }
        for (t, a, worker, lane, start, end) in placed {
            let row = rows
                .iter()
                .position(|(w, l)| w == worker && *l == lane)
                .unwrap_or(0);
            let x = left + start as f64 / span * plot;
            let width = ((end - start) as f64 / span * plot).max(2.0);
            let y = 20.0 + row as f64 * row_h;
            let status = word(a.status);
            let label = format!("{}#{}", t.id, a.n);
            let _ = writeln!(
                s,
                "<g class=\"run\" data-task=\"{id}\" data-attempt=\"{n}\"><title>{label}: {status}, {} to {}</title>\
                 <rect x=\"{x:.1}\" y=\"{y}\" width=\"{width:.1}\" height=\"{}\" rx=\"3\" fill=\"{}\" stroke=\"#889\"/>\
                 <text x=\"{:.1}\" y=\"{}\">{label}</text></g>",
                seconds(start),
                seconds(end),
                row_h - 6.0,
                fill(&status),
                x + 3.0,
                y + 14.0,
                id = esc(&t.id),
                n = a.n,
                label = esc(&label),
            );
        }
        let _ = writeln!(
            s,
            "<text x=\"{left}\" y=\"12\">0s</text><text x=\"{}\" y=\"12\" text-anchor=\"end\">{}</text></svg>",
            left + plot,
            seconds(self.duration_ms)
        );
        s
    }
}

fn task_section(h: &mut String, task: &TaskReport, c: &Comparison) {
    let status = word(task.status);
    let _ = writeln!(
        h,
        "<section class=\"task\" id=\"task-{id}\"><h2>Task {id}: <span class=\"{status}\">{status}</span></h2>",
        id = esc(&task.id)
    );
    let mut meta = Vec::new();
    if !task.deps.is_empty() {
        meta.push(format!("after {}", esc(&task.deps.join(", "))));
    }
    if let Some(base) = &task.base {
        meta.push(format!("base <code>{}</code>", short(base)));
    }
    if !task.select.is_empty() {
        meta.push(format!("select {}", esc(&task.select)));
    }
    let _ = writeln!(h, "<p class=\"meta\">{}</p>", meta.join(" · "));
    match (task.winner, &task.reason) {
        (Some(n), Some(reason)) => {
            let _ = writeln!(
                h,
                "<p class=\"why\">Winner: attempt {n}, because: {}.</p>",
                esc(reason)
            );
        }
        (None, Some(reason)) => {
            let _ = writeln!(h, "<p class=\"why\">No winner: {}.</p>", esc(reason));
        }
        _ => {}
    }
    if !task.baseline.is_empty() {
        let on_base: Vec<String> = task
            .baseline
            .iter()
            .map(|b| {
                let st = word(b.status);
                format!("{} <span class=\"{st}\">{st}</span>", esc(&b.name))
            })
            .collect();
        let _ = writeln!(
            h,
            "<p class=\"baseline\">Checks on the base: {}.</p>",
            on_base.join(", ")
        );
    }
    if c.attempts.is_empty() {
        h.push_str("</section>\n");
        return;
    }
    h.push_str("<table class=\"attempts\"><tr><th>attempt</th><th>status</th><th>agent</th>");
    for name in &c.checks {
        let _ = write!(h, "<th>{}</th>", esc(name));
    }
    h.push_str("<th>score</th><th>files</th><th>lines</th><th>time</th><th>tokens</th><th>cost</th><th>worker</th><th>note</th></tr>\n");
    for row in &c.attempts {
        let _ = write!(
            h,
            "<tr class=\"{}\"><td>{}{}</td><td class=\"{st}\">{st}</td><td>{}</td>",
            if row.winner { "winner" } else { "" },
            row.n,
            if row.winner { " ★" } else { "" },
            esc(&match (&row.agent, &row.model) {
                (Some(a), Some(m)) => format!("{a} {m}"),
                (Some(a), None) => a.clone(),
                _ => "-".into(),
            }),
            st = esc(&row.status)
        );
        for check in &row.checks {
            let st = check.clone().unwrap_or_else(|| "-".into());
            let _ = write!(h, "<td class=\"{st}\">{st}</td>", st = esc(&st));
        }
        let _ = writeln!(
            h,
            "<td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">+{} -{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td>{}</td><td>{}</td></tr>",
            row.score.map_or("-".into(), |s| s.to_string()),
            row.files,
            row.insertions,
            row.deletions,
            seconds(row.duration_ms),
            row.tokens_text(),
            row.cost_text(),
            esc(row.worker.as_deref().unwrap_or("-")),
            esc(&row.note_text()),
        );
    }
    h.push_str("</table>\n");
    if c.agents.len() > 1 {
        h.push_str("<table class=\"agents\"><tr><th>agent</th><th>attempts</th><th>passed</th><th>median time</th><th>spent</th><th></th></tr>\n");
        for a in &c.agents {
            let _ = writeln!(
                h,
                "<tr><td>{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td>{}</td><td>{}</td></tr>",
                esc(&match &a.model {
                    Some(m) => format!("{} {m}", a.agent),
                    None => a.agent.clone(),
                }),
                a.attempts,
                a.passed,
                seconds(a.median_ms),
                esc(&a.usage.text()),
                if a.won { "winner" } else { "" },
            );
        }
        h.push_str("</table>\n");
    }
    h.push_str("<div class=\"beside\">");
    if c.attempts.len() > 1 {
        h.push_str("<div><p>Similarity: the share of changed lines two attempts have in common.</p><table class=\"similarity\"><tr><th></th>");
        for r in &c.attempts {
            let _ = write!(h, "<th>{}</th>", r.n);
        }
        h.push_str("</tr>\n");
        for (r, values) in c.attempts.iter().zip(&c.similarity) {
            let _ = write!(h, "<tr><th>{}</th>", r.n);
            for v in values {
                match v {
                    Some(v) => {
                        let shade = 255 - (v * 90.0) as u8;
                        let _ = write!(
                            h,
                            "<td class=\"num\" style=\"background:rgb({shade},{shade},255)\">{v:.2}</td>"
                        );
                    }
                    None => h.push_str("<td class=\"num\">-</td>"),
                }
            }
            h.push_str("</tr>\n");
        }
        h.push_str("</table></div>\n");
    }
    if let Some(judge) = &c.judge {
        judge_html(h, judge);
    }
    h.push_str("</div>\n");
    for r in &c.attempts {
        let Some(diff) = &r.diff else { continue };
        let _ = write!(
            h,
            "<details class=\"diff\"><summary>attempt {} diff (+{} -{}, <code>{}</code>)</summary><pre>",
            r.n,
            r.insertions,
            r.deletions,
            esc(&r.branch)
        );
        for line in diff.lines() {
            let class = if line.starts_with("+++") || line.starts_with("---") {
                ""
            } else if line.starts_with('+') {
                "add"
            } else if line.starts_with('-') {
                "del"
            } else if line.starts_with("@@") {
                "hunk"
            } else {
                ""
            };
            if class.is_empty() {
                let _ = writeln!(h, "{}", esc(line));
            } else {
                let _ = writeln!(h, "<span class=\"{class}\">{}</span>", esc(line));
            }
        }
        h.push_str("</pre></details>\n");
    }
    h.push_str("</section>\n");
}

/// The judge's tournament: every verdict with its reason, and the standings.
fn judge_html(h: &mut String, judge: &crate::judge::JudgeReport) {
    let _ = writeln!(
        h,
        "<div class=\"judge\"><p>Judge: {}, {} of {} pair(s) judged, each in both orders{}.</p><table><tr><th>A</th><th>B</th><th>pick</th><th>reason</th></tr>",
        esc(&judge.agent),
        judge.pairs_judged,
        judge.pairs_possible,
        if judge.tie_broken_by_best {
            "; level on wins, settled by best"
        } else {
            ""
        }
    );
    for v in &judge.verdicts {
        let pick = match v.winner.as_deref() {
            Some("A") => format!("#{}", v.a),
            Some("B") => format!("#{}", v.b),
            Some(_) => "tie".to_owned(),
            None => "none".to_owned(),
        };
        let reason = v.error.as_deref().unwrap_or(&v.reason);
        let _ = writeln!(
            h,
            "<tr><td>#{}</td><td>#{}</td><td>{}</td><td>{}</td></tr>",
            v.a,
            v.b,
            esc(&pick),
            esc(reason)
        );
    }
    h.push_str(
        "</table><table><tr><th>attempt</th><th>wins</th><th>ties</th><th>losses</th></tr>\n",
    );
    for s in &judge.standings {
        let _ = writeln!(
            h,
            "<tr><td>#{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td></tr>",
            s.n, s.wins, s.ties, s.losses
        );
    }
    h.push_str("</table></div>\n");
}
