//! Validation of the arguments and of the handler, each error spanned on
//! the user's token and naming the fix.

use proc_macro2::Span;
use syn::spanned::Spanned;
use syn::{FnArg, ItemFn, LitStr, Type};

use crate::args::{HookArgs, push};

/// axum implements `Handler` for at most 16 extractors; `#[hook]` adds one.
pub(crate) const MAX_PARAMS: usize = 15;

/// Longest event name.
const MAX_EVENT_LEN: usize = 128;

/// Body types that must stream, which `include_request` cannot capture.
const STREAMING: &[&str] = &["Body", "BodyStream", "BodyDataStream", "Multipart"];

/// Checks the event name: the same rule as the runtime's
/// `validate_event_name`, at compile time.
fn event_name(lit: &LitStr) -> syn::Result<()> {
    let name = lit.value();
    let problem = if name.is_empty() {
        Some("is empty".to_owned())
    } else if name.len() > MAX_EVENT_LEN {
        Some(format!("is {} characters long, over the limit of {MAX_EVENT_LEN}", name.len()))
    } else {
        name.chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-')))
            .map(|c| format!("contains {c:?}"))
    };
    match problem {
        None => Ok(()),
        Some(p) => Err(syn::Error::new(
            lit.span(),
            format!(
                "invalid event name: it {p}; use 1 to {MAX_EVENT_LEN} characters from `A-Z a-z 0-9 _ . -`, \
                 like \"order.created\""
            ),
        )),
    }
}

/// The last segment's name of a path type, if it is one.
pub(crate) fn last_ident(ty: &Type) -> Option<&syn::Ident> {
    match ty {
        Type::Path(p) => p.path.segments.last().map(|s| &s.ident),
        Type::Paren(p) => last_ident(&p.elem),
        Type::Group(g) => last_ident(&g.elem),
        _ => None,
    }
}

/// Checks the arguments and the handler; returns every error at once.
pub(crate) fn check(args: &HookArgs, item: &ItemFn) -> syn::Result<()> {
    let mut errors = None;
    match &args.event {
        None => push(
            &mut errors,
            syn::Error::new(Span::call_site(), "missing event name: give it first, like `#[hook(\"order.created\")]`"),
        ),
        Some(lit) => {
            if let Err(e) = event_name(lit) {
                push(&mut errors, e);
            }
        }
    }
    if let Some(krate) = &args.krate
        && let Err(e) = krate.parse::<syn::Path>()
    {
        push(&mut errors, syn::Error::new(krate.span(), format!("`crate` must be a path, like \"fastapihooks\": {e}")));
    }

    let sig = &item.sig;
    if sig.asyncness.is_none() {
        push(
            &mut errors,
            syn::Error::new(sig.fn_token.span, "#[hook] handlers must be `async fn`: add `async` before `fn`"),
        );
    }
    for input in &sig.inputs {
        if let FnArg::Receiver(r) = input {
            push(
                &mut errors,
                syn::Error::new(r.span(), "#[hook] goes on free functions, not on methods: remove `self`"),
            );
        }
    }
    if let Some(extra) = sig.inputs.iter().nth(MAX_PARAMS) {
        push(
            &mut errors,
            syn::Error::new(
                extra.span(),
                format!(
                    "a hooked handler takes at most {MAX_PARAMS} parameters (axum's limit is 16 and #[hook] \
                     adds one): group some extractors into a struct that implements `FromRequestParts`"
                ),
            ),
        );
    }
    if args.request()
        && let Some(FnArg::Typed(last)) = sig.inputs.last()
        && let Some(ident) = last_ident(&last.ty).filter(|i| STREAMING.iter().any(|s| *i == s))
    {
        push(
            &mut errors,
            syn::Error::new(
                last.ty.span(),
                format!(
                    "`include_request = true` cannot capture a streaming body (`{ident}`): extract \
                     `Bytes`, `String` or `Json<T>` instead, or remove `include_request`"
                ),
            ),
        );
    }

    match errors {
        Some(e) => Err(e),
        None => Ok(()),
    }
}
