//! Parsing `#[hook("event.name", key = value, ...)]` into [`HookArgs`].

use syn::parse::{Parse, ParseStream};
use syn::{LitBool, LitStr, Path, Token};

/// The options `#[hook]` accepts after the event name, in the order the
/// "unknown option" error lists them.
pub(crate) const OPTIONS: &[&str] =
    &["transform", "include_headers", "include_request", "include_response", "include_credentials", "owner", "crate"];

/// The parsed arguments, each with its span for error messages.
#[derive(Default)]
pub(crate) struct HookArgs {
    /// The event name (first, required).
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
    /// `crate = "path"`.
    pub(crate) krate: Option<LitStr>,
}

impl HookArgs {
    fn flag(b: &Option<LitBool>, default: bool) -> bool {
        b.as_ref().map_or(default, LitBool::value)
    }

    pub(crate) fn headers(&self) -> bool {
        Self::flag(&self.include_headers, false)
    }

    pub(crate) fn request(&self) -> bool {
        Self::flag(&self.include_request, false)
    }

    pub(crate) fn response(&self) -> bool {
        Self::flag(&self.include_response, true)
    }

    pub(crate) fn credentials(&self) -> bool {
        Self::flag(&self.include_credentials, false)
    }
}

/// Stores `value` in `slot`, or reports a duplicate at `key`.
fn set<T>(slot: &mut Option<T>, value: T, key: &syn::Ident, errors: &mut Option<syn::Error>) {
    if slot.is_some() {
        push(errors, syn::Error::new(key.span(), format!("`{key}` given twice: keep one")));
    } else {
        *slot = Some(value);
    }
}

/// Collects errors so that all of them are reported at once.
pub(crate) fn push(errors: &mut Option<syn::Error>, error: syn::Error) {
    match errors {
        Some(e) => e.combine(error),
        None => *errors = Some(error),
    }
}

impl Parse for HookArgs {
    fn parse(input: ParseStream<'_>) -> syn::Result<Self> {
        let mut args = Self::default();
        let mut errors = None;
        if input.peek(LitStr) {
            args.event = Some(input.parse()?);
            if !input.is_empty() {
                input.parse::<Token![,]>()?;
            }
        }
        while !input.is_empty() {
            let key: syn::Ident = input.call(syn::ext::IdentExt::parse_any)?;
            input.parse::<Token![=]>()?;
            match key.to_string().as_str() {
                "transform" => {
                    let v = input.parse()?;
                    set(&mut args.transform, v, &key, &mut errors);
                }
                "owner" => {
                    let v = input.parse()?;
                    set(&mut args.owner, v, &key, &mut errors);
                }
                "include_headers" => {
                    let v = input.parse()?;
                    set(&mut args.include_headers, v, &key, &mut errors);
                }
                "include_request" => {
                    let v = input.parse()?;
                    set(&mut args.include_request, v, &key, &mut errors);
                }
                "include_response" => {
                    let v = input.parse()?;
                    set(&mut args.include_response, v, &key, &mut errors);
                }
                "include_credentials" => {
                    let v = input.parse()?;
                    set(&mut args.include_credentials, v, &key, &mut errors);
                }
                "crate" => {
                    let v = input.parse()?;
                    set(&mut args.krate, v, &key, &mut errors);
                }
                _ => {
                    let list = OPTIONS.iter().map(|o| format!("`{o}`")).collect::<Vec<_>>().join(", ");
                    push(
                        &mut errors,
                        syn::Error::new(key.span(), format!("unknown option `{key}`: expected one of {list}")),
                    );
                    // Skip its value and go on, to report every mistake.
                    input.parse::<syn::Expr>()?;
                }
            }
            if !input.is_empty() {
                input.parse::<Token![,]>()?;
            }
        }
        match errors {
            Some(e) => Err(e),
            None => Ok(args),
        }
    }
}
