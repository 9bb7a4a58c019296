//! radiantctl's errors and the exit code each maps to (listed in the README).

use std::process::ExitCode;

use radiant_proto as pb;

/// Exit codes.
pub mod code {
    /// Any failure not listed below.
    pub const FAILURE: u8 = 1;
    /// Bad arguments (clap uses 2 as well).
    pub const USAGE: u8 = 2;
    /// A node belongs to another cluster.
    pub const CLUSTER_MISMATCH: u8 = 3;
    /// A node or the station could not be reached in time.
    pub const UNAVAILABLE: u8 = 4;
    /// The cluster refused the request as invalid.
    pub const INVALID: u8 = 5;
    /// A write was sent but its outcome is unknown: it may or may not have been applied.
    pub const OUTCOME_UNKNOWN: u8 = 6;
    /// Interrupted by Ctrl-C (128 + SIGINT, as shells report it).
    pub const INTERRUPTED: u8 = 130;
}

/// A radiantctl failure.
#[derive(Debug, thiserror::Error)]
pub enum CtlError {
    /// Bad arguments.
    #[error("{0}")]
    Usage(String),
    /// A node of another cluster.
    #[error("{0}")]
    ClusterMismatch(String),
    /// Unreachable or not ready in time.
    #[error("{0}")]
    Unavailable(String),
    /// Refused as invalid.
    #[error("{0}")]
    Invalid(String),
    /// Ctrl-C.
    #[error("{0}")]
    Interrupted(String),
    /// A write whose outcome is unknown.
    #[error("{0}")]
    OutcomeUnknown(String),
    /// The key (or thing) asked for does not exist.
    #[error("{0}")]
    NotFound(String),
    /// Anything else.
    #[error("{0}")]
    Failed(String),
}

impl CtlError {
    /// The process exit code for this error.
    pub fn exit_code(&self) -> ExitCode {
        ExitCode::from(match self {
            CtlError::Usage(_) => code::USAGE,
            CtlError::ClusterMismatch(_) => code::CLUSTER_MISMATCH,
            CtlError::Unavailable(_) => code::UNAVAILABLE,
            CtlError::Invalid(_) => code::INVALID,
            CtlError::Interrupted(_) => code::INTERRUPTED,
            CtlError::OutcomeUnknown(_) => code::OUTCOME_UNKNOWN,
            CtlError::Failed(_) | CtlError::NotFound(_) => code::FAILURE,
        })
    }

    /// Maps a gRPC status from `addr` to an error, keeping the server's one-line message.
    pub fn from_status(addr: &str, s: tonic::Status) -> Self {
        let msg = format!("{addr}: {}", s.message());
        match s.code() {
            tonic::Code::Unavailable | tonic::Code::DeadlineExceeded => {
                if s.message().contains("tcp connect") || s.message().contains("transport error") {
                    CtlError::Unavailable(format!("{addr}: cannot connect (is radiantd running there?)"))
                } else {
                    CtlError::Unavailable(msg)
                }
            }
            _ if pb::ErrorDetail::of(&s).is_some_and(|d| d.error_code() == pb::ErrorCode::ClusterMismatch) => {
                CtlError::ClusterMismatch(msg)
            }
            tonic::Code::InvalidArgument | tonic::Code::OutOfRange => CtlError::Invalid(msg),
            _ => CtlError::Failed(msg),
        }
    }
}

/// Result alias.
pub type Result<T> = std::result::Result<T, CtlError>;
