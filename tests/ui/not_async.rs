use fastapihooks::hook;

#[hook("order.created")]
fn handler() -> axum::http::StatusCode {
    axum::http::StatusCode::OK
}

fn main() {}
