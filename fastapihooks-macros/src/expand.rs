//! Code generation from the checked model: a hidden site type carrying the
//! options, a `const` that checks the event name with the runtime's rule,
//! and the handler rewritten around an inner `async fn` that holds the body
//! verbatim.

use proc_macro2::{Span, TokenStream};
use quote::{format_ident, quote, quote_spanned};
use syn::{GenericParam, LitStr};

use crate::args::HookArgs;
use crate::model::{Handler, ReturnKind};

/// `::fastapihooks::__private`, or the `crate = "..."` path's.
fn private(args: &HookArgs) -> TokenStream {
    match &args.krate {
        Some(krate) => quote! { #krate::__private },
        None => quote! { ::fastapihooks::__private },
    }
}

/// `const _: () = assert_event_name("...");`: the event name checked by
/// the runtime's own rule (`fastapihooks_core::subscription`), evaluated by
/// rustc. Spanned on the literal, so a bad name is an error there, with the
/// rule's message. Emitted on the error path too (but for methods), so that
/// a bad name is reported together with the other mistakes.
pub(crate) fn event_name_check(args: &HookArgs) -> TokenStream {
    let Some(lit) = &args.event else { return TokenStream::new() };
    let lit = LitStr::new(&lit.value(), lit.span());
    let p = private(args);
    let assert = respan(quote! { #p::assert_event_name }, lit.span());
    quote_spanned! {lit.span()=>
        const _: () = #assert(#lit);
    }
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

/// Generates an expression that turns `value` (of kind `kind`) into
/// `(value', Outcome)`, where `value'` is `value` or, for `impl IntoResponse`
/// and `Response`, the equivalent response. `ok` is a `bool` expression:
/// false when an enclosing status already says "not a success".
///
/// `Result`, tuples, `()`, `Response` and `impl Trait` were read from the
/// syntax by the model; any other type goes through the `HookResponse`
/// trait, with the call spanned on the type so that an unsupported type is
/// reported there.
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

    fn outcome_of(&mut self, kind: &ReturnKind, value: &syn::Ident, ok: &TokenStream) -> TokenStream {
        let p = self.private;
        let response = self.response;
        match kind {
            ReturnKind::ImplTrait | ReturnKind::Response => {
                let into = if let ReturnKind::ImplTrait = kind {
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
            ReturnKind::Result(ok_kind) => {
                let v = self.fresh("ok");
                let e = self.fresh("err");
                let inner = self.outcome_of(ok_kind, &v, ok);
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
            ReturnKind::Unit => quote! { (#value, #p::Outcome::empty()) },
            ReturnKind::Tuple { len, status_first, last: last_kind } => {
                let parts: Vec<syn::Ident> = (0..*len).map(|_| self.fresh("part")).collect();
                let first = &parts[0];
                let last = &parts[parts.len() - 1];
                let status_ok = if *status_first {
                    quote! { #ok && #p::StatusCode::is_success(&#first) }
                } else {
                    quote! { #ok }
                };
                let ok_var = self.fresh("ok");
                let ok_tokens = quote! { #ok_var };
                let inner = self.outcome_of(last_kind, last, &ok_tokens);
                quote! {
                    {
                        let (#(#parts,)*) = #value;
                        let #ok_var: ::core::primitive::bool = #status_ok;
                        let (#last, __fh_o) = #inner;
                        ((#(#parts,)*), __fh_o)
                    }
                }
            }
            ReturnKind::Other(span) => {
                let call = respan(quote! { #p::hook_outcome(&#value, #response) }, *span);
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

/// Expands a checked handler.
pub(crate) fn expand(args: &HookArgs, handler: Handler) -> TokenStream {
    let p = private(args);
    let Handler { attrs: outer_attrs, inner_attrs, vis, sig, params, ret, body } = handler;
    let name = sig.ident.clone();
    let site = format_ident!("__fh_site_{}", name);

    // The site: every option, as consts and functions of a hidden type.
    // (`check` made sure that there is an event name.)
    let event = args.event.as_ref().map(LitStr::value).unwrap_or_default();
    let event_check = event_name_check(args);
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
        let make = respan(quote! { #p::Transform::new(#path) }, syn::spanned::Spanned::span(path));
        quote! {
            fn transform() -> ::core::option::Option<#p::Transform> {
                static __FH_TRANSFORM: #p::LazyLock<#p::Transform> = #p::LazyLock::new(|| #make);
                ::core::option::Option::Some(#p::Clone::clone(&*__FH_TRANSFORM))
            }
        }
    });

    // Outer parameters: the hidden handle first, then the user's extractors
    // renamed, the last one wrapped in `Captured` for `include_request`.
    let n = params.len();
    let mut outer_params = vec![quote! { __fh_hook: #p::HookParts<#site> }];
    let mut call_args = Vec::new();
    let mut unwrap_body = quote! {};
    let mut request_payload = quote! { ::core::option::Option::None };
    for (i, param) in params.iter().enumerate() {
        // Receivers were refused by `check`.
        let Some(ty) = param.ty() else { continue };
        let arg = format_ident!("__fh_arg{}", i);
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
    let turbofish = {
        let generics: Vec<TokenStream> = sig
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
        if generics.is_empty() || params.iter().any(|p| p.has_impl_trait()) {
            quote! {}
        } else {
            quote! { ::<#(#generics),*> }
        }
    };

    let mut outcomes = Outcomes { private: &p, response, counter: 0 };
    let out = format_ident!("__fh_out");
    // No handle, no event: then the outcome costs nothing (no serialization).
    let outcome = outcomes.outcome_of(&ret, &out, &quote! { #p::HookParts::is_active(&__fh_hook) });

    let mut outer_sig = sig.clone();
    outer_sig.inputs = syn::parse_quote!(#(#outer_params),*);
    let inner_sig = sig;

    // A handler under `#[cfg]` takes its site with it.
    let cfgs: Vec<&syn::Attribute> = outer_attrs.iter().filter(|a| a.path().is_ident("cfg")).collect();
    let allow = quote! {
        #[allow(non_camel_case_types, unreachable_pub, missing_docs, missing_debug_implementations, dead_code)]
    };
    let span = Span::call_site();
    quote_spanned! {span=>
        #event_check

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
            #inner_sig #body

            #unwrap_body
            let #out = #name #turbofish(#(#call_args),*).await;
            let (#out, __fh_outcome) = #outcome;
            #p::HookParts::emit(__fh_hook, #request_payload, __fh_outcome);
            #out
        }
    }
}
