//! Radiant's wire protocol, generated from `proto/radiant.proto`.
//!
//! The daemon and the CLI share these types so that the CLI is just another client of the
//! admin API an operator's script would use.
#![allow(missing_docs, clippy::large_enum_variant, clippy::doc_lazy_continuation)]

tonic::include_proto!("radiant.v1");

impl ErrorDetail {
    /// A status whose details carry this error's code (and redirect), so that the receiver
    /// decides by code.
    pub fn status(self, code: tonic::Code, message: impl Into<String>) -> tonic::Status {
        use prost::Message;
        tonic::Status::with_details(code, message, self.encode_to_vec().into())
    }

    /// The typed detail a status carries, if the daemon put one there.
    pub fn of(status: &tonic::Status) -> Option<ErrorDetail> {
        use prost::Message;
        ErrorDetail::decode(status.details()).ok().filter(|d| d.code != ErrorCode::Unspecified as i32)
    }

    /// Its code, or `Unspecified`.
    pub fn error_code(&self) -> ErrorCode {
        ErrorCode::try_from(self.code).unwrap_or(ErrorCode::Unspecified)
    }
}

/// A refusal with a code and no redirect.
pub fn refusal(error: ErrorCode, code: tonic::Code, message: impl Into<String>) -> tonic::Status {
    ErrorDetail { code: error as i32, redirect: None }.status(code, message)
}

pub mod shard;
pub use shard::shard_of;
