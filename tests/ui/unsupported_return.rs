use fastapihooks::hook;

#[hook("order.created")]
async fn handler() -> String {
    "created".to_owned()
}

fn main() {}
