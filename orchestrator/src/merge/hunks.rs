//! Conflict hunks: the regions between diff3 conflict markers in a merged file, with their
//! line ranges and the three sides' text, capped in size.

use serde::{Deserialize, Serialize};

/// Most bytes kept of one side of a hunk.
pub const SIDE_CAP: usize = 2048;
/// Most hunks kept for one path.
pub const HUNK_CAP: usize = 20;
/// The length of git's conflict markers.
const MARKER: usize = 7;

/// One conflicted region of a file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hunk {
    /// The line of the `<<<<<<<` marker in the conflicted file, 1-based.
    pub start_line: usize,
    /// The line of the `>>>>>>>` marker.
    pub end_line: usize,
    /// The text of the common ancestor.
    pub base: String,
    /// The text of the integration so far (the first side).
    pub ours: String,
    /// The text of the incoming branch.
    pub theirs: String,
    /// Whether a side was cut at [`SIDE_CAP`] bytes.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub truncated: bool,
}

/// The hunks of a conflicted file, and how many more there were past [`HUNK_CAP`].
pub fn parse(text: &str) -> (Vec<Hunk>, usize) {
    #[derive(PartialEq)]
    enum Side {
        Outside,
        Ours,
        Base,
        Theirs,
    }
    let mut hunks = Vec::new();
    let mut more = 0;
    let mut side = Side::Outside;
    let mut current: Option<Hunk> = None;
    for (i, line) in text.split_inclusive('\n').enumerate() {
        let number = i + 1;
        match (&side, marker(line)) {
            (Side::Outside, Some('<')) => {
                side = Side::Ours;
                current = Some(Hunk {
                    start_line: number,
                    end_line: number,
                    base: String::new(),
                    ours: String::new(),
                    theirs: String::new(),
                    truncated: false,
                });
            }
            (Side::Ours, Some('|')) => side = Side::Base,
            (Side::Ours | Side::Base, Some('=')) => side = Side::Theirs,
            (Side::Theirs, Some('>')) => {
                side = Side::Outside;
                if let Some(mut hunk) = current.take() {
                    hunk.end_line = number;
                    if hunks.len() < HUNK_CAP {
                        hunks.push(hunk);
                    } else {
                        more += 1;
                    }
                }
            }
            (Side::Outside, _) => {}
            (_, _) => {
                if let Some(hunk) = current.as_mut() {
                    let text = match side {
                        Side::Ours => &mut hunk.ours,
                        Side::Base => &mut hunk.base,
                        _ => &mut hunk.theirs,
                    };
                    if text.len() + line.len() <= SIDE_CAP {
                        text.push_str(line);
                    } else {
                        hunk.truncated = true;
                    }
                }
            }
        }
    }
    (hunks, more)
}

/// The file with its marker lines' labels replaced, so a person or an agent reading the
/// conflict sees names instead of commit ids.
pub fn relabel(text: &str, ours: &str, base: &str, theirs: &str) -> String {
    text.split_inclusive('\n')
        .map(|line| {
            let label = match marker(line) {
                Some('<') => ours,
                Some('|') => base,
                Some('>') => theirs,
                _ => return line.to_owned(),
            };
            let end = if line.ends_with('\n') { "\n" } else { "" };
            format!("{} {label}{end}", &line[..MARKER])
        })
        .collect()
}

/// Whether a file still holds a conflict marker line.
pub fn has_markers(text: &str) -> bool {
    let mut open = false;
    for line in text.lines() {
        match marker(line) {
            Some('<') => open = true,
            Some('=' | '>') if open => return true,
            _ => {}
        }
    }
    false
}

/// The marker a line starts with: seven of `<`, `|`, `=` or `>`, then a space or the end.
fn marker(line: &str) -> Option<char> {
    let line = line.trim_end_matches(['\n', '\r']);
    let first = line.chars().next()?;
    if !matches!(first, '<' | '|' | '=' | '>') {
        return None;
    }
    let run = line.chars().take_while(|&c| c == first).count();
    let rest = &line[run..];
    (run == MARKER && (rest.is_empty() || rest.starts_with(' '))).then_some(first)
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str =
        "a\n<<<<<<< ours\nOURS\n||||||| base\nb\n=======\nTHEIRS\n>>>>>>> theirs\nc\n";

    #[test]
    fn reads_a_diff3_hunk_with_its_lines() {
        let (hunks, more) = parse(FILE);
        assert_eq!(more, 0);
        assert_eq!(
            hunks,
            [Hunk {
                start_line: 2,
                end_line: 8,
                base: "b\n".into(),
                ours: "OURS\n".into(),
                theirs: "THEIRS\n".into(),
                truncated: false,
            }]
        );
        assert!(has_markers(FILE));
        assert!(!has_markers("a\n======= not a marker\n<<<<<<<< eight\n"));
    }

    #[test]
    fn relabels_markers_only() {
        let text = relabel(FILE, "integration", "base", "task");
        assert!(text.contains("<<<<<<< integration\n"));
        assert!(text.contains("||||||| base\n"));
        assert!(text.contains("=======\n"));
        assert!(text.contains(">>>>>>> task\n"));
        assert_eq!(parse(&text).0, parse(FILE).0);
    }

    #[test]
    fn caps_sides_and_hunks() {
        let long = "x\n".repeat(SIDE_CAP);
        let text = format!("<<<<<<< a\n{long}=======\ny\n>>>>>>> b\n");
        let (hunks, _) = parse(&text.repeat(HUNK_CAP + 3));
        assert_eq!(hunks.len(), HUNK_CAP);
        assert!(hunks[0].truncated);
        assert!(hunks[0].ours.len() <= SIDE_CAP);
        assert_eq!(hunks[0].theirs, "y\n");
        let (_, more) = parse(&text.repeat(HUNK_CAP + 3));
        assert_eq!(more, 3);
    }
}
