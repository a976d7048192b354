//! The `#[hook]` attribute of [fastapihooks](https://docs.rs/fastapihooks).
//!
//! Use it through the `fastapihooks` crate, which documents it and provides
//! the runtime its expansion calls (`::fastapihooks::__private`).
//!
//! The work is split like thiserror's: `args` parses the attribute into
//! typed arguments that keep their spans, `check` validates the arguments
//! and the handler, `expand` generates the code.

mod args;
mod check;
mod expand;

use proc_macro::TokenStream;

/// Webhook-enables an axum handler. Documented in the `fastapihooks` crate.
#[proc_macro_attribute]
pub fn hook(args: TokenStream, item: TokenStream) -> TokenStream {
    let item = proc_macro2::TokenStream::from(item);
    match expand::hook(args.into(), item.clone()) {
        Ok(tokens) => tokens.into(),
        // Keep the handler as written so that its callers (the router,
        // rust-analyzer) do not cascade into more errors.
        Err(error) => {
            let mut tokens = error.to_compile_error();
            tokens.extend(item);
            tokens.into()
        }
    }
}
