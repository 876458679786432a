//! The braid coordinator and the `braid` binary's commands.
//!
//! - [`plan`]: the plan file, its validation, the checked plan.
//! - [`dag`]: the task graph and its orders.
//! - [`scheduler`]: the event loop that leases attempts to workers.
//! - [`service`]: the gRPC service that turns worker streams into scheduler events.
//! - [`merge`]: task bases from deps' winners and the final integration.
//! - [`select`]: picking a task's winner.
//! - [`report`]: report.json, report.md and the summary.
//! - [`run`]: embedded mode, everything in one process.
//! - [`demo`], [`cli`], [`progress`], [`state`], [`error`].
//!
//! Invariant: the coordinator never touches the user's checkout, index, HEAD or branches;
//! it writes objects, refs under `refs/heads/braid/<run>/`, and files under `<git-dir>/braid/`.

pub mod batch;
pub mod cli;
pub mod client;
pub mod dag;
pub mod demo;
pub mod error;
pub mod forge;
pub mod journal;
pub mod judge;
pub mod merge;
pub mod plan;
pub mod planner;
pub mod progress;
pub mod publish;
pub mod report;
pub mod rerun;
pub mod run;
pub mod scheduler;
#[cfg(test)]
mod scheduler_tests;
pub mod select;
pub mod serve;
pub mod service;
pub mod state;
