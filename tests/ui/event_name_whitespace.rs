use fastapihooks::hook;

#[hook("order created")]
async fn handler() -> axum::http::StatusCode {
    axum::http::StatusCode::OK
}

fn main() {}
