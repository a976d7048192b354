//! Every mistake is reported at once: the arguments' (collected with
//! `syn::Error::combine`), the handler's and the event name's.
use fastapihooks::hook;

#[hook("order/created", include_body = true, include_headers = true, include_headers = false)]
fn handler() -> axum::http::StatusCode {
    axum::http::StatusCode::OK
}

fn main() {}
