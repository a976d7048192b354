//! `#[hook]` hygiene and composition: shadowed `core`/`std`/`serde_json`
//! and prelude names, generics, `#[debug_handler]`, `#[instrument]`, 15
//! parameters, a renamed crate.

use std::time::Duration;

use axum::Router;
use axum::routing::post;
use fastapihooks::{Fastapihooks, WebhookSubscription};
use serde_json::json;

use crate::hook_util::{Receiver, builder, call, post_json};

/// Every name the expansion could trip over, shadowed.
#[allow(dead_code, non_camel_case_types, unused_imports, clippy::all)]
mod shadowed {
    mod core {}
    mod std {}
    mod serde_json {}
    mod axum {}
    mod fastapihooks {}
    struct Option;
    struct Some;
    struct None;
    struct Result;
    struct Ok;
    struct Err;
    struct String;
    struct Clone;
    struct Into;
    struct bool;
    struct str;
    struct Box;
    struct Vec;
    trait Future {}
    trait Send {}

    fn tenant(_: &::axum::http::request::Parts) -> ::core::option::Option<::std::string::String> {
        ::core::option::Option::Some("t1".into())
    }

    fn shape(ctx: &::fastapihooks::FastapihooksContext) -> ::serde_json::Value {
        ::serde_json::json!({ "shaped": ctx.response_payload["v"], "owner": ctx.owner_id })
    }

    #[::fastapihooks::hook("hygiene.shadowed", transform = shape, owner = tenant, include_headers = true, include_request = true)]
    pub(crate) async fn shadowed(
        ::axum::Json(v): ::axum::Json<::serde_json::Value>,
    ) -> ::core::result::Result<(::axum::http::StatusCode, ::axum::Json<::serde_json::Value>), ::axum::http::StatusCode>
    {
        ::core::result::Result::Ok((::axum::http::StatusCode::CREATED, ::axum::Json(::serde_json::json!({ "v": v }))))
    }
}

#[tokio::test]
async fn hook_hygiene_shadowed_core_std_serde_json() {
    let mut rx = Receiver::start().await;
    let hooks = builder().subscriber("hygiene.shadowed", WebhookSubscription::new(&rx.url).unwrap()).build().unwrap();
    let app = Router::new().route("/", post(shadowed::shadowed)).with_state(hooks.clone());
    let (s, _, _) = call(app, post_json("/", "5")).await;
    assert_eq!(s, 201);
    assert_eq!(rx.next().await.body, json!({"shaped": 5, "owner": "t1"}));
    hooks.shutdown(Duration::from_secs(2)).await;
}

mod composed {
    use axum::Json;
    use axum::extract::State;
    use axum::http::{HeaderMap, StatusCode};
    use fastapihooks::{Fastapihooks, hook};
    use serde::Serialize;
    use serde::de::DeserializeOwned;
    use serde_json::{Value, json};

    /// Generic handlers keep their generics.
    #[hook("compose.generic", include_request = true)]
    pub(crate) async fn generic<T>(Json(v): Json<T>) -> Json<T>
    where
        T: Serialize + DeserializeOwned + Send + 'static,
    {
        Json(v)
    }

    /// `#[hook]` goes above `#[debug_handler]`.
    #[hook("compose.debug")]
    #[axum::debug_handler]
    pub(crate) async fn debugged(State(_hooks): State<Fastapihooks>, Json(v): Json<Value>) -> Json<Value> {
        Json(json!({"debug": v}))
    }

    /// `#[instrument]` wraps the handler body, with its own parameters.
    #[hook("compose.traced", include_request = true)]
    #[tracing::instrument(skip(body), fields(len = body.len()))]
    pub(crate) async fn traced(body: String) -> StatusCode {
        tracing::info!("traced");
        StatusCode::ACCEPTED
    }

    /// Fifteen parameters: the most a hooked handler takes.
    #[hook("compose.fifteen")]
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn fifteen(
        _a1: HeaderMap,
        _a2: HeaderMap,
        _a3: HeaderMap,
        _a4: HeaderMap,
        _a5: HeaderMap,
        _a6: HeaderMap,
        _a7: HeaderMap,
        _a8: HeaderMap,
        _a9: HeaderMap,
        _a10: HeaderMap,
        _a11: HeaderMap,
        _a12: HeaderMap,
        _a13: HeaderMap,
        _a14: HeaderMap,
        Json(v): Json<Value>,
    ) -> Json<Value> {
        Json(json!({"fifteen": v}))
    }
}

mod renamed {
    use fastapihooks as renamed_hooks;

    /// `crate = "..."` for a renamed dependency.
    #[renamed_hooks::hook("compose.renamed", crate = "renamed_hooks")]
    pub(crate) async fn renamed() -> axum::Json<u8> {
        axum::Json(1)
    }
}

#[tokio::test]
async fn hook_composes_with_generics_debug_handler_instrument_15_params_renamed_crate() {
    let mut rx = Receiver::start().await;
    let hooks: Fastapihooks =
        ["compose.generic", "compose.debug", "compose.traced", "compose.fifteen", "compose.renamed"]
            .iter()
            .fold(builder(), |b, e| b.subscriber(*e, WebhookSubscription::new(&rx.url).unwrap()))
            .build()
            .unwrap();
    let app = Router::new()
        .route("/generic", post(composed::generic::<serde_json::Value>))
        .route("/debug", post(composed::debugged))
        .route("/traced", post(composed::traced))
        .route("/fifteen", post(composed::fifteen))
        .route("/renamed", post(renamed::renamed))
        .with_state(hooks.clone());
    let (s, body, _) = call(app.clone(), post_json("/generic", r#"{"g":1}"#)).await;
    assert_eq!((s, &body[..]), (200, &br#"{"g":1}"#[..]));
    assert_eq!(rx.next().await.body, json!({"g": 1}));
    call(app.clone(), post_json("/debug", "2")).await;
    assert_eq!(rx.next().await.body, json!({"debug": 2}));
    let (s, _, _) = call(app.clone(), post_json("/traced", "abc")).await;
    assert_eq!(s, 202);
    assert_eq!(rx.next().await.body, json!(null));
    call(app.clone(), post_json("/fifteen", "15")).await;
    assert_eq!(rx.next().await.body, json!({"fifteen": 15}));
    call(app, post_json("/renamed", "")).await;
    assert_eq!(rx.next().await.body, json!(1));
    hooks.shutdown(Duration::from_secs(2)).await;
}
