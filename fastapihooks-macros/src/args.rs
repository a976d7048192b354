//! Parsing `#[hook("event.name", key = value, ...)]` into [`HookArgs`].
//!
//! Each option is a `syn::custom_keyword!` (and `crate`, a Rust keyword),
//! dispatched by one `lookahead1()` loop. Mistakes do not stop the parse:
//! every one is collected with `syn::Error::combine`, and the arguments
//! understood so far are returned beside them, so that the handler can still
//! be checked and all the errors are shown at once.

use proc_macro2::{Span, TokenTree};
use syn::ext::IdentExt as _;
use syn::parse::{Parse, ParseStream};
use syn::spanned::Spanned;
use syn::{LitBool, LitStr, Path, Token};

/// The option keywords.
mod kw {
    syn::custom_keyword!(transform);
    syn::custom_keyword!(include_headers);
    syn::custom_keyword!(include_request);
    syn::custom_keyword!(include_response);
    syn::custom_keyword!(include_credentials);
    syn::custom_keyword!(owner);
}

/// The options `#[hook]` accepts after the event name, in the order the
/// "unknown option" error lists them.
const OPTIONS: &[&str] =
    &["transform", "include_headers", "include_request", "include_response", "include_credentials", "owner", "crate"];

/// The parsed arguments, each with its span for error messages.
#[derive(Default)]
pub(crate) struct HookArgs {
    /// The event name (first, required: its absence is reported by `check`).
    pub(crate) event: Option<LitStr>,
    /// `transform = path`.
    pub(crate) transform: Option<Path>,
    /// `include_headers = bool` (default false).
    pub(crate) include_headers: Option<LitBool>,
    /// `include_request = bool` (default false).
    pub(crate) include_request: Option<LitBool>,
    /// `include_response = bool` (default true).
    pub(crate) include_response: Option<LitBool>,
    /// `include_credentials = bool` (default false).
    pub(crate) include_credentials: Option<LitBool>,
    /// `owner = path`.
    pub(crate) owner: Option<Path>,
    /// `crate = "path"`, parsed into the path once, here.
    pub(crate) krate: Option<Path>,
}

impl HookArgs {
    fn flag(b: Option<&LitBool>, default: bool) -> bool {
        b.map_or(default, LitBool::value)
    }

    pub(crate) fn headers(&self) -> bool {
        Self::flag(self.include_headers.as_ref(), false)
    }

    pub(crate) fn request(&self) -> bool {
        Self::flag(self.include_request.as_ref(), false)
    }

    pub(crate) fn response(&self) -> bool {
        Self::flag(self.include_response.as_ref(), true)
    }

    pub(crate) fn credentials(&self) -> bool {
        Self::flag(self.include_credentials.as_ref(), false)
    }

    /// Parses the attribute's arguments: what was understood, and every
    /// mistake found on the way.
    pub(crate) fn parse_all(tokens: proc_macro2::TokenStream) -> (Self, Errors) {
        let mut parsed = (Self::default(), Errors::default());
        let parser = |input: ParseStream<'_>| {
            parsed.0.parse_into(input, &mut parsed.1);
            Ok(())
        };
        // `parse_into` never fails: it records its errors and stops at the
        // first token it cannot skip.
        let _ = syn::parse::Parser::parse2(parser, tokens);
        parsed
    }

    fn parse_into(&mut self, input: ParseStream<'_>, errors: &mut Errors) {
        if input.peek(LitStr) {
            self.event = input.parse().ok();
            if !input.is_empty() && !comma(input, errors) {
                return;
            }
        }
        while !input.is_empty() {
            if let Err(e) = self.option(input, errors) {
                errors.push(e);
                skip_value(input);
            }
            if !input.is_empty() && !comma(input, errors) {
                return;
            }
        }
    }

    /// Parses one `key = value`.
    fn option(&mut self, input: ParseStream<'_>, errors: &mut Errors) -> syn::Result<()> {
        let lookahead = input.lookahead1();
        if lookahead.peek(kw::transform) {
            keyed::<kw::transform, _>(input, &mut self.transform, "transform", errors)?;
        } else if lookahead.peek(kw::include_headers) {
            keyed::<kw::include_headers, _>(input, &mut self.include_headers, "include_headers", errors)?;
        } else if lookahead.peek(kw::include_request) {
            keyed::<kw::include_request, _>(input, &mut self.include_request, "include_request", errors)?;
        } else if lookahead.peek(kw::include_response) {
            keyed::<kw::include_response, _>(input, &mut self.include_response, "include_response", errors)?;
        } else if lookahead.peek(kw::include_credentials) {
            keyed::<kw::include_credentials, _>(input, &mut self.include_credentials, "include_credentials", errors)?;
        } else if lookahead.peek(kw::owner) {
            keyed::<kw::owner, _>(input, &mut self.owner, "owner", errors)?;
        } else if lookahead.peek(Token![crate]) {
            let key = input.parse::<Token![crate]>()?.span;
            let lit: LitStr = value(input)?;
            let path = lit.parse::<Path>().map_err(|e| {
                syn::Error::new(lit.span(), format!("`crate` must be a path, like \"fastapihooks\": {e}"))
            })?;
            set(&mut self.krate, key, "crate", path, errors);
        } else if input.peek(LitStr) {
            let lit: LitStr = input.parse()?;
            if self.event.is_some() {
                return Err(syn::Error::new(lit.span(), "one event name per #[hook]: remove this one"));
            }
            let error = syn::Error::new(lit.span(), "the event name goes first: `#[hook(\"order.created\", ...)]`");
            // Keep it, so that it is not also reported missing.
            self.event = Some(lit);
            return Err(error);
        } else if input.peek(syn::Ident::peek_any) {
            let key = input.call(syn::Ident::parse_any)?;
            let list = OPTIONS.iter().map(|o| format!("`{o}`")).collect::<Vec<_>>().join(", ");
            return Err(syn::Error::new(key.span(), format!("unknown option `{key}`: expected one of {list}")));
        } else {
            return Err(lookahead.error());
        }
        Ok(())
    }
}

