//! Operational events: what the engine tells the operator about endpoints
//! and deliveries, the way Svix's operational webhooks do.
//!
//! | event | when |
//! |---|---|
//! | `endpoint.failing` | the first delivery given up in a streak of failures of a subscription |
//! | `endpoint.disabled` | the engine disabled a subscription (see [`DisablePolicy`](crate::health::DisablePolicy)) |
//! | `endpoint.recovered` | a failing subscription got a 2xx again |
//! | `message.attempt.exhausted` | a delivery was given up |
//!
//! Each goes to the `on_operational` callback and, when operator
//! subscribers are configured (`operational_webhooks`), as a signed,
//! retried webhook of its own, through the same engine, with the
//! [`OperationalEvent`] as its JSON body.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::health::EndpointHealth;

/// Which operational event.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub enum OperationalKind {
    /// `endpoint.failing`.
    #[serde(rename = "endpoint.failing")]
    EndpointFailing,
    /// `endpoint.disabled`.
    #[serde(rename = "endpoint.disabled")]
    EndpointDisabled,
    /// `endpoint.recovered`.
    #[serde(rename = "endpoint.recovered")]
    EndpointRecovered,
    /// `message.attempt.exhausted`.
    #[serde(rename = "message.attempt.exhausted")]
    AttemptExhausted,
}

impl OperationalKind {
    /// Every kind.
    pub const ALL: [Self; 4] =
        [Self::EndpointFailing, Self::EndpointDisabled, Self::EndpointRecovered, Self::AttemptExhausted];

    /// Its event name, like `endpoint.disabled`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::EndpointFailing => "endpoint.failing",
            Self::EndpointDisabled => "endpoint.disabled",
            Self::EndpointRecovered => "endpoint.recovered",
            Self::AttemptExhausted => "message.attempt.exhausted",
        }
    }
}

impl std::fmt::Display for OperationalKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One operational event. Its JSON is the body of the operational webhook.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct OperationalEvent {
    /// Which event.
    #[serde(rename = "type")]
    pub kind: OperationalKind,
    /// When it happened.
    pub at: DateTime<Utc>,
    /// The store's id of the subscription it is about; none for a static
    /// subscriber (only `message.attempt.exhausted`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subscription_id: Option<String>,
    /// The subscription's owner.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner_id: Option<String>,
    /// The subscription's target URL, its query cut.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_url: Option<String>,
    /// The event the delivery was of (the one given up, or the last one
    /// seen when the subscription changed course).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_id: Option<String>,
    /// That event's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_name: Option<String>,
    /// Attempts made (`message.attempt.exhausted`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempts: Option<u32>,
    /// Why: the last error, or the reason for disabling.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The subscription's health after the change.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<EndpointHealth>,
}

impl OperationalEvent {
    /// An event of `kind`, now, with nothing else set.
    pub fn new(kind: OperationalKind) -> Self {
        Self {
            kind,
            at: Utc::now(),
            subscription_id: None,
            owner_id: None,
            target_url: None,
            event_id: None,
            event_name: None,
            attempts: None,
            reason: None,
            health: None,
        }
    }
}

/// Receives operational events: the `on_operational` callback. Called from
/// the engine's tasks; keep it quick. Any `Fn(OperationalEvent)` closure is one.
pub trait OperationalHandler: Send + Sync + 'static {
    /// Handles one event.
    fn on_operational(&self, event: OperationalEvent);
}

impl<F: Fn(OperationalEvent) + Send + Sync + 'static> OperationalHandler for F {
    fn on_operational(&self, event: OperationalEvent) {
        self(event);
    }
}
