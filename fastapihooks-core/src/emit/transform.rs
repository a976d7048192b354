//! [`Transform`]: shapes the context into the payload subscribers receive.

use std::fmt;
use std::sync::Arc;

use serde::Serialize;
use serde_json::Value;

use super::context::FastapihooksContext;
use crate::event::{Payload, TransformError};

/// What a transform may return: a JSON [`Value`], a [`Payload`], or a
/// `Result` of any `Serialize` type (an `Err` is reported, not delivered).
#[diagnostic::on_unimplemented(
    message = "a transform must return `serde_json::Value` or `Result<T: Serialize, E: Display>`, not `{Self}`",
    label = "this transform's return type is not supported"
)]
pub trait IntoPayload {
    /// Serializes the transform's output.
    ///
    /// # Errors
    /// The transform reported an error, or its output is not JSON.
    fn into_payload(self) -> Result<Payload, TransformError>;
}

impl IntoPayload for Value {
    fn into_payload(self) -> Result<Payload, TransformError> {
        Payload::from_serialize(&self).map_err(|e| TransformError::Serialize(e.to_string()))
    }
}

impl IntoPayload for Payload {
    fn into_payload(self) -> Result<Payload, TransformError> {
        Ok(self)
    }
}

impl<T: Serialize, E: fmt::Display> IntoPayload for Result<T, E> {
    fn into_payload(self) -> Result<Payload, TransformError> {
        match self {
            Ok(v) => Payload::from_serialize(&v).map_err(|e| TransformError::Serialize(e.to_string())),
            Err(e) => Err(TransformError::Failed(e.to_string())),
        }
    }
}

#[cfg(feature = "axum")]
impl<T: Serialize> IntoPayload for axum::Json<T> {
    fn into_payload(self) -> Result<Payload, TransformError> {
        Payload::from_serialize(&self.0).map_err(|e| TransformError::Serialize(e.to_string()))
    }
}

type TransformFn = dyn Fn(&FastapihooksContext) -> Result<Payload, TransformError> + Send + Sync;

/// A function from the context to the payload, run off the request path.
///
/// Without a transform the payload is the response payload. A transform that
/// returns an error or panics is contained: the event goes to `on_failure`
/// and nothing else is disturbed.
#[derive(Clone)]
pub struct Transform(Arc<TransformFn>);

impl Transform {
    /// Wraps a function.
    ///
    /// ```
    /// # use fastapihooks_core::{FastapihooksContext, Transform};
    /// # use serde_json::json;
    /// let t = Transform::new(|ctx: &FastapihooksContext| json!({"order_id": ctx.response_payload["id"]}));
    /// ```
    pub fn new<F, O>(f: F) -> Self
    where
        F: Fn(&FastapihooksContext) -> O + Send + Sync + 'static,
        O: IntoPayload,
    {
        Self(Arc::new(move |ctx| f(ctx).into_payload()))
    }

    /// Runs the transform, containing a panic.
    ///
    /// # Errors
    /// The transform failed or panicked.
    pub fn apply(&self, ctx: &FastapihooksContext) -> Result<Payload, TransformError> {
        let f = &self.0;
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(ctx))) {
            Ok(result) => result,
            Err(panic) => Err(TransformError::Panicked(panic_message(&*panic))),
        }
    }
}

impl fmt::Debug for Transform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Transform(..)")
    }
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = panic.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic payload".to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn transform_value_result_and_panic() {
        let ctx = FastapihooksContext::new("e").with_response(json!({"id": 7}));
        let t = Transform::new(|c: &FastapihooksContext| json!({"order": c.response_payload["id"]}));
        assert_eq!(t.apply(&ctx).unwrap().as_str(), r#"{"order":7}"#);

        let t = Transform::new(|_: &FastapihooksContext| Err::<Value, _>("nope"));
        assert_eq!(t.apply(&ctx), Err(TransformError::Failed("nope".into())));

        let t = Transform::new(|_: &FastapihooksContext| -> Value { panic!("boom") });
        assert_eq!(t.apply(&ctx), Err(TransformError::Panicked("boom".into())));
    }
}
