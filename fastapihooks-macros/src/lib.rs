//! The `#[hook]` attribute of [fastapihooks](https://docs.rs/fastapihooks).
//!
//! Use it through the `fastapihooks` crate, which documents it and provides
//! the runtime its expansion calls (`::fastapihooks::__private`).
//!
//! The work is split like thiserror's: `args` parses the attribute into
//! typed arguments that keep their spans, `model` parses the handler into a
//! typed model (its body kept as tokens), `check` validates both, `expand`
//! generates the code.

mod args;
mod check;
mod expand;
mod model;

use proc_macro::TokenStream;

/// Webhook-enables an axum handler. Documented in the `fastapihooks` crate.
#[proc_macro_attribute]
pub fn hook(args: TokenStream, item: TokenStream) -> TokenStream {
    let item = proc_macro2::TokenStream::from(item);
    let (args, mut errors) = args::HookArgs::parse_all(args.into());
    match syn::parse2::<model::Handler>(item.clone()) {
        Ok(handler) => {
            errors.extend(check::check(&args, &handler));
            if errors.is_empty() {
                return expand::expand(&args, handler).into();
            }
        }
        Err(e) => errors.push(syn::Error::new(e.span(), format!("#[hook] goes on an `async fn` axum handler: {e}"))),
    }
    // Keep the handler as written so that its callers (the router,
    // rust-analyzer) do not cascade into more errors; check the event name
    // anyway, to report it with the rest.
    let mut tokens = errors.into_compile_error();
    tokens.extend(expand::event_name_check(&args));
    tokens.extend(item);
    tokens.into()
}
