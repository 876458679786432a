//! A pooled worktree's own files in git's folder for it (`<common>/worktrees/<name>/`): its
//! index and its HEAD, written in place.
//!
//! git writes these through a lock file renamed over the old one, so every write makes a
//! file and deletes one. braid moves, stages and commits each of its worktrees several
//! times a second, and on ext4 making a file gets slower with every file deleted nearby in
//! the last minutes (it skips each such inode while it looks for a free one): measured on
//! `cargo run --release -p braid-bench -- makespan`, that search was a fifth of the run's
//! busy time. Written in place, the files keep their inodes and nothing is deleted.
//!
//! Invariant: only braid's own worktrees are written this way, and only by the one attempt
//! that holds the worktree, so no git command reads or writes them meanwhile; a write cut
//! short leaves a file git refuses to read, and the pool then drops that worktree.

use std::io::Write;
use std::path::Path;

use braid_shared::git::{IDENTITY_EMAIL, IDENTITY_NAME};
use gix::ObjectId;

/// Reads the worktree's index without checking its checksum: braid wrote it (or git did,
/// which checks its own), and hashing the whole file on every read was the largest part of
/// staging an attempt (measured: half of it on a 200-file index). The checksum is still
/// written, for git.
pub fn read_index(repo: &gix::Repository) -> Result<gix::index::File, String> {
    gix::index::File::at(
        repo.index_path(),
        repo.object_hash(),
        true,
        gix::index::decode::Options {
            thread_limit: Some(1),
            ..Default::default()
        },
    )
    .map_err(|e| format!("reading the index: {e}"))
}

/// What tells whether the index file was written since: its inode, size and change time
/// (which no process can set back).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp(u64, u64, i64, i64);

/// The stamp of the worktree's index file now, if it is a file.
pub fn stamp(repo: &gix::Repository) -> Option<Stamp> {
    stamp_of(&repo.index_path())
}

fn stamp_of(path: &Path) -> Option<Stamp> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::symlink_metadata(path).ok()?;
    meta.is_file()
        .then(|| Stamp(meta.ino(), meta.size(), meta.ctime(), meta.ctime_nsec()))
}

/// The commit the worktree's HEAD points at.
pub fn head(repo: &gix::Repository) -> Result<ObjectId, String> {
    repo.head_id()
        .map(gix::Id::detach)
        .map_err(|e| format!("reading HEAD: {e}"))
}

/// How braid writes an index: without the checksum of its contents (git's `index.skipHash`,
/// which git reads since 2.40, as braid's worktrees' config says): hashing the index was
/// a large part of every move and commit of a worktree of a large repository.
pub const WRITE: gix::index::write::Options = gix::index::write::Options {
    extensions: gix::index::write::Extensions::All,
    skip_hash: true,
};

/// Writes `index` over the file it was read from: only the pages that differ from what
/// braid wrote there last, when the file is still that (a move or a commit changes the
/// entries of a few files; rewriting all 2 MB of a 20,000-file index each time cost more
/// than the rest of the step).
pub fn write_index(index: &gix::index::File) -> Result<(), String> {
    let path = index.path();
    let last = || {
        LAST.lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    };
    // The bytes are made in the buffer of the write before last: a new 2 MB buffer for
    // every write was a page fault per 4 KB. Taken out, so that other worktrees' writes
    // do not wait on this one (only one attempt writes a worktree's index at a time).
    let taken = last().remove(path);
    let (before, mut bytes) = match taken {
        Some(Written {
            stamp,
            bytes,
            spare,
        }) => (Some(bytes).filter(|_| Some(stamp) == stamp_of(path)), spare),
        None => (None, Vec::new()),
    };
    bytes.clear();
    if !serialize(index, &mut bytes) {
        bytes.clear();
        index
            .write_to(&mut bytes, WRITE)
            .map_err(|e| format!("writing the index: {e}"))?;
    }
    match &before {
        Some(old) => patch(path, old, &bytes),
        None => overwrite(path, &bytes),
    }
    .map_err(|e| format!("writing the index: {e}"))?;
    if let Some(stamp) = stamp_of(path) {
        let spare = before.unwrap_or_default();
        last().insert(
            path.to_owned(),
            Written {
                stamp,
                bytes,
                spare,
            },
        );
    }
    Ok(())
}

/// What braid last wrote to a worktree's index file: the file's stamp after, the bytes,
/// and a buffer for the next.
struct Written {
    stamp: Stamp,
    bytes: Vec<u8>,
    spare: Vec<u8>,
}

