//! The integration tests: one binary, one module per area.

mod signing_interop;
mod signing_replay;
mod signing_rotation;
mod signing_secrets;
mod signing_util;
