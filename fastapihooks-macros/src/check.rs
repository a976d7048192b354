//! Validation of the arguments and of the handler's model, each error
//! spanned on the user's token and naming the fix.
//!
//! Two checks are left to rustc, on purpose, because they need types or
//! the runtime's rule: the event name is checked by
//! `fastapihooks_core::subscription::event_name_error` in a `const` the
//! expansion emits (the runtime's rule, not a copy of it), and the return
//! type by the `HookResponse` bound (so that users can implement it).

use proc_macro2::Span;

use crate::args::{Errors, HookArgs};
use crate::model::{Handler, ParamKind};

/// axum implements `Handler` for at most 16 extractors; `#[hook]` adds one.
const MAX_PARAMS: usize = 15;

/// Checks the arguments and the handler; returns every error at once.
pub(crate) fn check(args: &HookArgs, handler: &Handler) -> Errors {
    let mut errors = Errors::default();
    if args.event.is_none() {
        errors.push(syn::Error::new(
            Span::call_site(),
            "missing event name: give it first, like `#[hook(\"order.created\")]`",
        ));
    }

    let sig = &handler.sig;
    if sig.asyncness.is_none() {
        errors.push(syn::Error::new(sig.fn_token.span, "#[hook] handlers must be `async fn`: add `async` before `fn`"));
    }
    for param in &handler.params {
        if let ParamKind::Receiver = param.kind {
            errors.push(syn::Error::new(param.span, "#[hook] goes on free functions, not on methods: remove `self`"));
        }
    }
    if let Some(extra) = handler.params.get(MAX_PARAMS) {
        errors.push(syn::Error::new(
            extra.span,
            format!(
                "a hooked handler takes at most {MAX_PARAMS} parameters (axum's limit is 16 and #[hook] \
                 adds one): group some extractors into a struct that implements `FromRequestParts`"
            ),
        ));
    }
    if args.request()
        && let Some(last) = handler.params.last()
        && let Some(ident) = last.streaming_body()
    {
        errors.push(syn::Error::new(
            last.ty().map_or(last.span, syn::spanned::Spanned::span),
            format!(
                "`include_request = true` cannot capture a streaming body (`{ident}`): extract \
                 `Bytes`, `String` or `Json<T>` instead, or remove `include_request`"
            ),
        ));
    }
    errors
}
