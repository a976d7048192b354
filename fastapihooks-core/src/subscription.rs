//! Subscriptions: where an event is delivered, and how to authenticate there.

use std::fmt;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use url::Url;

use crate::secret::{Secret, SecretFormatError, SigningSecret};

mod event_name;
#[doc(hidden)]
pub use event_name::assert_event_name;
pub use event_name::{EventNameError, MAX_EVENT_NAME_LEN, event_name_error};

/// How a delivery authenticates to its endpoint.
///
/// Serialized as the original's two fields: `auth_type` (`"none"` or
/// `"bearer"`) and `auth_value`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "auth_type", content = "auth_value", rename_all = "lowercase")]
#[non_exhaustive]
pub enum Auth {
    /// No `Authorization` header.
    #[default]
    None,
    /// `Authorization: Bearer <token>`.
    Bearer(Secret),
}

impl Auth {
    /// A bearer token.
    pub fn bearer(token: impl Into<Secret>) -> Self {
        Self::Bearer(token.into())
    }

    /// The original's `auth_type` string: `"none"` or `"bearer"`.
    pub fn auth_type(&self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Bearer(_) => "bearer",
        }
    }

    /// The original's `auth_value`: the token, if any.
    pub fn auth_value(&self) -> Option<&Secret> {
        match self {
            Self::None => None,
            Self::Bearer(token) => Some(token),
        }
    }

    /// Builds an [`Auth`] from the original's `auth_type` and `auth_value`.
    ///
    /// # Errors
    /// An unknown `auth_type`, or `bearer` without a value.
    pub fn from_parts(auth_type: &str, auth_value: Option<String>) -> Result<Self, InvalidSubscription> {
        match (auth_type, auth_value) {
            ("none", _) => Ok(Self::None),
            ("bearer", Some(token)) if !token.is_empty() => Ok(Self::Bearer(Secret::new(token))),
            ("bearer", _) => Err(InvalidSubscription::MissingBearerToken),
            (other, _) => Err(InvalidSubscription::UnknownAuthType(other.to_owned())),
        }
    }
}

/// Why a subscription was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InvalidSubscription {
    /// The target URL does not parse.
    #[error("invalid target url: {0}")]
    Url(String),
    /// The target URL is not `http` or `https`.
    #[error("target url scheme must be http or https, not `{0}`")]
    Scheme(String),
    /// The target URL has no host.
    #[error("target url has no host")]
    NoHost,
    /// The target URL carries a user name or password.
    #[error("target url must not carry credentials; use bearer auth instead")]
    Credentials,
    /// The event name is empty or not made of `[A-Za-z0-9_.-]`, or too long.
    #[error("invalid event name `{0}`: use 1 to 128 characters from [A-Za-z0-9_.-]")]
    EventName(String),
    /// `auth_type` is neither `none` nor `bearer`.
    #[error("unknown auth_type `{0}`: expected `none` or `bearer`")]
    UnknownAuthType(String),
    /// `auth_type` is `bearer` but no token was given.
    #[error("auth_type `bearer` needs a non-empty auth_value")]
    MissingBearerToken,
    /// A signing secret cannot sign.
    #[error("invalid signing secret: {0}")]
    SigningSecret(#[from] SecretFormatError),
}

/// Checks that a target URL is one a webhook may be sent to: `http` or
/// `https`, with a host and without credentials. Where the host resolves is
/// checked at delivery time, by the network guard.
///
/// # Errors
/// [`InvalidSubscription`] naming what is wrong.
pub fn validate_target_url(target: &str) -> Result<Url, InvalidSubscription> {
    let url = Url::parse(target).map_err(|e| InvalidSubscription::Url(e.to_string()))?;
    match url.scheme() {
        "http" | "https" => {}
        other => return Err(InvalidSubscription::Scheme(other.to_owned())),
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(InvalidSubscription::NoHost);
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(InvalidSubscription::Credentials);
    }
    Ok(url)
}

/// Checks an event name: 1 to 128 characters from `[A-Za-z0-9_.-]`, the
/// rule of [`event_name_error`] (which `#[hook]` applies at compile time).
///
/// # Errors
/// [`InvalidSubscription::EventName`].
pub fn validate_event_name(name: &str) -> Result<(), InvalidSubscription> {
    match event_name_error(name) {
        None => Ok(()),
        Some(_) => Err(InvalidSubscription::EventName(name.to_owned())),
    }
}

