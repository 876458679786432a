//! A seccomp filter that refuses hard links: `link` and `linkat` fail with `EXDEV`, as they
//! do between two file systems, and every other system call is allowed.
//!
//! Why: braid learns what an attempt changed from the kernel's notes on the worktree's
//! folders (see the worker's journal). A write through a second name of a file reaches
//! the file without a note on the folder of its first name, so a sandboxed process may
//! not make a second name. Across the sandbox's folders the kernel refuses that already
//! (each is a mount of its own); inside the worktree only this filter does. Tools that
//! make hard links take `EXDEV` as "another file system" and copy instead (cargo, git's
//! object store, npm and pnpm do).
//!
//! bubblewrap installs it itself (`--seccomp FD`, [`program`]) right before it starts the
//! program, so the child is started without a step between fork and exec (which makes
//! the start a `posix_spawn` rather than a copy of braid's memory: 3 to 4 ms less per
//! process here). Under Landlock it is installed in the child between fork and exec
//! ([`no_hard_links`]); like Landlock it needs `PR_SET_NO_NEW_PRIVS`. Either way it is
//! inherited by everything the program starts. The program is a static table: the child
//! allocates nothing.
#![allow(unsafe_code)] // seccomp has no safe wrapper in libc or std.

const LD_W_ABS: u16 = 0x20;
const JEQ_K: u16 = 0x15;
const AND_K: u16 = 0x54;
const RET_K: u16 = 0x06;
const ALLOW: u32 = 0x7fff_0000;
const DENY: u32 = 0x0005_0000 | libc::EXDEV as u32;
/// `struct seccomp_data`: the system call's number, then its architecture.
const NR: u32 = 0;
const ARCH: u32 = 4;

const fn op(code: u16, jt: u8, jf: u8, k: u32) -> libc::sock_filter {
    libc::sock_filter { code, jt, jf, k }
}

/// x86-64 (and its x32 numbers, which carry bit 30) and 32-bit x86 programs.
#[cfg(target_arch = "x86_64")]
static PROGRAM: [libc::sock_filter; 12] = [
    op(LD_W_ABS, 0, 0, ARCH),
    op(JEQ_K, 0, 4, 0xC000_003E), // AUDIT_ARCH_X86_64
    op(LD_W_ABS, 0, 0, NR),
    op(AND_K, 0, 0, !0x4000_0000),
    op(JEQ_K, 6, 0, 86),          // link
    op(JEQ_K, 5, 4, 265),         // linkat
    op(JEQ_K, 0, 3, 0x4000_0003), // AUDIT_ARCH_I386
    op(LD_W_ABS, 0, 0, NR),
    op(JEQ_K, 2, 0, 9),   // link
    op(JEQ_K, 1, 0, 303), // linkat
    op(RET_K, 0, 0, ALLOW),
    op(RET_K, 0, 0, DENY),
];

/// 64-bit Arm (which has only `linkat`) and 32-bit Arm programs.
#[cfg(target_arch = "aarch64")]
static PROGRAM: [libc::sock_filter; 10] = [
    op(LD_W_ABS, 0, 0, ARCH),
    op(JEQ_K, 0, 2, 0xC000_00B7), // AUDIT_ARCH_AARCH64
    op(LD_W_ABS, 0, 0, NR),
    op(JEQ_K, 5, 4, 37),          // linkat
    op(JEQ_K, 0, 3, 0x4000_0028), // AUDIT_ARCH_ARM
    op(LD_W_ABS, 0, 0, NR),
    op(JEQ_K, 2, 0, 9),   // link
    op(JEQ_K, 1, 0, 328), // linkat
    op(RET_K, 0, 0, ALLOW),
    op(RET_K, 0, 0, DENY),
];

/// The filter as bubblewrap's `--seccomp FD` reads it: the program's instructions, each
/// as the kernel lays them out.
pub fn program() -> Vec<u8> {
    #[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
    {
        PROGRAM
            .iter()
            .flat_map(|op| {
                let mut bytes = Vec::with_capacity(8);
                bytes.extend_from_slice(&op.code.to_ne_bytes());
                bytes.push(op.jt);
                bytes.push(op.jf);
                bytes.extend_from_slice(&op.k.to_ne_bytes());
                bytes
            })
            .collect()
    }
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    Vec::new()
}

/// Whether this build has the filter for its machine.
pub const AVAILABLE: bool = cfg!(any(target_arch = "x86_64", target_arch = "aarch64"));

/// Installs the filter on the calling thread, which every process it then starts
/// inherits. Safe to call between fork and exec: two system calls on static data.
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
pub fn no_hard_links() -> std::io::Result<()> {
    let program = libc::sock_fprog {
        len: PROGRAM.len() as u16,
        filter: PROGRAM.as_ptr().cast_mut(),
    };
    // SAFETY: plain system calls; the kernel copies the program, which is static.
    unsafe {
        if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        if libc::prctl(
            libc::PR_SET_SECCOMP,
            libc::SECCOMP_MODE_FILTER,
            &raw const program,
        ) != 0
        {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Without a filter for this machine, nothing is installed (see [`AVAILABLE`]).
#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
pub fn no_hard_links() -> std::io::Result<()> {
    Ok(())
}

#[cfg(test)]
mod tests {
    use crate::exec::Cmd;

    #[tokio::test]
    async fn a_filtered_child_cannot_make_hard_links_but_does_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let script = "echo a > a && ! ln a b 2>err && grep -q 'cross-device' err && \
                      ln -s a s && mv a c && cp c d && cat d";
        let out = Cmd::new("sh", dir.path())
            .args(["-c", script])
            .no_hard_links()
            .run()
            .await
            .unwrap();
        assert!(out.ending.success(), "{out:?}");
        assert_eq!(out.stdout, b"a\n");
        assert!(!dir.path().join("b").exists());
        // Unfiltered, the same link is made: the test tells the two apart.
        let out = Cmd::new("sh", dir.path())
            .args(["-c", "ln c e"])
            .run()
            .await
            .unwrap();
        assert!(out.ending.success(), "{out:?}");
        assert!(dir.path().join("e").exists());
    }
}
