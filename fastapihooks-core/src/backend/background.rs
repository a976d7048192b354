use std::sync::Mutex;

use async_trait::async_trait;
use futures_util::StreamExt;
use futures_util::stream::{self, BoxStream};
use tokio::sync::mpsc;

use super::{Acker, Backend, BackendError, Received};
use crate::event::Event;

/// An in-memory queue: the app publishes to it and a
/// [`Worker`](crate::worker::Worker) in the same process consumes it (give
/// both the same `Arc`, with `backend_arc`).
///
/// [`Fastapihooks`](crate::Fastapihooks) needs no backend to deliver in
/// process (its default): this is for keeping intake and delivery apart
/// within one process, and for tests. Events live in memory between publish
/// and delivery: those still queued when the process dies are lost, so
/// their ack does nothing.
#[derive(Debug)]
pub struct BackgroundTaskBackend {
    tx: Mutex<Option<mpsc::Sender<Event>>>,
    rx: Mutex<Option<mpsc::Receiver<Event>>>,
}

impl BackgroundTaskBackend {
    /// A backend holding at most 1024 events between publish and delivery.
    pub fn new() -> Self {
        Self::with_capacity(1024)
    }

    /// A backend holding at most `capacity` events (at least 1) between
    /// publish and delivery; `publish` waits when it is full.
    pub fn with_capacity(capacity: usize) -> Self {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        Self { tx: Mutex::new(Some(tx)), rx: Mutex::new(Some(rx)) }
    }

    fn sender(&self) -> Option<mpsc::Sender<Event>> {
        self.tx.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }
}

impl Default for BackgroundTaskBackend {
    fn default() -> Self {
        Self::new()
    }
}

#[async_trait]
impl Backend for BackgroundTaskBackend {
    async fn publish(&self, event: Event) -> Result<(), BackendError> {
        let tx = self.sender().ok_or(BackendError::Closed)?;
        tx.send(event).await.map_err(|_| BackendError::Closed)
    }

    fn consume(&self) -> BoxStream<'static, Result<Received, BackendError>> {
        let rx = self.rx.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take();
        match rx {
            Some(rx) => stream::unfold(rx, |mut rx| async move {
                let event = rx.recv().await?;
                Some((Ok(Received::new(event, Acker::none())), rx))
            })
            .boxed(),
            None => stream::once(async { Err(BackendError::AlreadyConsumed) }).boxed(),
        }
    }

    async fn close(&self) -> Result<(), BackendError> {
        self.tx.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take();
        Ok(())
    }
}
