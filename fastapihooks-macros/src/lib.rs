//! The `#[hook]` attribute of [fastapihooks](https://docs.rs/fastapihooks).
//!
//! Use it through the `fastapihooks` crate, which documents it and provides
//! the runtime its expansion calls (`::fastapihooks::__private`).
//!
//! The work is split like thiserror's: `args` parses the attribute into
//! typed arguments that keep their spans, `model` parses the handler into a
//! typed model (its body kept as tokens), `check` validates both, `expand`
//! generates the code.
//!
//! # Design notes
//!
//! The user-facing documentation is `docs/macro.md`, the facade's `hook`
//! docs. The macro follows approach A of `DESIGN.md` (a hidden extractor
//! parameter, the body moved verbatim into an inner `async fn`,
//! `Captured<T>` for the request, `HookResponse` plus syntactic handling of
//! `Result`, tuples and `impl IntoResponse`). Choices made on the way:
//!
//! - **One hidden site type per handler** (`__fh_site_<handler>`,
//!   implementing `HookSite`) carries every option as consts and functions:
//!   the event name, the `include_*` flags, the owner resolver (which needs
//!   the request parts, so it must run inside the extractor) and the
//!   transform, made once in a `static LazyLock`. The cost: `#[hook]` works
//!   on free functions only.
//! - **The event name is checked by the runtime's rule**:
//!   `fastapihooks_core::subscription::event_name_error` is a `const fn`, and
//!   the expansion calls it (through `assert_event_name`) in a `const _`
//!   spanned on the literal, so rustc reports a bad name there with the
//!   rule's message. The macro keeps no copy of the rule.
//! - **Where the handle comes from** is decided by the router state's type:
//!   `HooksFromState` is implemented for every `S` with
//!   `Fastapihooks: FromRef<S>` (compile-time checked) and for `()` (the
//!   layer's request extension). The blanket impl is
//!   `#[diagnostic::do_not_recommend]` so that a missing handle gets
//!   `HooksFromState`'s message.
//! - **`Captured<T>`** implements `FromRequest<S, ViaCaptured<M>>` for any
//!   `T: FromRequest<S, M>` (its own marker, so it does not overlap axum's
//!   `ViaParts` blanket impl). It buffers through `with_limited_body`, so the
//!   route's `DefaultBodyLimit` holds, and answers 413 past it, like axum.
//! - **`include_credentials`** was added: headers are redacted by default,
//!   and the issue asks for a way to keep them.

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
    let mut event_name_check = None;
    match syn::parse2::<model::Handler>(item.clone()) {
        Ok(handler) => {
            errors.extend(check::check(&args, &handler));
            if errors.is_empty() {
                return expand::expand(&args, handler).into();
            }
            // Check the event name anyway, to report it with the rest; not
            // in an `impl` block (a method), where `const _` is an error.
            if !handler.is_method() {
                event_name_check = Some(expand::event_name_check(&args));
            }
        }
        Err(e) => errors.push(syn::Error::new(e.span(), format!("#[hook] goes on an `async fn` axum handler: {e}"))),
    }
    // Keep the handler as written so that its callers (the router,
    // rust-analyzer) do not cascade into more errors.
    let mut tokens = errors.into_compile_error();
    tokens.extend(event_name_check);
    tokens.extend(item);
    tokens.into()
}
