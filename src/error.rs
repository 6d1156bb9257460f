//! The typed error behind the UDL's `[Error] interface QueueError`.
//!
//! Every failure that can reach a foreign caller is one of these variants; nothing panics across
//! the FFI. `From<io::Error>` maps the errno values users can act on to their own variants.

use std::io;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum QueueError {
    #[error("queue is empty")]
    Empty,
    #[error("queue is full")]
    Full,
    #[error(
        "message of {size} bytes can never fit this queue (largest message: {max_size} bytes)"
    )]
    TooLarge { size: u64, max_size: u64 },
    #[error("queue is closed: {reason}")]
    Closed { reason: String },
    #[error("invalid queue name {name:?}: {reason}")]
    InvalidName { name: String, reason: String },
    #[error("no queue named {name:?}")]
    NotFound { name: String },
    #[error("a queue named {name:?} already exists")]
    AlreadyExists { name: String },
    #[error("not a sage-queue segment: {reason}")]
    NotAQueue { reason: String },
    #[error("incompatible sage-queue segment: {reason}")]
    Incompatible { reason: String },
    #[error("permission denied: {reason}")]
    PermissionDenied { reason: String },
    #[error("invalid argument: {reason}")]
    InvalidArgument { reason: String },
    #[error("I/O error: {reason}")]
    Io { reason: String },
    /// Creating a queue found too little space (or memory) behind the queue folder; the reason
    /// names the folder, the bytes asked for and the bytes free.
    #[error("{reason}")]
    NoSpace { reason: String },
    /// An ack or nack whose receipt is no longer valid: the message was already acknowledged
    /// or returned, or delivered again after its holder died or timed out (fencing).
    #[error("{reason}")]
    StaleReceipt { reason: String },
}

impl QueueError {
    pub(crate) fn io(context: &str, err: io::Error) -> Self {
        if err.kind() == io::ErrorKind::PermissionDenied {
            return QueueError::PermissionDenied {
                reason: format!("{context}: {err}"),
            };
        }
        QueueError::Io {
            reason: format!("{context}: {err}"),
        }
    }

    pub(crate) fn is_no_space(err: &io::Error) -> bool {
        matches!(
            err.raw_os_error(),
            Some(libc::ENOSPC) | Some(libc::EFBIG) | Some(libc::ENOMEM) | Some(libc::EDQUOT)
        )
    }

    pub(crate) fn closed(reason: &str) -> Self {
        QueueError::Closed {
            reason: reason.to_string(),
        }
    }

    pub(crate) fn invalid(reason: impl Into<String>) -> Self {
        QueueError::InvalidArgument {
            reason: reason.into(),
        }
    }

    pub(crate) fn corrupt(reason: impl Into<String>) -> Self {
        QueueError::NotAQueue {
            reason: reason.into(),
        }
    }
}

pub type Result<T> = std::result::Result<T, QueueError>;
