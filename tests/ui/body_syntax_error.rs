//! A body mid-edit: rustc's own error, in the body, and nothing from
//! `#[hook]` (the macro does not parse the body).
use fastapihooks::hook;

#[hook("order.created")]
async fn handler() -> axum::http::StatusCode {
    let x = ;
    axum::http::StatusCode::OK
}

fn main() {}
