//! The coordinator's errors and the exit codes of the contract.

use braid_shared::git::GitError;

use crate::plan::PlanErrors;

/// Exit code: the run succeeded.
pub const EXIT_OK: i32 = 0;
/// Exit code: the run finished but something failed.
pub const EXIT_FAILED: i32 = 1;
/// Exit code: bad input; nothing was run or written.
pub const EXIT_USAGE: i32 = 2;
/// Exit code: environment or internal error.
pub const EXIT_ENVIRONMENT: i32 = 3;
/// Exit code: interrupted.
pub const EXIT_INTERRUPTED: i32 = 130;

/// Everything that stops a braid command.
#[derive(Debug, thiserror::Error)]
pub enum BraidError {
    /// The plan has problems; every one is listed.
    #[error("{0}")]
    Plan(#[from] PlanErrors),
    /// The command line asks for something impossible.
    #[error("{0}")]
    Usage(String),
    /// A git operation failed.
    #[error(transparent)]
    Git(#[from] GitError),
    /// A file operation failed.
    #[error("{context}: {source}")]
    Io {
        /// What braid was doing.
        context: String,
        /// What the operating system said.
        #[source]
        source: std::io::Error,
    },
    /// The gRPC transport failed.
    #[error("gRPC transport: {0}")]
    Transport(#[from] Box<tonic::transport::Error>),
    /// The machine cannot do what the run needs (such as sandbox its agents).
    #[error("{0}")]
    Environment(String),
    /// Something braid did not expect.
    #[error("{0}")]
    Internal(String),
    /// A signal stopped the command before it was done.
    #[error("{0}")]
    Interrupted(String),
}

impl BraidError {
    /// The exit code the contract gives this error.
    pub fn exit_code(&self) -> i32 {
        match self {
            BraidError::Plan(_) | BraidError::Usage(_) => EXIT_USAGE,
            BraidError::Git(_)
            | BraidError::Io { .. }
            | BraidError::Transport(_)
            | BraidError::Environment(_)
            | BraidError::Internal(_) => EXIT_ENVIRONMENT,
            BraidError::Interrupted(_) => EXIT_INTERRUPTED,
        }
    }

    /// An I/O error with what braid was doing.
    pub fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> BraidError {
        let context = context.into();
        move |source| BraidError::Io { context, source }
    }
}

impl From<BraidError> for tonic::Status {
    fn from(error: BraidError) -> Self {
        match error {
            BraidError::Plan(_) | BraidError::Usage(_) => {
                tonic::Status::invalid_argument(error.to_string())
            }
            _ => tonic::Status::internal(error.to_string()),
        }
    }
}
