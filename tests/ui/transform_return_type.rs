use fastapihooks::{FastapihooksContext, hook};

fn to_payload(ctx: &FastapihooksContext) -> String {
    ctx.event_name.clone()
}

#[hook("order.created", transform = to_payload)]
async fn handler() -> axum::http::StatusCode {
    axum::http::StatusCode::OK
}

fn main() {}
