//! Publishing: the app appends each event to the stream with `XADD`.

use redis::Value;

use super::{EVENT_FIELD, Inner};
use crate::backend::BackendError;
use crate::event::Event;

impl Inner {
    pub(super) async fn publish(&self, event: Event) -> Result<(), BackendError> {
        if self.closed.is_cancelled() {
            return Err(BackendError::Closed);
        }
        let json = serde_json::to_vec(&event).map_err(|e| BackendError::Codec(e.to_string()))?;
        let stream = &self.config.stream;
        self.connections
            .with_shared(|mut conn| {
                let json = &json;
                async move {
                    redis::cmd("XADD")
                        .arg(stream)
                        .arg("*")
                        .arg(EVENT_FIELD)
                        .arg(json.as_slice())
                        .query_async::<Value>(&mut conn)
                        .await
                        .map(drop)
                }
            })
            .await
            .map_err(|e| self.transport("XADD", e))
    }
}
