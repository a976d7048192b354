//! Code generation: a hidden site type carrying the options, and the
//! handler rewritten around an inner `async fn` that holds the body
//! verbatim.

use proc_macro2::{Span, TokenStream};
use quote::{format_ident, quote, quote_spanned};
use syn::spanned::Spanned;
use syn::{FnArg, GenericParam, ItemFn, ReturnType, Type};

use crate::args::HookArgs;
use crate::check::{check, last_ident};

/// Parses, checks and expands one `#[hook(...)]`.
pub(crate) fn hook(args: TokenStream, item: TokenStream) -> syn::Result<TokenStream> {
    let item: ItemFn = syn::parse2(item)
        .map_err(|e| syn::Error::new(e.span(), format!("#[hook] goes on an `async fn` axum handler: {e}")))?;
    let args: HookArgs = syn::parse2(args)?;
    check(&args, &item)?;
    Ok(expand(&args, item))
}

/// Whether a type mentions `impl Trait` anywhere.
fn has_impl_trait(ty: &Type) -> bool {
    fn walk(tokens: TokenStream) -> bool {
        tokens.into_iter().any(|t| match t {
            proc_macro2::TokenTree::Ident(i) => i == "impl",
            proc_macro2::TokenTree::Group(g) => walk(g.stream()),
            _ => false,
        })
    }
    walk(quote! { #ty })
}

/// Gives every token the span `span`, so that an error about generated code
/// lands on the user's token.
fn respan(tokens: TokenStream, span: Span) -> TokenStream {
    tokens
        .into_iter()
        .map(|mut t| {
            if let proc_macro2::TokenTree::Group(g) = &t {
                let mut ng = proc_macro2::Group::new(g.delimiter(), respan(g.stream(), span));
                ng.set_span(span);
                t = proc_macro2::TokenTree::Group(ng);
            } else {
                t.set_span(span);
            }
            t
        })
        .collect()
}

/// Strips `( T )` and invisible groups.
fn peel(ty: &Type) -> &Type {
    match ty {
        Type::Paren(p) => peel(&p.elem),
        Type::Group(g) => peel(&g.elem),
        t => t,
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

/// Generates an expression that turns `value` (of type `ty`) into
/// `(value', Outcome)`, where `value'` is `value` or, for `impl IntoResponse`
/// and `Response`, the equivalent response. `ok` is a `bool` expression:
/// false when an enclosing status already says "not a success".
///
/// `Result`, tuples, `()`, `Response` and `impl Trait` are read from the
/// syntax; any other type goes through the `HookResponse` trait, with the
/// call spanned on the type so that an unsupported type is reported there.
struct Outcomes<'a> {
    private: &'a TokenStream,
    response: bool,
    counter: usize,
}

impl Outcomes<'_> {
    fn fresh(&mut self, what: &str) -> syn::Ident {
        self.counter += 1;
        format_ident!("__fh_{}{}", what, self.counter)
    }

    fn outcome_of(&mut self, ty: &Type, value: &syn::Ident, ok: &TokenStream) -> TokenStream {
        let p = self.private;
        let response = self.response;
        let ty = peel(ty);
        match ty {
            Type::ImplTrait(_) | Type::Path(_) if matches!(ty, Type::ImplTrait(_)) || is_plain_response(ty) => {
                let into = if matches!(ty, Type::ImplTrait(_)) {
                    quote! { #p::IntoResponse::into_response(#value) }
                } else {
                    quote! { #value }
                };
                quote! {
                    {
                        let __fh_r = #into;
                        if #ok { #p::read_back(__fh_r, #response).await } else { (__fh_r, #p::Outcome::Skip) }
                    }
                }
            }
            Type::Path(_) if last_ident(ty).is_some_and(|i| i == "Result") && !type_args(ty).is_empty() => {
                let ok_ty = type_args(ty)[0];
                let v = self.fresh("ok");
                let e = self.fresh("err");
                let inner = self.outcome_of(ok_ty, &v, ok);
                quote! {
                    match #value {
                        ::core::result::Result::Ok(#v) => {
                            let (#v, __fh_o) = #inner;
                            (::core::result::Result::Ok(#v), __fh_o)
                        }
                        ::core::result::Result::Err(#e) => (::core::result::Result::Err(#e), #p::Outcome::Skip),
                    }
                }
            }
            Type::Tuple(t) if t.elems.is_empty() => quote! { (#value, #p::Outcome::empty()) },
            Type::Tuple(t) if t.elems.len() >= 2 => {
                let parts: Vec<syn::Ident> = t.elems.iter().map(|_| self.fresh("part")).collect();
                let first_ty = &t.elems[0];
                let last_ty = &t.elems[t.elems.len() - 1];
                let first = &parts[0];
                let last = &parts[parts.len() - 1];
                let status_ok = if last_ident(first_ty).is_some_and(|i| i == "StatusCode") {
                    quote! { #ok && #p::StatusCode::is_success(&#first) }
                } else {
                    quote! { #ok }
                };
                let ok_var = self.fresh("ok");
                let ok_tokens = quote! { #ok_var };
                let inner = self.outcome_of(last_ty, last, &ok_tokens);
                quote! {
                    {
                        let (#(#parts,)*) = #value;
                        let #ok_var: ::core::primitive::bool = #status_ok;
                        let (#last, __fh_o) = #inner;
                        ((#(#parts,)*), __fh_o)
                    }
                }
            }
            _ => {
                let call = respan(quote! { #p::hook_outcome(&#value, #response) }, ty.span());
                quote! {
                    {
                        let __fh_o = if #ok { #call } else { #p::Outcome::Skip };
                        (#value, __fh_o)
                    }
                }
            }
        }
    }
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

fn expand(args: &HookArgs, item: ItemFn) -> TokenStream {
    let krate: syn::Path = match &args.krate {
        Some(lit) => lit.parse().unwrap_or_else(|_| syn::parse_quote!(::fastapihooks)),
        None => syn::parse_quote!(::fastapihooks),
    };
    let p = quote! { #krate::__private };
    let ItemFn { attrs, vis, sig, block } = item;
    let name = &sig.ident;
    let site = format_ident!("__fh_site_{}", name);

    // The site: every option, as consts and functions of a hidden type.
    let event = args.event.as_ref().map(syn::LitStr::value).unwrap_or_default();
    let (headers, credentials, response, request) =
        (args.headers(), args.credentials(), args.response(), args.request());
    let owner = args.owner.as_ref().map(|path| {
        let call = quote! { #path(__fh_parts) };
        quote! {
            fn owner(__fh_parts: &#p::Parts) -> ::core::option::Option<#p::String> {
                #call
            }
        }
    });
    let transform = args.transform.as_ref().map(|path| {
        let make = respan(quote! { #p::Transform::new(#path) }, path.span());
        quote! {
            fn transform() -> ::core::option::Option<#p::Transform> {
                static __FH_TRANSFORM: #p::LazyLock<#p::Transform> = #p::LazyLock::new(|| #make);
                ::core::option::Option::Some(#p::Clone::clone(&*__FH_TRANSFORM))
            }
        }
    });

    // Attributes: `#[instrument]` goes on the inner function (so that it
    // sees the user's parameters); everything else stays outside.
    let (inner_attrs, outer_attrs): (Vec<_>, Vec<_>) =
        attrs.into_iter().partition(|a| a.path().segments.last().is_some_and(|s| s.ident == "instrument"));

    // Outer parameters: the hidden handle first, then the user's extractors
    // renamed, the last one wrapped in `Captured` for `include_request`.
    let n = sig.inputs.len();
    let mut outer_params = vec![quote! { __fh_hook: #p::HookParts<#site> }];
    let mut call_args = Vec::new();
    let mut unwrap_body = quote! {};
    let mut request_payload = quote! { ::core::option::Option::None };
    for (i, input) in sig.inputs.iter().enumerate() {
        let FnArg::Typed(pt) = input else { continue };
        let arg = format_ident!("__fh_arg{}", i);
        let ty = &pt.ty;
        if request && i + 1 == n {
            outer_params.push(quote! { #arg: #p::Captured<#ty> });
            unwrap_body = quote! { let (#arg, __fh_request) = #p::Captured::into_parts(#arg); };
            request_payload = quote! { ::core::option::Option::Some(__fh_request) };
        } else {
            outer_params.push(quote! { #arg: #ty });
        }
        call_args.push(arg);
    }
    if request && n == 0 {
        outer_params.push(quote! { __fh_body: #p::Captured<()> });
        unwrap_body = quote! { let ((), __fh_request) = #p::Captured::into_parts(__fh_body); };
        request_payload = quote! { ::core::option::Option::Some(__fh_request) };
    }

    // The inner function keeps the signature as written, with its own copy
    // of the generics; it is called with them when they can be named.
    let inner_sig = {
        let mut s = sig.clone();
        s.ident = name.clone();
        s
    };
    let turbofish = {
        let params: Vec<TokenStream> = sig
            .generics
            .params
            .iter()
            .filter_map(|g| match g {
                GenericParam::Type(t) => {
                    let i = &t.ident;
                    Some(quote! { #i })
                }
                GenericParam::Const(c) => {
                    let i = &c.ident;
                    Some(quote! { #i })
                }
                GenericParam::Lifetime(_) => None,
            })
            .collect();
        let impl_args = sig.inputs.iter().any(|i| matches!(i, FnArg::Typed(t) if has_impl_trait(&t.ty)));
        if params.is_empty() || impl_args {
            quote! {}
        } else {
            quote! { ::<#(#params),*> }
        }
    };

    let out_ty: Type = match &sig.output {
        ReturnType::Default => syn::parse_quote!(()),
        ReturnType::Type(_, t) => (**t).clone(),
    };
    let mut outcomes = Outcomes { private: &p, response, counter: 0 };
    let out = format_ident!("__fh_out");
    // No handle, no event: then the outcome costs nothing (no serialization).
    let outcome = outcomes.outcome_of(&out_ty, &out, &quote! { #p::HookParts::is_active(&__fh_hook) });

    let mut outer_sig = sig.clone();
    outer_sig.inputs = syn::parse_quote!(#(#outer_params),*);

    // A handler under `#[cfg]` takes its site with it.
    let cfgs: Vec<&syn::Attribute> = outer_attrs.iter().filter(|a| a.path().is_ident("cfg")).collect();
    let allow = quote! {
        #[allow(non_camel_case_types, unreachable_pub, missing_docs, missing_debug_implementations, dead_code)]
    };
    let span = Span::call_site();
    quote_spanned! {span=>
        #(#cfgs)*
        #[doc(hidden)]
        #allow
        #vis struct #site;

        #(#cfgs)*
        #allow
        impl #p::HookSite for #site {
            const EVENT: &'static ::core::primitive::str = #event;
            const HEADERS: ::core::primitive::bool = #headers;
            const CREDENTIALS: ::core::primitive::bool = #credentials;
            const RESPONSE: ::core::primitive::bool = #response;
            #owner
            #transform
        }

        #(#outer_attrs)*
        #[allow(clippy::too_many_arguments)]
        #vis #outer_sig {
            #(#inner_attrs)*
            #[allow(clippy::too_many_arguments)]
            #inner_sig #block

            #unwrap_body
            let #out = #name #turbofish(#(#call_args),*).await;
            let (#out, __fh_outcome) = #outcome;
            #p::HookParts::emit(__fh_hook, #request_payload, __fh_outcome);
            #out
        }
    }
}
