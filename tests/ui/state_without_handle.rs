use axum::Router;
use axum::extract::State;
use axum::routing::post;
use fastapihooks::hook;

#[derive(Clone)]
struct AppState {
    name: String,
}

#[hook("order.created")]
#[axum::debug_handler]
async fn handler(State(state): State<AppState>) -> axum::Json<String> {
    axum::Json(state.name)
}

fn main() {
    let _app: Router = Router::new().route("/", post(handler)).with_state(AppState { name: "shop".into() });
}
