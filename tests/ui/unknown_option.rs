use fastapihooks::hook;

#[hook("order.created", include_body = true)]
async fn handler() -> axum::http::StatusCode {
    axum::http::StatusCode::OK
}

fn main() {}
