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
    let mut bytes = Vec::with_capacity(64 + index.entries().len() * 96);
    index
        .write_to(&mut bytes, WRITE)
        .map_err(|e| format!("writing the index: {e}"))?;
    overwrite(index.path(), &bytes).map_err(|e| format!("writing the index: {e}"))
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

/// Writes `bytes` over the file at `path`, keeping its inode.
fn overwrite(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)?
        .write_all(bytes)
}
