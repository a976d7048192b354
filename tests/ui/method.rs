use fastapihooks::hook;

struct Orders;

impl Orders {
    #[hook("order.created")]
    async fn create(&self) -> axum::http::StatusCode {
        axum::http::StatusCode::OK
    }
}

fn main() {}
