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
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::symlink_metadata(repo.index_path()).ok()?;
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

/// Writes `index` over the file it was read from.
pub fn write_index(index: &gix::index::File) -> Result<(), String> {
    let bytes = match serialize(index) {
        Some(bytes) => bytes,
        None => {
            let mut bytes = Vec::with_capacity(64 + index.entries().len() * 96);
            index
                .write_to(&mut bytes, WRITE)
                .map_err(|e| format!("writing the index: {e}"))?;
            bytes
        }
    };
    overwrite(index.path(), &bytes).map_err(|e| format!("writing the index: {e}"))
}

/// The bytes of `index` as gix writes it with [`WRITE`], made in one pass over the
/// entries: gix writes each field through a `dyn Write`, which took 5 ms for a 20,000-entry
/// index here, three times an attempt. `None` for what only gix writes: a cached tree, a
/// sparse index, entries marked removed.
fn serialize(index: &gix::index::State) -> Option<Vec<u8>> {
    use gix::index::entry::Flags;
    let entries = index.entries();
    if index.tree().is_some()
        || index.is_sparse()
        || entries.iter().any(|e| e.flags.contains(Flags::REMOVE))
    {
        return None;
    }
    let extended = entries.iter().any(|e| e.flags.contains(Flags::EXTENDED));
    let paths: usize = entries.iter().map(|e| e.path(index).len()).sum();
    let mut out = Vec::with_capacity(12 + entries.len() * 72 + paths + 20);
    out.extend_from_slice(b"DIRC");
    out.extend_from_slice(&(if extended { 3u32 } else { 2 }).to_be_bytes());
    out.extend_from_slice(&u32::try_from(entries.len()).ok()?.to_be_bytes());
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
    Some(out)
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
        assert_eq!(super::serialize(&index).unwrap(), by_gix);
        // Without extended flags: version 2.
        for entry in index.entries_mut() {
            entry
                .flags
                .remove(Flags::EXTENDED | Flags::INTENT_TO_ADD | Flags::SKIP_WORKTREE);
        }
        let mut by_gix = Vec::new();
        index.write_to(&mut by_gix, super::WRITE).unwrap();
        assert_eq!(&by_gix[4..8], &2u32.to_be_bytes());
        assert_eq!(super::serialize(&index).unwrap(), by_gix);
    }
}
