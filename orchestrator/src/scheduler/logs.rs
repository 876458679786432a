//! Log files of attempts, written into the run's log folder from the bytes workers send
//! (`LogChunk`), by a thread of its own so the loop never waits on the disk.
//!
//! Invariant: a file is written only under the run's log folder, by a name checked here
//! (one file name, made of safe characters, starting with the attempt's own stem), never
//! through a symbolic link, and never past the run's log cap.

use std::io::{Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::thread::JoinHandle;

/// Whether `name` is a log file an attempt whose files start with `stem` (`parser.2`) may
/// write: one file name of letters, digits, `.`, `-` and `_`, beginning with `stem.`.
pub fn name_ok(name: &str, stem: &str) -> bool {
    name.len() <= 255
        && name
            .strip_prefix(stem)
            .and_then(|rest| rest.strip_prefix('.'))
            .is_some_and(|rest| !rest.is_empty())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'))
        && !name.contains("..")
}

/// Where the report names a log a worker sent: the file in `dir`, when `name` is one the
/// attempt with `stem` may have written.
pub fn path_of(dir: &Path, name: &str, stem: &str) -> Option<String> {
    name_ok(name, stem).then(|| dir.join(name).to_string_lossy().into_owned())
}

struct Piece {
    path: PathBuf,
    offset: u64,
    data: Vec<u8>,
}

/// The writer: a channel in, a thread that writes.
#[derive(Debug)]
pub struct LogWriter {
    tx: Option<mpsc::Sender<Piece>>,
    thread: Option<JoinHandle<()>>,
    cap: u64,
}

impl LogWriter {
    /// Starts the writer; files are cut at `cap` bytes.
    pub fn start(cap: u64) -> Self {
        let (tx, rx) = mpsc::channel::<Piece>();
        let thread = std::thread::Builder::new()
            .name("braid-logs".into())
            .spawn(move || {
                for piece in rx {
                    if let Err(err) = write(&piece, cap) {
                        tracing::warn!(path = %piece.path.display(), %err, "could not write a log file");
                    }
                }
            });
        match thread {
            Ok(thread) => LogWriter {
                tx: Some(tx),
                thread: Some(thread),
                cap,
            },
            Err(err) => {
                tracing::warn!(%err, "could not start the log writer; writing logs inline");
                LogWriter {
                    tx: None,
                    thread: None,
                    cap,
                }
            }
        }
    }

    /// Queues `data` for `offset` of the file `name` in `dir`; the name must have passed
    /// [`name_ok`].
    pub fn send(&self, dir: &Path, name: &str, offset: u64, data: Vec<u8>) {
        let piece = Piece {
            path: dir.join(name),
            offset,
            data,
        };
        let piece = match &self.tx {
            Some(tx) => match tx.send(piece) {
                Ok(()) => return,
                Err(mpsc::SendError(piece)) => piece,
            },
            None => piece,
        };
        if let Err(err) = write(&piece, self.cap) {
            tracing::warn!(path = %piece.path.display(), %err, "could not write a log file");
        }
    }

    /// Writes everything queued; afterwards, writes happen inline.
    pub async fn finish(&mut self) {
        self.tx = None;
        if let Some(thread) = self.thread.take() {
            let _ = tokio::task::spawn_blocking(move || thread.join()).await;
        }
    }
}

fn write(piece: &Piece, cap: u64) -> std::io::Result<()> {
    if piece.offset >= cap {
        return Ok(());
    }
    let room = (cap - piece.offset).min(piece.data.len() as u64) as usize;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&piece.path)?;
    file.seek(SeekFrom::Start(piece.offset))?;
    file.write_all(&piece.data[..room])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_attempts_own_file_names_pass() {
        for good in [
            "parser.2.agent.log",
            "parser.2.check.unit-tests.log",
            "a.1.events.jsonl",
        ] {
            assert!(
                name_ok(
                    good,
                    good.split('.')
                        .take(2)
                        .collect::<Vec<_>>()
                        .join(".")
                        .as_str()
                ),
                "{good}"
            );
        }
        for bad in [
            "../parser.2.agent.log",
            "parser.2./../../x",
            "parser.2.",
            "parser.2",
            "parser.3.agent.log",
            "other.2.agent.log",
            "parser.2.a/b",
            "parser.2.a b",
            "parser.2..x",
            "parser.20.agent.log",
        ] {
            assert!(!name_ok(bad, "parser.2"), "{bad}");
        }
    }

    #[tokio::test]
    async fn pieces_land_at_their_offsets_and_stop_at_the_cap() {
        let dir = tempfile::tempdir().unwrap();
        let mut writer = LogWriter::start(10);
        writer.send(dir.path(), "t.1.agent.log", 0, b"hello ".to_vec());
        writer.send(dir.path(), "t.1.agent.log", 6, b"world, and more".to_vec());
        writer.send(dir.path(), "t.1.agent.log", 40, b"past".to_vec());
        writer.finish().await;
        assert_eq!(
            std::fs::read(dir.path().join("t.1.agent.log")).unwrap(),
            b"hello worl"
        );
        // Never through a link.
        let target = dir.path().join("target");
        std::fs::write(&target, "keep").unwrap();
        std::os::unix::fs::symlink(&target, dir.path().join("t.1.linked.log")).unwrap();
        writer.send(dir.path(), "t.1.linked.log", 0, b"overwritten".to_vec());
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "keep");
    }
}
