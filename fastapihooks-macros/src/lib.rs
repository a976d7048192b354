//! The `#[hook]` attribute (see the `fastapihooks` crate).