/// `key = value` for the keyword `K`, stored in `slot`.
fn keyed<K: Parse + Spanned, T: Parse>(
    input: ParseStream<'_>,
    slot: &mut Option<T>,
    name: &str,
    errors: &mut Errors,
) -> syn::Result<()> {
    let key = input.parse::<K>()?.span();
    set(slot, key, name, value(input)?, errors);
    Ok(())
}

/// `= value`.
fn value<T: Parse>(input: ParseStream<'_>) -> syn::Result<T> {
    input.parse::<Token![=]>()?;
    input.parse()
}

/// Stores an option, or reports a duplicate at its key.
fn set<T>(slot: &mut Option<T>, key: Span, name: &str, value: T, errors: &mut Errors) {
    if slot.is_some() {
        errors.push(syn::Error::new(key, format!("`{name}` given twice: keep one")));
    } else {
        *slot = Some(value);
    }
}

/// The `,` between arguments; false (after recording the error) if
/// something else is there, which ends the parse.
fn comma(input: ParseStream<'_>, errors: &mut Errors) -> bool {
    match input.parse::<Token![,]>() {
        Ok(_) => true,
        Err(e) => {
            errors.push(e);
            false
        }
    }
}

/// Skips what is left of a bad argument, up to the next `,`, so that the
/// arguments after it are still checked.
fn skip_value(input: ParseStream<'_>) {
    while !input.is_empty() && !input.peek(Token![,]) {
        if input.parse::<TokenTree>().is_err() {
            return;
        }
    }
}

/// Errors collected with `syn::Error::combine`, to report all at once.
#[derive(Default)]
pub(crate) struct Errors(Option<syn::Error>);

impl Errors {
    pub(crate) fn push(&mut self, error: syn::Error) {
        match &mut self.0 {
            Some(e) => e.combine(error),
            None => self.0 = Some(error),
        }
    }

    /// Adds `other`'s errors after these.
    pub(crate) fn extend(&mut self, other: Self) {
        if let Some(e) = other.0 {
            self.push(e);
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.0.is_none()
    }

    /// The errors as `compile_error!`s (nothing if there are none).
    pub(crate) fn into_compile_error(self) -> proc_macro2::TokenStream {
        self.0.map(|e| e.to_compile_error()).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(tokens: proc_macro2::TokenStream) -> (HookArgs, Vec<String>) {
        let (args, errors) = HookArgs::parse_all(tokens);
        let messages = errors.0.map(|e| e.into_iter().map(|e| e.to_string()).collect()).unwrap_or_default();
        (args, messages)
    }

    #[test]
    fn every_option() {
        let (args, errors) = parse(quote::quote! {
            "order.created", transform = shape, include_headers = true, include_request = true,
            include_response = false, include_credentials = true, owner = tenant, crate = "renamed",
        });
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(args.event.unwrap().value(), "order.created");
        assert!(args.transform.unwrap().is_ident("shape"));
        assert!(args.owner.unwrap().is_ident("tenant"));
        assert!(args.krate.unwrap().is_ident("renamed"));
        assert_eq!((args.include_headers.is_some(), args.include_credentials.is_some()), (true, true));
    }

    #[test]
    fn defaults() {
        let (args, errors) = parse(quote::quote! { "e" });
        assert!(errors.is_empty());
        assert_eq!((args.headers(), args.request(), args.response(), args.credentials()), (false, false, true, false));
    }

    #[test]
    fn all_mistakes_are_collected_and_the_rest_is_kept() {
        let (args, errors) = parse(quote::quote! {
            "e", include_body = true, include_headers = true, include_headers = false,
            transform = 1, crate = "not a path", owner = tenant
        });
        assert_eq!(errors.len(), 4, "{errors:?}");
        assert!(errors[0].starts_with("unknown option `include_body`: expected one of `transform`, "));
        assert_eq!(errors[1], "`include_headers` given twice: keep one");
        assert!(errors[3].starts_with("`crate` must be a path"));
        assert!(args.headers(), "the first `include_headers` is kept");
        assert!(args.owner.is_some(), "options after the mistakes are still read");
    }

    #[test]
    fn event_name_placement() {
        let (args, errors) = parse(quote::quote! { include_headers = true, "e" });
        assert_eq!(errors, ["the event name goes first: `#[hook(\"order.created\", ...)]`"]);
        assert!(args.event.is_some());
        let (_, errors) = parse(quote::quote! { "e", "f" });
        assert_eq!(errors, ["one event name per #[hook]: remove this one"]);
    }

    #[test]
    fn a_missing_comma_ends_the_parse_with_an_error() {
        let (_, errors) = parse(quote::quote! { "e" include_headers = true });
        assert_eq!(errors, ["expected `,`"]);
    }
}
