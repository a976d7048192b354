use fastapihooks::hook;

#[hook(include_headers = true)]
async fn handler() -> axum::http::StatusCode {
    axum::http::StatusCode::OK
}

fn main() {}
