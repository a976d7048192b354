//! The handler as a typed model: its attributes, visibility and signature
//! parsed, its parameters and the kind of its return type classified, and
//! its body kept as tokens.
//!
//! The body is not parsed (tracing's `MaybeItemFn`): it is moved verbatim
//! into the inner function, so a body mid-edit (`let x = ;`) still expands
//! and the only error is rustc's own, in the body.

use proc_macro2::{Delimiter, Group, Span, TokenStream, TokenTree};
use syn::parse::{Parse, ParseStream};
use syn::spanned::Spanned;
use syn::{Attribute, FnArg, ReturnType, Signature, Type, Visibility};

/// Body types that must stream, which `include_request` cannot capture.
const STREAMING: &[&str] = &["Body", "BodyStream", "BodyDataStream", "Multipart"];

/// A hooked handler, as written.
pub(crate) struct Handler {
    /// The outer attributes that stay on the outer function.
    pub(crate) attrs: Vec<Attribute>,
    /// `#[instrument]`s: they go on the inner function, so that they see the
    /// user's parameters and instrument the body.
    pub(crate) inner_attrs: Vec<Attribute>,
    pub(crate) vis: Visibility,
    /// The signature, token for token: the inner function keeps it, the
    /// outer one changes only its parameters.
    pub(crate) sig: Signature,
    /// The parameters, in order.
    pub(crate) params: Vec<Param>,
    /// How the outcome is read from the return value.
    pub(crate) ret: ReturnKind,
    /// The body `{ ... }`, unparsed.
    pub(crate) body: Group,
}

/// One parameter of the handler.
pub(crate) struct Param {
    /// Where the parameter is written (its first token on stable).
    pub(crate) span: Span,
    pub(crate) kind: ParamKind,
}

pub(crate) enum ParamKind {
    /// `self`, `&self`, ...: `#[hook]` goes on free functions.
    Receiver,
    /// `pattern: Type`, an extractor.
    Typed(Box<Type>),
}

/// The kind of a return type, read from its syntax: what the expansion does
/// with the value to find out whether the handler succeeded and what it
/// returned. The classification recurses into `Result` and tuples.
pub(crate) enum ReturnKind {
    /// `()`, or no return type: a success, no payload.
    Unit,
    /// `impl Trait`: turned into a `Response` (`IntoResponse`) and read back.
    ImplTrait,
    /// `Response` or `Response<Body>`: read back as it is.
    Response,
    /// `Result<T, ..>`: `Err` is not a success; `Ok` is `T`'s kind.
    Result(Box<ReturnKind>),
    /// A tuple of two or more (axum's response tuples): a leading
    /// `StatusCode` must be 2xx, and the last element decides the rest.
    Tuple {
        /// How many elements.
        len: usize,
        /// Whether the first element is a `StatusCode`.
        status_first: bool,
        /// The last element's kind.
        last: Box<ReturnKind>,
    },
    /// Any other type: read through the `HookResponse` trait, the call
    /// spanned on the type (`span`) so that rustc reports an unsupported
    /// type there, with `HookResponse`'s message. This is where an
    /// unsupported return is caught: by trait, so that users can implement
    /// it for their own types.
    Other(Span),
}

impl Parse for Handler {
    fn parse(input: ParseStream<'_>) -> syn::Result<Self> {
        let attrs = input.call(Attribute::parse_outer)?;
        let vis: Visibility = input.parse()?;
        let sig: Signature = input.parse()?;
        let body = match input.parse::<TokenTree>() {
            Ok(TokenTree::Group(g)) if g.delimiter() == Delimiter::Brace => g,
            Ok(other) => return Err(syn::Error::new(other.span(), "expected the function's body `{ ... }`")),
            Err(e) => return Err(syn::Error::new(e.span(), "expected the function's body `{ ... }`")),
        };
        if !input.is_empty() {
            return Err(input.error("unexpected tokens after the function's body"));
        }

        let (inner_attrs, attrs) =
            attrs.into_iter().partition(|a| a.path().segments.last().is_some_and(|s| s.ident == "instrument"));
        let params = sig
            .inputs
            .iter()
            .map(|input| Param {
                span: input.span(),
                kind: match input {
                    FnArg::Receiver(_) => ParamKind::Receiver,
                    FnArg::Typed(t) => ParamKind::Typed(t.ty.clone()),
                },
            })
            .collect();
        let ret = match &sig.output {
            ReturnType::Default => ReturnKind::Unit,
            ReturnType::Type(_, ty) => ReturnKind::of(ty),
        };
        Ok(Self { attrs, inner_attrs, vis, sig, params, ret, body })
    }
}

impl Handler {
    /// Whether it takes `self`: a method, in an `impl` block.
    pub(crate) fn is_method(&self) -> bool {
        self.params.iter().any(|p| matches!(p.kind, ParamKind::Receiver))
    }
}

impl Param {
    /// The type, unless this is a receiver.
    pub(crate) fn ty(&self) -> Option<&Type> {
        match &self.kind {
            ParamKind::Typed(ty) => Some(ty),
            ParamKind::Receiver => None,
        }
    }

    /// The name of the body type if it must stream (`Body`, `Multipart`, ...).
    pub(crate) fn streaming_body(&self) -> Option<&syn::Ident> {
        self.ty().and_then(last_ident).filter(|i| STREAMING.iter().any(|s| *i == s))
    }

