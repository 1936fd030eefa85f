//! The crate's one error type.
//!
//! Every fallible public function returns [`Result`]. Variants carry structured
//! fields (which argument, what was expected, what came) so that a caller can
//! match on them and a person can read them.

use std::path::PathBuf;

/// Result alias used throughout the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in diffuse-spec.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An error reported by libtorch (shape mismatch inside an op, device trouble, ...).
    #[cfg(feature = "torch")]
    #[error("libtorch: {0}")]
    Torch(#[from] tch::TchError),

    /// A random-stream error (for example an unknown stream name).
    #[error("random stream: {0}")]
    Rng(#[from] crate::rng::RngError),

    /// A function argument is out of its domain.
    #[error("invalid argument `{name}`: expected {expected}, got {got}")]
    InvalidArgument {
        /// The argument's name as the function spells it.
        name: String,
        /// What the function accepts.
        expected: String,
        /// What it was given.
        got: String,
    },

    /// A name (time distribution, sampler, diffusion coefficient, case kind, ...) that is not known.
    #[error("unknown {what} `{name}`; known: {known}")]
    Unknown {
        /// The category of name (e.g. "time distribution").
        what: String,
        /// The name that was given.
        name: String,
        /// The accepted names, comma separated.
        known: String,
    },

    /// A combination of settings that the reference refuses (and so does this crate).
    #[error("unsupported: {what}: {why}")]
    Unsupported {
        /// What was asked for.
        what: String,
        /// Why it is refused.
        why: String,
    },

    /// A golden case (or one of its files) is malformed.
    #[error("case `{case}`{}: {message}", file.as_ref().map(|f| format!(", file `{f}`")).unwrap_or_default())]
    Case {
        /// The case's name (its directory name when case.json could not be read).
        case: String,
        /// The offending file, if the problem is in one file.
        file: Option<String>,
        /// What is wrong.
        message: String,
    },

    /// An I/O error on a path.
    #[error("I/O error on `{}`: {source}", path.display())]
    Io {
        /// The path being read or written.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },

    /// Functionality that this version of the crate does not provide yet.
    #[error("not implemented: {0}")]
    NotImplemented(String),
}

impl Error {
    /// Shorthand for [`Error::InvalidArgument`].
    pub fn invalid(name: impl Into<String>, expected: impl Into<String>, got: impl std::fmt::Display) -> Self {
        Error::InvalidArgument { name: name.into(), expected: expected.into(), got: got.to_string() }
    }

    /// Shorthand for [`Error::Case`].
    pub fn case(case: impl Into<String>, file: Option<&str>, message: impl Into<String>) -> Self {
        Error::Case { case: case.into(), file: file.map(str::to_string), message: message.into() }
    }
}
