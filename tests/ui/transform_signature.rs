use fastapihooks::hook;

fn to_payload(order_id: String) -> serde_json::Value {
    serde_json::json!({ "id": order_id })
}

#[hook("order.created", transform = to_payload)]
async fn handler() -> axum::http::StatusCode {
    axum::http::StatusCode::OK
}

fn main() {}
