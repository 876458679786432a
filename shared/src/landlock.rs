//! Landlock, the kernel's own sandbox for unprivileged processes: where bubblewrap cannot
//! make namespaces, a child is still kept from writing outside the folders it is given.
//!
//! The ruleset is built in the parent (it opens files and allocates); the child, between
//! fork and exec, only makes two system calls (`prctl(PR_SET_NO_NEW_PRIVS)` and
//! `landlock_restrict_self`), which are safe to make there. Reading and running programs
//! stay allowed everywhere; writing (making, removing, renaming, truncating files) is
//! allowed only beneath the given folders and `/dev`. With network access handled too
//! (kernel ABI 4 and later), TCP connect and bind are refused.
//!
//! What Landlock cannot do, bubblewrap does: hide other worktrees, give the process a PID
//! namespace of its own so nothing it starts outlives it. braid says so when it falls back.
#![allow(unsafe_code)] // Landlock's system calls have no safe wrapper in libc or std.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};

const CREATE_RULESET_VERSION: u32 = 1;
const RULE_PATH_BENEATH: i32 = 1;

const FS_WRITE_FILE: u64 = 1 << 1;
const FS_REMOVE_DIR: u64 = 1 << 4;
const FS_REMOVE_FILE: u64 = 1 << 5;
const FS_MAKE_CHAR: u64 = 1 << 6;
const FS_MAKE_DIR: u64 = 1 << 7;
const FS_MAKE_REG: u64 = 1 << 8;
const FS_MAKE_SOCK: u64 = 1 << 9;
const FS_MAKE_FIFO: u64 = 1 << 10;
const FS_MAKE_BLOCK: u64 = 1 << 11;
const FS_MAKE_SYM: u64 = 1 << 12;
const FS_REFER: u64 = 1 << 13;
const FS_TRUNCATE: u64 = 1 << 14;
const NET_BIND_TCP: u64 = 1 << 0;
const NET_CONNECT_TCP: u64 = 1 << 1;

#[repr(C)]
struct RulesetAttr {
    handled_access_fs: u64,
    handled_access_net: u64,
}

#[repr(C, packed)]
struct PathBeneathAttr {
    allowed_access: u64,
    parent_fd: i32,
}

/// The Landlock ABI version the kernel offers; `None` without Landlock.
pub fn abi() -> Option<i32> {
    // SAFETY: with a null attribute and size 0, the call only reports the ABI version.
    let version = unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            std::ptr::null::<RulesetAttr>(),
            0usize,
            CREATE_RULESET_VERSION,
        )
    };
    (version > 0).then_some(version as i32)
}

/// A Landlock ruleset, ready to be applied to a child process.
#[derive(Debug)]
pub struct Ruleset {
    fd: OwnedFd,
}

impl Ruleset {
    /// Writing allowed only beneath `writable` (and `/dev`), and with `network: false`
    /// no TCP at all where the kernel can refuse it.
    pub fn new(writable: &[PathBuf], network: bool) -> std::io::Result<Self> {
        let abi = abi().ok_or_else(|| std::io::Error::other("the kernel has no Landlock"))?;
        let mut write = FS_WRITE_FILE
            | FS_REMOVE_DIR
            | FS_REMOVE_FILE
            | FS_MAKE_CHAR
            | FS_MAKE_DIR
            | FS_MAKE_REG
            | FS_MAKE_SOCK
            | FS_MAKE_FIFO
            | FS_MAKE_BLOCK
            | FS_MAKE_SYM;
        if abi >= 2 {
            write |= FS_REFER;
        }
        if abi >= 3 {
            write |= FS_TRUNCATE;
        }
        let net = if !network && abi >= 4 {
            NET_BIND_TCP | NET_CONNECT_TCP
        } else {
            0
        };
        let attr = RulesetAttr {
            handled_access_fs: write,
            handled_access_net: net,
        };
        let size = if abi >= 4 {
            std::mem::size_of::<RulesetAttr>()
        } else {
            std::mem::size_of::<u64>()
        };
        // SAFETY: `attr` is a valid ruleset attribute of at least `size` bytes.
        let fd = unsafe {
            libc::syscall(
                libc::SYS_landlock_create_ruleset,
                &attr as *const RulesetAttr,
                size,
                0u32,
            )
        };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: the kernel returned a new file descriptor that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd as RawFd) };
        let ruleset = Ruleset { fd };
        for dir in writable
            .iter()
            .map(PathBuf::as_path)
            .chain([Path::new("/dev")])
        {
            ruleset.allow_beneath(dir, write)?;
        }
        Ok(ruleset)
    }

    fn allow_beneath(&self, dir: &Path, access: u64) -> std::io::Result<()> {
        use std::os::unix::fs::OpenOptionsExt;
        // Opened as a path only, which is what a rule takes.
        let parent = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_PATH | libc::O_CLOEXEC)
            .open(dir)?;
        let rule = PathBeneathAttr {
            allowed_access: access,
            parent_fd: parent.as_raw_fd(),
        };
        // SAFETY: `rule` is a valid path-beneath attribute and both descriptors are open.
        let done = unsafe {
            libc::syscall(
                libc::SYS_landlock_add_rule,
                self.fd.as_raw_fd(),
                RULE_PATH_BENEATH,
                &rule as *const PathBeneathAttr,
                0u32,
            )
        };
        if done < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
    }

    /// The descriptor for [`restrict_self`] in a child.
    pub fn raw(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

/// Restricts the calling process to the ruleset `fd`. Made for the child between fork and
/// exec: two system calls, no allocation.
pub fn restrict_self(fd: RawFd) -> std::io::Result<()> {
    // SAFETY: plain system calls on integers; nothing is shared with other threads.
    unsafe {
        if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        if libc::syscall(libc::SYS_landlock_restrict_self, fd, 0u32) != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exec::Cmd;

    #[tokio::test]
    async fn a_restricted_child_writes_only_where_it_may() {
        abi().expect("the kernel offers Landlock");
        let root = tempfile::tempdir().unwrap();
        let (mine, other) = (root.path().join("mine"), root.path().join("other"));
        std::fs::create_dir_all(&mine).unwrap();
        std::fs::create_dir_all(&other).unwrap();
        let ruleset = std::sync::Arc::new(Ruleset::new(std::slice::from_ref(&mine), true).unwrap());
        let script = format!(
            "echo ok > {mine}/a && echo x > /dev/null && cat /etc/hostname >/dev/null && \
             ! (echo no > {other}/b) 2>/dev/null",
            mine = mine.display(),
            other = other.display()
        );
        let done = Cmd::new("sh", &mine)
            .args(["-c", &script])
            .landlock(ruleset)
            .run()
            .await
            .unwrap();
        assert!(
            done.ending.success(),
            "{}",
            String::from_utf8_lossy(&done.stderr)
        );
        assert!(mine.join("a").is_file());
        assert!(!other.join("b").exists());
    }
}
