use fastapihooks::hook;

#[hook("order.créé")]
async fn handler() -> axum::http::StatusCode {
    axum::http::StatusCode::OK
}

fn main() {}