/// A destination for webhooks: a URL, its authentication, free-form metadata
/// and, for multi-tenant apps, the owner it belongs to.
///
/// A subscription with an `owner_id` receives only the events of that owner;
/// one without receives every event of its event name.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct WebhookSubscription {
    /// Where deliveries are POSTed.
    pub target_url: String,
    /// How deliveries authenticate.
    #[serde(flatten)]
    pub auth: Auth,
    /// Free-form metadata (a JSON object).
    #[serde(default)]
    pub metadata: Map<String, Value>,
    /// The tenant this subscription belongs to; `None` receives all owners' events.
    #[serde(default)]
    pub owner_id: Option<String>,
    /// Per-subscription signing secrets (the newest first); during a
    /// rotation every unexpired one signs. Empty: the global secret signs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub secrets: Vec<SigningSecret>,
}

impl WebhookSubscription {
    /// A subscription to `target_url`, with no auth, no metadata and no owner.
    ///
    /// # Errors
    /// The URL is not `http(s)`, has no host, or carries credentials.
    pub fn new(target_url: impl Into<String>) -> Result<Self, InvalidSubscription> {
        let target_url = target_url.into();
        validate_target_url(&target_url)?;
        Ok(Self { target_url, auth: Auth::None, metadata: Map::new(), owner_id: None, secrets: Vec::new() })
    }

    /// Sets bearer authentication.
    #[must_use]
    pub fn bearer(mut self, token: impl Into<Secret>) -> Self {
        self.auth = Auth::bearer(token);
        self
    }

    /// Sets the authentication.
    #[must_use]
    pub fn auth(mut self, auth: Auth) -> Self {
        self.auth = auth;
        self
    }

    /// Sets the owner (tenant).
    #[must_use]
    pub fn owner(mut self, owner_id: impl Into<String>) -> Self {
        self.owner_id = Some(owner_id.into());
        self
    }

    /// Sets the metadata.
    #[must_use]
    pub fn metadata(mut self, metadata: Map<String, Value>) -> Self {
        self.metadata = metadata;
        self
    }

    /// Signs this subscription's deliveries with `secret` (replacing its
    /// secrets). Give the receiver the same secret.
    #[must_use]
    pub fn signing_secret(mut self, secret: impl Into<Secret>) -> Self {
        self.secrets = vec![SigningSecret::new(secret)];
        self
    }

    /// Signs this subscription's deliveries with a new random `whsec_`
    /// secret (replacing its secrets); read it back with
    /// [`WebhookSubscription::current_secret`] to hand it to the receiver.
    #[must_use]
    pub fn generated_secret(self) -> Self {
        self.signing_secret(Secret::generate())
    }

    /// The newest of this subscription's secrets, if it has any.
    pub fn current_secret(&self) -> Option<&Secret> {
        self.secrets.first().map(|s| &s.secret)
    }

    /// The secrets that sign at `now`, newest first.
    pub fn active_secrets(&self, now: DateTime<Utc>) -> impl Iterator<Item = &SigningSecret> {
        self.secrets.iter().filter(move |s| s.is_active_at(now))
    }

    /// Rotates to `new`: it signs from now on, and the current secrets keep
    /// signing beside it until `old_valid_until` (see [`crate::secret::rotate`]).
    pub fn rotate_secret(&mut self, new: impl Into<Secret>, old_valid_until: DateTime<Utc>) {
        self.secrets = crate::secret::rotate(&self.secrets, SigningSecret::new(new), old_valid_until, Utc::now());
    }

    /// True when an event of `event_owner` may be delivered here: the
    /// subscription has no owner, or the same owner.
    pub fn accepts_owner(&self, event_owner: Option<&str>) -> bool {
        match &self.owner_id {
            None => true,
            Some(own) => event_owner == Some(own.as_str()),
        }
    }
}