/// What braid last wrote to each worktree's index file.
static LAST: std::sync::LazyLock<
    std::sync::Mutex<std::collections::HashMap<std::path::PathBuf, Written>>,
> = std::sync::LazyLock::new(Default::default);

/// Forgets what braid wrote to the index file at `path` (its worktree is gone).
pub fn forget_index(path: &Path) {
    LAST.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .remove(path);
}

/// Writes what of `new` differs from `old`, the file's bytes now: the 4 KB pages that
/// differ where the two are as long, or else everything from the first page that
/// differs, and then the length.
fn patch(path: &Path, old: &[u8], new: &[u8]) -> std::io::Result<()> {
    use std::os::unix::fs::FileExt;
    const PAGE: usize = 4096;
    let file = std::fs::OpenOptions::new().write(true).open(path)?;
    let pages = old.chunks(PAGE).zip(new.chunks(PAGE));
    if old.len() == new.len() {
        for (i, (was, now)) in pages.enumerate() {
            if was != now {
                file.write_all_at(now, (i * PAGE) as u64)?;
            }
        }
        return Ok(());
    }
    let first = pages.take_while(|(was, now)| was == now).count() * PAGE;
    file.write_all_at(&new[first.min(new.len())..], first as u64)?;
    file.set_len(new.len() as u64)
}

/// The bytes of `index` as gix writes it with [`WRITE`], made in one pass over the
/// entries: gix writes each field through a `dyn Write`, which took 5 ms for a 20,000-entry
/// index here, three times an attempt. `None` for what only gix writes: a cached tree, a
/// sparse index, entries marked removed: then it writes nothing and returns `false`.
fn serialize(index: &gix::index::State, out: &mut Vec<u8>) -> bool {
    use gix::index::entry::Flags;
    let entries = index.entries();
    if index.tree().is_some()
        || index.is_sparse()
        || entries.iter().any(|e| e.flags.contains(Flags::REMOVE))
    {
        return false;
    }
    let extended = entries.iter().any(|e| e.flags.contains(Flags::EXTENDED));
    let paths: usize = entries.iter().map(|e| e.path(index).len()).sum();
    let Ok(count) = u32::try_from(entries.len()) else {
        return false;
    };
    out.reserve(12 + entries.len() * 72 + paths + 20);
    out.extend_from_slice(b"DIRC");
    out.extend_from_slice(&(if extended { 3u32 } else { 2 }).to_be_bytes());
    out.extend_from_slice(&count.to_be_bytes());
    for entry in entries {
        let start = out.len();
        let stat = &entry.stat;
        for field in [
            stat.ctime.secs,
            stat.ctime.nsecs,
            stat.mtime.secs,
            stat.mtime.nsecs,
            stat.dev,
            stat.ino,
            entry.mode.bits(),
            stat.uid,
            stat.gid,
            stat.size,
        ] {
            out.extend_from_slice(&field.to_be_bytes());
        }
        out.extend_from_slice(entry.id.as_bytes());
        let path = entry.path(index);
        let length = path.len().min(Flags::PATH_LEN.bits() as usize) as u16;
        out.extend_from_slice(&(entry.flags.to_storage().bits() | length).to_be_bytes());
        if entry.flags.contains(Flags::EXTENDED) {
            let more = (entry.flags & (Flags::INTENT_TO_ADD | Flags::SKIP_WORKTREE)).bits() >> 16;
            out.extend_from_slice(&(more as u16).to_be_bytes());
        }
        out.extend_from_slice(path);
        // One to eight NUL bytes, to the next multiple of eight.
        let written = out.len() - start;
        out.resize(start + (written + 8) / 8 * 8, 0);
    }
    out.resize(out.len() + index.object_hash().len_in_bytes(), 0);
    true
}

/// Moves the worktree's detached HEAD from `old` to `new` and logs it as git does, with
/// the reflog message `reflog` and braid's identity; fails if HEAD is not `old`.
pub fn move_head(
    repo: &gix::Repository,
    old: ObjectId,
    new: ObjectId,
    reflog: &str,
    time: gix::date::Time,
) -> Result<(), String> {
    let head = repo.git_dir().join("HEAD");
    let current = std::fs::read(&head).map_err(|e| format!("reading HEAD: {e}"))?;
    if current.trim_ascii() != old.to_string().as_bytes() {
        return Err(format!(
            "HEAD is {}, not {old}",
            String::from_utf8_lossy(current.trim_ascii())
        ));
    }
    overwrite(&head, format!("{new}\n").as_bytes())
        .map_err(|e| format!("moving HEAD to {new}: {e}"))?;
    let mut buf = gix::date::parse::TimeBuf::default();
    let line = format!(
        "{old} {new} {IDENTITY_NAME} <{IDENTITY_EMAIL}> {}\t{}\n",
        time.to_str(&mut buf),
        reflog.lines().next().unwrap_or_default()
    );
    let logs = repo.git_dir().join("logs");
    std::fs::create_dir_all(&logs)
        .and_then(|()| {
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(logs.join("HEAD"))
        })
        .and_then(|mut log| log.write_all(line.as_bytes()))
        .map_err(|e| format!("logging HEAD's move: {e}"))
}

