//! The integration tests, in one binary.

mod hook_emission;
mod hook_hygiene;
mod hook_options;
mod hook_request;
mod hook_util;
