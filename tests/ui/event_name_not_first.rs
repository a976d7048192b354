use fastapihooks::hook;

#[hook(include_headers = true, "order.created")]
async fn handler() -> axum::http::StatusCode {
    axum::http::StatusCode::OK
}

fn main() {}