impl fmt::Debug for WebhookSubscription {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WebhookSubscription")
            .field("target_url", &redact_url(&self.target_url))
            .field("auth", &self.auth)
            .field("metadata", &self.metadata)
            .field("owner_id", &self.owner_id)
            .field("secrets", &self.secrets)
            .finish()
    }
}

/// A URL for logs: query strings often carry tokens, so they are cut.
pub(crate) fn redact_url(url: &str) -> &str {
    url.split_once('?').map_or(url, |(base, _)| base)
}

/// A subscription as a [`Store`](crate::store::Store) keeps it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct StoredWebhookSubscription {
    /// The store's id for it.
    pub id: String,
    /// The event it subscribes to.
    pub event_name: String,
    /// The destination: shared, so that deliveries and failure reports
    /// hold it without copying it.
    #[serde(flatten)]
    pub subscription: Arc<WebhookSubscription>,
    /// When it was added.
    pub created_at: DateTime<Utc>,
    /// When it was last changed.
    pub updated_at: DateTime<Utc>,
    /// Set while the subscription is disabled: its events are skipped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disabled: Option<crate::health::Disabled>,
    /// How its deliveries have been going.
    #[serde(default)]
    pub health: crate::health::EndpointHealth,
}

impl StoredWebhookSubscription {
    /// Assembles a stored subscription (for store implementations).
    pub fn new(
        id: impl Into<String>,
        event_name: impl Into<String>,
        subscription: WebhookSubscription,
        created_at: DateTime<Utc>,
        updated_at: DateTime<Utc>,
    ) -> Self {
        Self {
            id: id.into(),
            event_name: event_name.into(),
            subscription: Arc::new(subscription),
            created_at,
            updated_at,
            disabled: None,
            health: crate::health::EndpointHealth::default(),
        }
    }

    /// True unless it is disabled.
    pub fn is_enabled(&self) -> bool {
        self.disabled.is_none()
    }
}

impl std::ops::Deref for StoredWebhookSubscription {
    type Target = WebhookSubscription;
    fn deref(&self) -> &WebhookSubscription {
        &self.subscription
    }
}

/// A partial update of a subscription: `None` fields are left alone, and
/// `metadata` is merged into the existing object key by key (a key set to
/// `null` is kept as `null`, not removed).
#[derive(Clone, Debug, Default, PartialEq)]
#[non_exhaustive]
pub struct SubscriptionUpdate {
    /// A new target URL.
    pub target_url: Option<String>,
    /// New authentication.
    pub auth: Option<Auth>,
    /// Keys to merge into the metadata.
    pub metadata: Option<Map<String, Value>>,
    /// A new owner (`Some(None)` clears it).
    pub owner_id: Option<Option<String>>,
    /// New signing secrets, replacing the old list (newest first; an empty
    /// list returns the subscription to the global secret).
    pub secrets: Option<Vec<SigningSecret>>,
}

impl SubscriptionUpdate {
    /// An update that changes nothing yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Changes the target URL.
    #[must_use]
    pub fn target_url(mut self, url: impl Into<String>) -> Self {
        self.target_url = Some(url.into());
        self
    }

    /// Changes the authentication.
    #[must_use]
    pub fn auth(mut self, auth: Auth) -> Self {
        self.auth = Some(auth);
        self
    }

    /// Merges these keys into the metadata.
    #[must_use]
    pub fn merge_metadata(mut self, metadata: Map<String, Value>) -> Self {
        self.metadata = Some(metadata);
        self
    }

    /// Changes the owner.
    #[must_use]
    pub fn owner_id(mut self, owner_id: Option<String>) -> Self {
        self.owner_id = Some(owner_id);
        self
    }

    /// Replaces the signing secrets (see [`crate::secret::rotate`] to make
    /// a rotated list).
    #[must_use]
    pub fn secrets(mut self, secrets: Vec<SigningSecret>) -> Self {
        self.secrets = Some(secrets);
        self
    }

    /// Validates the parts that can be checked without the store.
    ///
    /// # Errors
    /// An invalid target URL, or a signing secret that cannot sign.
    pub fn validate(&self) -> Result<(), InvalidSubscription> {
        if let Some(url) = &self.target_url {
            validate_target_url(url)?;
        }
        for secret in self.secrets.iter().flatten() {
            secret.validate()?;
        }
        Ok(())
    }