/// Writes `bytes` over the file at `path`, keeping its inode, and its blocks where it
/// is as long (truncating first would free them all, and writing take new ones).
fn overwrite(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)?;
    file.write_all(bytes)?;
    file.set_len(bytes.len() as u64)
}

#[cfg(test)]
mod tests {
    use braid_tests::TestRepo;

    #[test]
    fn an_index_is_written_byte_for_byte_as_gix_writes_it() {
        use gix::index::entry::Flags;
        let repo = TestRepo::init();
        repo.commit(
            &[
                ("a.txt", "a\n"),
                ("b/c.txt", "c\n"),
                ("b/a-path-of-exactly-seventeen", "x\n"),
                ("d/e/f.txt", "f\n"),
            ],
            "files",
        );
        repo.git(&["update-index", "--chmod=+x", "a.txt"]);
        repo.write(&[("new.txt", "n\n")]);
        repo.git(&["add", "--intent-to-add", "new.txt"]);
        repo.git(&["update-index", "--skip-worktree", "b/c.txt"]);
        let repo = crate::checkout::open(&repo.path).unwrap();
        let mut index = super::read_index(&repo).unwrap();
        index.remove_tree();
        assert!(
            index
                .entries()
                .iter()
                .any(|e| e.flags.contains(Flags::EXTENDED))
        );
        let mut by_gix = Vec::new();
        index.write_to(&mut by_gix, super::WRITE).unwrap();
        let mut bytes = Vec::new();
        assert!(super::serialize(&index, &mut bytes));
        assert_eq!(bytes, by_gix);
        // Without extended flags: version 2.
        for entry in index.entries_mut() {
            entry
                .flags
                .remove(Flags::EXTENDED | Flags::INTENT_TO_ADD | Flags::SKIP_WORKTREE);
        }
        let mut by_gix = Vec::new();
        index.write_to(&mut by_gix, super::WRITE).unwrap();
        assert_eq!(&by_gix[4..8], &2u32.to_be_bytes());
        bytes.clear();
        assert!(super::serialize(&index, &mut bytes));
        assert_eq!(bytes, by_gix);
    }

    #[test]
    fn an_index_rewritten_in_part_is_the_index_written_whole() {
        use gix::index::entry::{Flags, Mode};
        let repo = TestRepo::init();
        let files: Vec<(String, String)> = (0..400)
            .map(|i| (format!("d{i:03}/f.txt"), format!("{i}\n")))
            .collect();
        let refs: Vec<(&str, &str)> = files
            .iter()
            .map(|(p, t)| (p.as_str(), t.as_str()))
            .collect();
        repo.commit(&refs, "files");
        let repo = crate::checkout::open(&repo.path).unwrap();
        let mut index = super::read_index(&repo).unwrap();
        index.remove_tree();
        let on_disk = || std::fs::read(repo.index_path()).unwrap();
        let whole = |index: &gix::index::File| {
            let mut bytes = Vec::new();
            index.write_to(&mut bytes, super::WRITE).unwrap();
            bytes
        };
        super::write_index(&index).unwrap();
        assert_eq!(on_disk(), whole(&index));
        // One stat changed deep in the file: the same length.
        index.entries_mut()[300].stat.size = 12345;
        super::write_index(&index).unwrap();
        assert_eq!(on_disk(), whole(&index));
        // An entry more near the front, then one fewer.
        let id = index.entries()[0].id;
        index.dangerously_push_entry(
            Default::default(),
            id,
            Flags::empty(),
            Mode::FILE,
            "a.txt".into(),
        );
        index.sort_entries();
        super::write_index(&index).unwrap();
        assert_eq!(on_disk(), whole(&index));
        index.remove_entries(|i, _, _| i == 0 || i == 399);
        super::write_index(&index).unwrap();
        assert_eq!(on_disk(), whole(&index));
        // Written behind braid's back: written whole again.
        std::fs::write(repo.index_path(), b"garbage").unwrap();
        index.entries_mut()[10].stat.size = 1;
        super::write_index(&index).unwrap();
        assert_eq!(on_disk(), whole(&index));
    }
}
