//! Publishing: the app appends each event to the stream with `XADD`; a
//! batch is one pipelined round trip of `XADD`s.

use redis::Value;

use super::validate::event_error;
use super::{EVENT_FIELD, Inner};
use crate::backend::{BackendError, PublishBatchError};
use crate::event::Event;

impl Inner {
    pub(super) async fn publish(&self, event: Event) -> Result<(), BackendError> {
        if self.closed.is_cancelled() {
            return Err(BackendError::Closed);
        }
        // What a worker would refuse is refused here, where the app's
        // on_failure hears of it at once.
        if let Some(why) = event_error(&event) {
            return Err(BackendError::Codec(format!("event not published: {why}")));
        }
        let json = serde_json::to_vec(&event).map_err(|e| BackendError::Codec(e.to_string()))?;
        let max = self.config.max_event_bytes;
        if json.len() > max {
            let size = json.len();
            return Err(BackendError::Codec(format!(
                "event not published: it is {size} bytes, over the limit of {max}"
            )));
        }
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

    /// One pipeline of `XADD`s, one round trip for the whole batch. Redis
    /// answers each command apart (`ignore_errors`), so an `XADD` it
    /// refused (out of memory, say) is told apart from those it took; when
    /// the round trip itself fails nothing is known, and every event counts
    /// as not published.
    pub(super) async fn publish_batch(&self, events: Vec<Event>) -> Result<(), PublishBatchError> {
        if self.closed.is_cancelled() {
            return Err(PublishBatchError::new(BackendError::Closed, events));
        }
        // An event that cannot be encoded is not sent; the others are.
        let encoded: Vec<Option<Vec<u8>>> = events.iter().map(|e| serde_json::to_vec(e).ok()).collect();
        let mut pipe = redis::pipe();
        pipe.ignore_errors();
        for json in encoded.iter().flatten() {
            pipe.cmd("XADD").arg(&self.config.stream).arg("*").arg(EVENT_FIELD).arg(json.as_slice());
        }
        let sent = pipe.len();
        let replies = if sent == 0 {
            Ok(Vec::new())
        } else {
            let pipe = &pipe;
            self.connections
                .with_shared(|mut conn| async move { pipe.query_async::<Vec<Value>>(&mut conn).await })
                .await
        };
        let mut replies = match replies {
            Ok(replies) if replies.len() == sent => replies.into_iter(),
            Ok(replies) => {
                let error =
                    format!("redis XADD pipeline on {}: {} replies to {sent} commands", self.config.url, replies.len());
                return Err(PublishBatchError::new(BackendError::transport(error), events));
            }
            Err(e) => return Err(PublishBatchError::new(self.transport("XADD pipeline", e), events)),
        };
        // A transport error is told first: those events may yet be published.
        let (mut refused, mut unencodable) = (None, None);
        let mut unpublished = Vec::new();
        for (event, json) in events.into_iter().zip(encoded) {
            match json {
                // Refused by Redis (out of memory, say): it may take the
                // event later, so a transport error.
                Some(_) => match replies.next() {
                    Some(Value::ServerError(e)) => {
                        refused.get_or_insert_with(|| {
                            BackendError::transport(format!("redis XADD on {} refused: {e}", self.config.url))
                        });
                    }
                    _ => continue,
                },
                None => {
                    unencodable.get_or_insert_with(|| {
                        BackendError::Codec(format!("event {} could not be encoded as JSON", event.id))
                    });
                }
            }
            unpublished.push(event);
        }
        match refused.or(unencodable) {
            None => Ok(()),
            Some(error) => Err(PublishBatchError::new(error, unpublished)),
        }
    }
}
