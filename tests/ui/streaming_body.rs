use axum::body::Body;
use axum::http::StatusCode;
use fastapihooks::hook;

#[hook("upload.received", include_request = true)]
async fn handler(_body: Body) -> StatusCode {
    StatusCode::OK
}

fn main() {}
