use fastapihooks::hook;

#[hook("order.created", include_headers = true, include_headers = false)]
async fn handler() -> axum::http::StatusCode {
    axum::http::StatusCode::OK
}

fn main() {}
