//! The integration tests: one binary (link once), one module per area.
#![allow(unreachable_pub)] // test helpers are `pub` within this one test crate

mod delivery;
mod emission_pipeline;
mod guard;
mod shutdown;
mod signing_interop;
mod signing_replay;
mod signing_rotation;
mod signing_secrets;
mod signing_util;
mod util;