    /// Whether the type mentions `impl Trait` (then the handler's generics
    /// cannot be named at the call).
    pub(crate) fn has_impl_trait(&self) -> bool {
        fn walk(tokens: TokenStream) -> bool {
            tokens.into_iter().any(|t| match t {
                TokenTree::Ident(i) => i == "impl",
                TokenTree::Group(g) => walk(g.stream()),
                _ => false,
            })
        }
        self.ty().is_some_and(|ty| walk(quote::quote! { #ty }))
    }
}

impl ReturnKind {
    /// Classifies a return type.
    fn of(ty: &Type) -> Self {
        let ty = peel(ty);
        match ty {
            Type::ImplTrait(_) => Self::ImplTrait,
            Type::Path(_) if is_plain_response(ty) => Self::Response,
            Type::Path(_) if last_ident(ty).is_some_and(|i| i == "Result") && !type_args(ty).is_empty() => {
                Self::Result(Box::new(Self::of(type_args(ty)[0])))
            }
            Type::Tuple(t) if t.elems.is_empty() => Self::Unit,
            Type::Tuple(t) if t.elems.len() >= 2 => Self::Tuple {
                len: t.elems.len(),
                status_first: last_ident(&t.elems[0]).is_some_and(|i| i == "StatusCode"),
                last: Box::new(Self::of(&t.elems[t.elems.len() - 1])),
            },
            _ => Self::Other(ty.span()),
        }
    }
}

/// Strips `( T )` and invisible groups.
fn peel(ty: &Type) -> &Type {
    match ty {
        Type::Paren(p) => peel(&p.elem),
        Type::Group(g) => peel(&g.elem),
        t => t,
    }
}

/// The last segment's name of a path type, if it is one.
fn last_ident(ty: &Type) -> Option<&syn::Ident> {
    match peel(ty) {
        Type::Path(p) => p.path.segments.last().map(|s| &s.ident),
        _ => None,
    }
}

/// The generic type arguments of a path type's last segment.
fn type_args(ty: &Type) -> Vec<&Type> {
    let Type::Path(p) = ty else { return Vec::new() };
    let Some(seg) = p.path.segments.last() else { return Vec::new() };
    let syn::PathArguments::AngleBracketed(a) = &seg.arguments else { return Vec::new() };
    a.args
        .iter()
        .filter_map(|a| match a {
            syn::GenericArgument::Type(t) => Some(t),
            _ => None,
        })
        .collect()
}

/// `Response` or `Response<Body>`: read back as it is.
fn is_plain_response(ty: &Type) -> bool {
    if last_ident(ty).is_none_or(|i| i != "Response") {
        return false;
    }
    match type_args(ty).as_slice() {
        [] => true,
        [body] => last_ident(body).is_some_and(|i| i == "Body"),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ret(ty: TokenStream) -> ReturnKind {
        ReturnKind::of(&syn::parse2(ty).unwrap())
    }

    #[test]
    fn a_half_written_body_still_parses_and_is_kept_as_written() {
        let body = quote::quote! { let x = ; x.await };
        let handler: Handler = syn::parse2(quote::quote! {
            #[hook_me] pub(crate) async fn h(a: u8) -> StatusCode { #body }
        })
        .unwrap();
        assert_eq!(handler.body.stream().to_string(), body.to_string());
        assert_eq!(handler.params.len(), 1);
        assert_eq!(handler.attrs.len(), 1);
    }

    #[test]
    fn instrument_goes_inside() {
        let handler: Handler = syn::parse2(quote::quote! {
            #[cfg(x)] #[tracing::instrument] async fn h() {}
        })
        .unwrap();
        assert_eq!((handler.attrs.len(), handler.inner_attrs.len()), (1, 1));
        assert!(matches!(handler.ret, ReturnKind::Unit));
    }

    #[test]
    fn not_a_function() {
        let Err(e) = syn::parse2::<Handler>(quote::quote! { struct S; }) else { panic!() };
        assert_eq!(e.to_string(), "expected `fn`");
        let Err(e) = syn::parse2::<Handler>(quote::quote! { async fn h(); }) else { panic!() };
        assert_eq!(e.to_string(), "expected the function's body `{ ... }`");
    }

    #[test]
    fn return_kinds() {
        assert!(matches!(ret(quote::quote! { () }), ReturnKind::Unit));
        assert!(matches!(ret(quote::quote! { impl IntoResponse }), ReturnKind::ImplTrait));
        assert!(matches!(ret(quote::quote! { axum::response::Response }), ReturnKind::Response));
        assert!(matches!(ret(quote::quote! { Response<Body> }), ReturnKind::Response));
        assert!(matches!(ret(quote::quote! { Response<String> }), ReturnKind::Other(_)));
        assert!(matches!(ret(quote::quote! { Json<T> }), ReturnKind::Other(_)));
        assert!(matches!(ret(quote::quote! { (T,) }), ReturnKind::Other(_)));
        let ReturnKind::Result(ok) = ret(quote::quote! { Result<(StatusCode, Json<T>), E> }) else { panic!() };
        let ReturnKind::Tuple { len: 2, status_first: true, last } = *ok else { panic!() };
        assert!(matches!(*last, ReturnKind::Other(_)));
        let ReturnKind::Tuple { len: 3, status_first: false, last } =
            ret(quote::quote! { (H, [(&str, &str); 1], (impl IntoResponse)) })
        else {
            panic!()
        };
        assert!(matches!(*last, ReturnKind::ImplTrait));
    }

    #[test]
    fn params() {
        let handler: Handler = syn::parse2(quote::quote! {
            async fn h(&self, a: impl Sized, b: axum::body::Body) {}
        })
        .unwrap();
        assert!(matches!(handler.params[0].kind, ParamKind::Receiver));
        assert!(handler.params[1].has_impl_trait());
        assert_eq!(handler.params[2].streaming_body().unwrap(), "Body");
        assert!(handler.params[1].streaming_body().is_none());
    }
}
