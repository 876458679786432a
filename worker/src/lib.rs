//! The braid worker: runs attempts that a coordinator assigns over the `braid.v1` stream.
//!
//! - [`runtime`]: the stream loop (register, slots, heartbeats, results, shutdown).
//! - [`attempt`]: one attempt from worktree to result.
//! - [`agent`]: the command agent.
//! - [`checks`]: checks run in a worktree.
//! - [`checkout`]: a worktree's files, written in process: a fresh one's, and a reused one
//!   moved to the next attempt's commit.
//! - [`commit`]: an attempt's changes staged, committed and counted, in process.
//! - [`admin`]: a worktree's index and HEAD, written in place.
//! - [`worktree_pool`]: worktrees reused from attempt to attempt.
//! - [`cache`]: the worker's repository cache: each worktree a repository of its own,
//!   borrowing the user's objects; attempt commits shipped to the coordinator as packs.
//! - [`sandbox`]: bubblewrap around every process an attempt runs.
//!
//! Invariant: the worker never writes the user's repository (checkout, index, HEAD, refs,
//! config, objects); it writes only its worktrees in braid's cache folder and log files.

pub mod admin;
pub mod agent;
pub mod attempt;
pub mod bridge;
pub mod builtin;
pub mod cache;
pub mod checkout;
pub mod checks;
pub mod commit;
pub mod journal;
pub mod mirror;
pub mod packages;
pub mod presets;
pub mod read_only;
pub mod runtime;
pub mod sandbox;
pub mod worktree_pool;
