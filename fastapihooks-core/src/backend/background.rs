use std::sync::Mutex;

use async_trait::async_trait;
use futures_util::StreamExt;
use futures_util::stream::{self, BoxStream};
use tokio::sync::mpsc;

use super::{Backend, BackendError, Receipt, Received};
use crate::event::Event;

/// The built-in backend: delivers in the app's own process, with no worker.
///
/// Events live in memory between emission and delivery: those still queued
/// when the process dies are lost (use a durable backend where that matters).
/// [`Fastapihooks::shutdown`](crate::Fastapihooks::shutdown) drains them.
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
                let receipt = Receipt::new(event.id.as_str());
                Some((Ok(Received::new(event, receipt)), rx))
            })
            .boxed(),
            None => stream::once(async { Err(BackendError::AlreadyConsumed) }).boxed(),
        }
    }

    async fn ack(&self, _receipt: &Receipt) -> Result<(), BackendError> {
        Ok(())
    }

    async fn close(&self) -> Result<(), BackendError> {
        self.tx.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take();
        Ok(())
    }

    fn delivers_in_process(&self) -> bool {
        true
    }
}