    /// Applies the update to `sub` (metadata merged).
    pub fn apply(self, sub: &mut WebhookSubscription) {
        if let Some(url) = self.target_url {
            sub.target_url = url;
        }
        if let Some(auth) = self.auth {
            sub.auth = auth;
        }
        if let Some(meta) = self.metadata {
            sub.metadata.extend(meta);
        }
        if let Some(owner) = self.owner_id {
            sub.owner_id = owner;
        }
        if let Some(secrets) = self.secrets {
            sub.secrets = secrets;
        }
    }
}

/// Whom a delivery goes to, as a durable record keeps it (a retry waiting
/// in a backend's schedule, a recorded failure): a reference, so that no
/// subscription secret is written with it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum TargetRef {
    /// A subscription of the store, by id: looked up again when due (a
    /// subscription removed meanwhile is not retried; rotated secrets sign).
    #[serde(rename = "stored")]
    Stored(String),
    /// The static subscriber at this index of the event's own
    /// [`subscribers`](crate::Event::subscribers) (the app's, carried by the event).
    #[serde(rename = "carried")]
    Carried(usize),
    /// The consuming engine's static subscriber of the event's name at this
    /// index, with its URL, checked when due (a worker restarted with other
    /// subscribers does not send it elsewhere).
    #[serde(rename = "static")]
    Static {
        /// Its index among the static subscribers of the event's name.
        index: usize,
        /// Its target URL.
        url: String,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn target_url_rules() {
        assert!(validate_target_url("https://example.com/hook").is_ok());
        assert!(validate_target_url("http://127.0.0.1:8080/").is_ok());
        assert_eq!(validate_target_url("ftp://example.com"), Err(InvalidSubscription::Scheme("ftp".into())));
        assert!(matches!(validate_target_url("not a url"), Err(InvalidSubscription::Url(_))));
        assert_eq!(validate_target_url("https://u:p@example.com/"), Err(InvalidSubscription::Credentials));
        assert_eq!(validate_target_url("https://u@example.com/"), Err(InvalidSubscription::Credentials));
    }

    #[test]
    fn event_name_rules() {
        assert!(validate_event_name("order.created").is_ok());
        assert!(validate_event_name("a-b_C.9").is_ok());
        assert!(validate_event_name("").is_err());
        assert!(validate_event_name("order created").is_err());
        assert!(validate_event_name(&"a".repeat(129)).is_err());
    }

    #[test]
    fn auth_serializes_as_the_originals_fields() {
        let sub = WebhookSubscription::new("https://example.com").unwrap().bearer("tok");
        let json = serde_json::to_value(&sub).unwrap();
        assert_eq!(json["auth_type"], "bearer");
        assert_eq!(json["auth_value"], "tok");
        let back: WebhookSubscription = serde_json::from_value(json).unwrap();
        assert_eq!(back, sub);
        let none = serde_json::to_value(WebhookSubscription::new("https://example.com").unwrap()).unwrap();
        assert_eq!(none["auth_type"], "none");
    }

    #[test]
    fn debug_hides_bearer_token_and_query() {
        let sub = WebhookSubscription::new("https://example.com/h?token=abc").unwrap().bearer("s3cr3t-token");
        let dbg = format!("{sub:?}");
        assert!(!dbg.contains("s3cr3t-token"), "{dbg}");
        assert!(!dbg.contains("token=abc"), "{dbg}");
    }

    #[test]
    fn metadata_update_merges() {
        let mut sub = WebhookSubscription::new("https://example.com").unwrap();
        sub.metadata.insert("a".into(), 1.into());
        let mut m = Map::new();
        m.insert("b".into(), 2.into());
        SubscriptionUpdate::new().merge_metadata(m).apply(&mut sub);
        assert_eq!(sub.metadata.len(), 2);
    }

    #[test]
    fn owner_scoping() {
        let open = WebhookSubscription::new("https://e.com").unwrap();
        let owned = open.clone().owner("x");
        assert!(open.accepts_owner(None) && open.accepts_owner(Some("x")));
        assert!(owned.accepts_owner(Some("x")));
        assert!(!owned.accepts_owner(Some("y")) && !owned.accepts_owner(None));
    }
}
