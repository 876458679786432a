//! Types and helpers used by both sides of braid.
//!
//! - [`proto`]: the generated `braid.v1` gRPC code: the only types that cross the wire.
//! - [`exec`]: the one wrapper through which braid starts child processes.
//! - [`git`]: the git operations braid needs, run through [`exec`].
//! - [`paths`]: the globs of path-scoped checks.
//! - [`secret`]: API keys that never print.
//! - [`usage`]: tokens, turns and cost, and braid's price table.
//!
//! Invariant: nothing here knows about plans, scheduling or reports.

pub mod auth;
pub mod exec;
pub mod git;
pub mod landlock;
pub mod paths;
pub mod seccomp;
pub mod secret;
pub mod task;
pub mod usage;

/// The generated `braid.v1` protocol: messages, client and server.
#[allow(missing_docs, clippy::all, clippy::pedantic)]
pub mod proto {
    tonic::include_proto!("braid.v1");
}

/// The version every braid binary reports, on the wire and in reports.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// An error and what caused it, in one line: a transport error alone says little.
pub fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(next) = cause {
        let said = next.to_string();
        if !text.contains(&said) {
            text.push_str(": ");
            text.push_str(&said);
        }
        cause = next.source();
    }
    text
}
