//! Naming the failures users cannot see, and preventing the one the gateway can prevent.
//!
//! - [`uploads`]: the upload sessions in flight (repository, who, since when, bytes so far),
//!   learned from the registry's own answers; the basis for telling "token expired in the
//!   middle of a push" apart from any other expired token, and for push grace.

pub mod grace;
pub mod stripped;
pub mod trust;
pub mod uploads;
