//! The integration tests, in one binary.

mod hook_emission;
mod hook_util;
