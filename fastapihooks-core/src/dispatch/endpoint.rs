//! Per-endpoint queues: one slow or dead endpoint holds only its own
//! workers, never the deliveries to the others.
//!
//! Each endpoint (scheme, host, port) has a queue of first attempts and a
//! queue of due retries, served alternately so neither starves the other,
//! by at most `per_endpoint_concurrency` workers. A worker takes a global
//! permit only for the request itself, so a dead endpoint holds at most its
//! own share of the global limit. Retries wait in a timer, holding no
//! permit, and re-enter their endpoint's retry queue when due.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use tokio_util::sync::CancellationToken;

use super::{Job, Shared, Target};
use crate::backend::{Deferral, RetrySchedule, Scheduled, TargetRef};
use crate::dead_letter::DeliveryError;
use crate::event::Event;
use crate::health::{Disabled, Seen, Verdict};
use crate::history::{AttemptOutcome, AttemptRecord, ResponseDetails};
use crate::operational::{OperationalEvent, OperationalKind};
use crate::retry::Decision;
use crate::send::{Attempt, AttemptError, Response, Timer};
use crate::stats::Stats;
use crate::subscription::{StoredWebhookSubscription, redact_url};

#[derive(Default)]
struct Queue {
    fresh: VecDeque<Job>,
    retries: VecDeque<Job>,
    workers: usize,
    retry_next: bool,
    /// The delivery runtime shard its workers run on.
    shard: usize,
}

impl Queue {
    fn len(&self) -> usize {
        self.fresh.len() + self.retries.len()
    }

    fn pop(&mut self) -> Option<Job> {
        let job = if self.retry_next {
            self.retries.pop_front().or_else(|| self.fresh.pop_front())
        } else {
            self.fresh.pop_front().or_else(|| self.retries.pop_front())
        };
        self.retry_next = !self.retry_next;
        job
    }
}

/// Queues by endpoint key, looked up for every delivery: foldhash, not SipHash.
type EndpointMap = HashMap<Arc<str>, Queue, foldhash::fast::RandomState>;

/// The endpoints with queued or in-flight deliveries.
#[derive(Default)]
pub(super) struct Endpoints {
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    queues: EndpointMap,
    /// The delivery runtime shard of each endpoint seen (bounded).
    homes: HashMap<Arc<str>, usize, foldhash::fast::RandomState>,
    /// The shard the next new endpoint goes to.
    next_home: usize,
}

impl Endpoints {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl State {
    /// Past this many endpoints, their shards are assigned afresh.
    const MAX_HOMES: usize = 4096;

    /// The queue of `key`. Endpoints get shards in turn, the first time
    /// they are seen, and keep them: an endpoint's workers, pooled
    /// connections and retry timers stay on one thread, and endpoints
    /// spread evenly over the threads. The first goes to the first shard,
    /// with the pipeline and the consumer: one subscriber's deliveries
    /// then wake no other thread.
    fn queue(&mut self, key: &Arc<str>, shards: usize) -> &mut Queue {
        let Self { queues, homes, next_home } = self;
        queues.entry(key.clone()).or_insert_with(|| {
            if homes.len() >= Self::MAX_HOMES && !homes.contains_key(key) {
                homes.clear();
            }
            let shard = *homes.entry(key.clone()).or_insert_with(|| {
                let shard = *next_home % shards.max(1);
                *next_home = next_home.wrapping_add(1);
                shard
            });
            Queue { shard, ..Queue::default() }
        })
    }
}

/// The endpoint a URL's deliveries share limits on: `scheme://host[:port]`
/// (the URL's serialization before the path; a default port is omitted, so
/// `https://a` and `https://a:443` are one endpoint).
fn endpoint_key(url: &url::Url) -> &str {
    &url[..url::Position::BeforePath]
}

/// Queues a job for its endpoint and starts a worker if the endpoint has
/// room for one. A first attempt is dead-lettered at once when the endpoint's
/// backlog is full; a retry always gets in (it already counted).
pub(super) fn enqueue(shared: &Arc<Shared>, job: Job, retry: bool) {
    let mut state = shared.endpoints.lock();
    let key = endpoint_key(&job.url);
    // Allocate the key only for an endpoint not seen yet (an idle one keeps
    // its key in `homes`).
    let known =
        state.queues.get_key_value(key).map(|(k, _)| k).or_else(|| state.homes.get_key_value(key).map(|(k, _)| k));
    let key: Arc<str> = match known {
        Some(k) => k.clone(),
        None => Arc::from(key),
    };
    let queue = state.queue(&key, shared.shards.len());
    if !retry && queue.len() >= shared.limits.max_endpoint_backlog {
        let pending = queue.len();
        drop(state);
        // With a durable schedule the overflow waits there, not in memory:
        // the endpoint's backlog is this worker's limit, not the event's.
        if let Some(schedule) = shared.schedule.clone()
            && let Some(target) = job.target.reference()
        {
            defer(shared, job, schedule, target, BACKLOG_DEFER, None);
            return;
        }
        job.fail(shared, DeliveryError::EndpointBacklogFull { pending });
        return;
    }
    if retry {
        queue.retries.push_back(job)
    } else {
        queue.fresh.push_back(job)
    }
    if queue.workers < shared.limits.per_endpoint_concurrency.max(1) {
        queue.workers += 1;
        let shard = queue.shard;
        drop(state);
        match shared.shards.get(shard) {
            Some(shard) => {
                let work = worker(shared.clone(), key, shard.cancel.clone());
                drop(shared.tasks.spawn_on(work, &shard.handle));
            }
            None => drop(shared.tasks.spawn(worker(shared.clone(), key, shared.cancel.clone()))),
        }
    }
}

/// Takes the endpoint's next job, or retires this worker (and forgets the
/// endpoint when it was the last one and nothing is queued).
fn next_job(shared: &Shared, key: &Arc<str>) -> Option<Job> {
    let mut state = shared.endpoints.lock();
    let queue = state.queues.get_mut(key)?;
    if let Some(job) = queue.pop() {
        return Some(job);
    }
    queue.workers -= 1;
    if queue.workers == 0 {
        state.queues.remove(key);
    }
    None
}

/// Delivers the endpoint's jobs, one at a time, until its queue is empty.
/// `cancel` is [`Shared::cancel`] or its child for this worker's thread.
async fn worker(shared: Arc<Shared>, key: Arc<str>, cancel: CancellationToken) {
    // Made once: polling it registers this task with the token.
    let cancelled = cancel.cancelled();
    tokio::pin!(cancelled);
    // A permit kept from the previous request, when nobody was waiting for
    // one: a worker going through a backlog then takes one for the backlog,
    // not one per request.
    let mut kept = None;
    while let Some(mut job) = next_job(&shared, &key) {
        if cancel.is_cancelled() {
            job.fail(&shared, DeliveryError::Shutdown { last: None });
            continue;
        }
        // Disabled since it was queued (its endpoint died meanwhile, or an
        // operator disabled it): given up with the reason.
        if let Target::Stored(stored) = &job.target
            && let Some(reason) = shared.disabled(stored, Some(job.copied))
        {
            Stats::inc(&shared.stats.skipped_disabled);
            job.fail(&shared, DeliveryError::SubscriptionDisabled { reason });
            continue;
        }
        let permit = match kept.take().or_else(|| shared.global.try_acquire().ok()) {
            Some(permit) => permit,
            None => tokio::select! {
                biased;
                () = &mut cancelled => {
                    job.fail(&shared, DeliveryError::Shutdown { last: None });
                    continue;
                }
                p = shared.global.acquire() => p.expect("never closed"),
            },
        };
        job.attempts += 1;
        let span = tracing::debug_span!(
            "delivery",
            event_id = %job.event.id,
            event = %job.event.name,
            subscription_id = job.target.id().unwrap_or(""),
            attempt = job.attempts,
        );
        let started_at = chrono::Utc::now();
        let timer = Timer::start();
        let send = tracing::Instrument::instrument(
            shared.sender.send(&job.event, job.target.subscription(), &job.url),
            span.clone(),
        );
        // The request first: once it is done, the token need not be polled.
        let attempt = tokio::select! {
            biased;
            a = send => Some(a),
            () = &mut cancelled => None,
        };
        // Others waiting for a permit get this one; else it serves the next job.
        if shared.global.available_permits() > 0 {
            kept = Some(permit);
        } else {
            drop(permit);
        }
        let _enter = span.enter();
        match attempt {
            None => job.fail(&shared, DeliveryError::Shutdown { last: Some("cancelled in flight".into()) }),
            Some(attempt) => conclude(&shared, job, attempt, started_at, timer.millis()),
        }
    }
}

/// What becomes of a delivery after one attempt: delivered, retried, or
/// given up; its record written, its subscription's health told.
fn conclude(shared: &Arc<Shared>, job: Job, attempt: Attempt, started_at: chrono::DateTime<chrono::Utc>, millis: u64) {
    let disable_asked = attempt.asks_to_disable();
    let Attempt { result, retry_after, response } = attempt;
    let mut decision = match &result {
        Ok(_) => None,
        Err(error) => Some(shared.retry.decide(job.attempts, error, retry_after)),
    };
    let given_up = matches!(decision, Some(Decision::Final));
    let verdict = match &job.target {
        Target::Stored(stored) => {
            let seen = match (&result, disable_asked) {
                (_, true) => Seen::Disable(if response.as_ref().is_some_and(|r| r.status == 410) {
                    "410 Gone"
                } else {
                    "webhook-delivery: disable"
                }),
                (Ok(_), false) => Seen::Success,
                (Err(_), false) => Seen::Failure { given_up },
            };
            Some(shared.health.observe(&stored.id, &stored.health, seen, started_at))
        }
        _ => None,
    };
    // A subscription disabled by this outcome is not retried.
    let disabled = verdict.as_ref().and_then(|v| v.disable.clone());
    if disabled.is_some() && matches!(decision, Some(Decision::RetryAfter(_))) {
        decision = Some(Decision::Final);
    }
    if let Some(recorder) = &shared.recorder {
        let outcome = match decision {
            None => AttemptOutcome::Delivered,
            Some(Decision::RetryAfter(_)) => AttemptOutcome::Retrying,
            Some(Decision::Final) => AttemptOutcome::GivenUp,
        };
        recorder.record(attempt_record(&job, &result, response.as_ref(), outcome, started_at, millis));
    }
    if let (Some(verdict), Target::Stored(stored)) = (verdict, &job.target) {
        act_on(shared, stored, verdict, &job.event, result.as_ref().err());
    }
    match (result, decision) {
        (Ok(status), _) => {
            tracing::debug!(status, latency_ms = millis, "delivered");
            Stats::inc(&shared.stats.delivered);
            job.done.clone().finish(shared, true);
        }
        (Err(error), Some(Decision::RetryAfter(delay))) => {
            tracing::debug!(latency_ms = millis, error = %error, retry_in_ms = delay.as_millis() as u64, "delivery failed; will retry");
            Stats::inc(&shared.stats.retried);
            match (shared.schedule.clone(), job.target.reference()) {
                (Some(schedule), Some(target)) => defer(shared, job, schedule, target, delay, Some(error)),
                _ => schedule_retry(shared, job, delay, error),
            }
        }
        (Err(error), _) => {
            // Reported once, through on_failure (which logs it when no handler is set).
            tracing::debug!(latency_ms = millis, error = %error, "delivery failed for good");
            if shared.is_told() {
                let mut exhausted = OperationalEvent::new(OperationalKind::AttemptExhausted);
                exhausted.subscription_id = job.target.id().map(str::to_owned);
                exhausted.owner_id = job.target.subscription().owner_id.clone();
                exhausted.target_url = Some(redact_url(&job.target.subscription().target_url).to_owned());
                exhausted.event_id = Some(job.event.id.as_str().to_owned());
                exhausted.event_name = Some(job.event.name.clone());
                exhausted.attempts = Some(job.attempts);
                exhausted.reason = Some(error.to_string());
                super::tell(shared, exhausted);
            }
            // A retry cut short by disabling says why; an error that was
            // final anyway (410 Gone) is the reason itself.
            let error = match disabled {
                Some(reason) if error.is_transient() => DeliveryError::SubscriptionDisabled { reason },
                _ => error.into(),
            };
            job.fail(shared, error);
        }
    }
}

/// The attempt log's record of one attempt.
fn attempt_record(
    job: &Job,
    result: &Result<u16, AttemptError>,
    response: Option<&Response>,
    outcome: AttemptOutcome,
    started_at: chrono::DateTime<chrono::Utc>,
    millis: u64,
) -> AttemptRecord {
    let (status, error_kind, error) = match result {
        Ok(status) => (Some(*status), None, None),
        Err(e) => (response.map(|r| r.status), Some(e.kind().to_owned()), Some(e.to_string())),
    };
    let response = response.map_or_else(ResponseDetails::default, |r| {
        ResponseDetails::from_raw(r.retry_after.as_deref(), r.content_type.as_deref(), &r.body, r.body_truncated)
    });
    AttemptRecord {
        id: String::new(),
        event_id: job.event.id.as_str().to_owned(),
        event_name: job.event.name.clone(),
        subscription_id: job.target.id().map(str::to_owned),
        owner_id: job.event.owner_id.clone(),
        target_url: redact_url(&job.target.subscription().target_url).to_owned(),
        attempt: job.attempts,
        started_at,
        duration_ms: millis,
        outcome,
        status,
        error_kind,
        error,
        response,
    }
}

/// Writes what the health tracker asks to the store, and tells the operator.
fn act_on(
    shared: &Arc<Shared>,
    stored: &Arc<StoredWebhookSubscription>,
    verdict: Verdict,
    event: &Event,
    error: Option<&AttemptError>,
) {
    let Verdict { persist, disable, failing, recovered } = verdict;
    let about = |kind| {
        let mut op = OperationalEvent::new(kind);
        op.subscription_id = Some(stored.id.clone());
        op.owner_id = stored.owner_id.clone();
        op.target_url = Some(redact_url(&stored.target_url).to_owned());
        op.event_id = Some(event.id.as_str().to_owned());
        op.event_name = Some(event.name.clone());
        op.reason = error.map(ToString::to_string);
        op.health = persist.clone();
        op
    };
    if failing && shared.is_told() {
        super::tell(shared, about(OperationalKind::EndpointFailing));
    }
    if recovered && shared.is_told() {
        super::tell(shared, about(OperationalKind::EndpointRecovered));
    }
    let Some(store) = shared.store.clone() else { return };
    if persist.is_none() && disable.is_none() {
        return;
    }
    let disabled_event = disable.as_ref().map(|reason| {
        let mut op = about(OperationalKind::EndpointDisabled);
        op.reason = Some(reason.clone());
        op
    });
    let (shared2, id) = (shared.clone(), stored.id.clone());
    drop(shared.tasks.spawn(async move {
        if let Some(health) = persist
            && let Err(e) = store.record_health(&id, &health).await
        {
            tracing::warn!(subscription_id = %id, error = %e, "could not write a subscription's health");
        }
        if let (Some(reason), Some(op)) = (disable, disabled_event) {
            match store.set_disabled(&id, Some(Disabled::now(reason.clone()))).await {
                Ok(_) => {
                    Stats::inc(&shared2.stats.disabled);
                    tracing::warn!(subscription_id = %id, reason = %reason, "subscription disabled");
                    super::tell(&shared2, op);
                }
                Err(e) => {
                    tracing::error!(subscription_id = %id, error = %e, "could not disable a subscription in the store; it is skipped here for now");
                }
            }
        }
    }));
}

/// How long a delivery that found its endpoint's backlog full waits in the
/// durable schedule before it tries to get in again.
const BACKLOG_DEFER: Duration = Duration::from_secs(5);

/// Sets a delivery aside in the durable schedule, due after `delay`; once
/// written, the job is done here (its event may be acked: the schedule has
/// it). When the schedule cannot take it, it waits in memory instead.
fn defer(
    shared: &Arc<Shared>,
    job: Job,
    schedule: Arc<dyn RetrySchedule>,
    target: TargetRef,
    delay: Duration,
    error: Option<AttemptError>,
) {
    let shared2 = shared.clone();
    shared.tasks.spawn(async move {
        let deferral = Deferral {
            event: job.event.clone(),
            delivery: Scheduled::new(target, job.attempts),
            due: SystemTime::now() + delay,
        };
        let write = async {
            let _slot = shared2.defers.acquire().await.expect("never closed");
            schedule.defer(deferral).await
        };
        let written = tokio::select! {
            biased;
            () = shared2.cancel.cancelled() => None,
            written = write => Some(written),
        };
        match written {
            Some(Ok(())) => {
                Stats::inc(&shared2.stats.deferred);
                job.done.clone().finish(&shared2, true);
            }
            Some(Err(e)) => {
                tracing::warn!(event_id = %job.event.id, error = %e, "could not write a retry to the durable schedule; it waits in memory");
                match error {
                    Some(error) => schedule_retry(&shared2, job, delay, error),
                    None => enqueue(&shared2, job, true),
                }
            }
            None => {
                let last = error.map(|e| e.to_string());
                job.fail(&shared2, DeliveryError::Shutdown { last });
            }
        }
    });
}

fn schedule_retry(shared: &Arc<Shared>, job: Job, delay: Duration, error: AttemptError) {
    let shared2 = shared.clone();
    shared.tasks.spawn(async move {
        tokio::select! {
            biased;
            () = shared2.cancel.cancelled() => job.fail(&shared2, DeliveryError::Shutdown { last: Some(error.to_string()) }),
            () = tokio::time::sleep(delay) => if let Some(job) = refresh(&shared2, job).await {
                enqueue(&shared2, job, true);
            },
        }
    });
}

/// A retry of a store's subscription, with the subscription read again as
/// a durable retry's is: one removed meanwhile is not retried, one disabled
/// is given up with the reason, a new URL or secret is used. `None` when
/// the job ended here. A store that cannot answer leaves the copy it had.
async fn refresh(shared: &Arc<Shared>, mut job: Job) -> Option<Job> {
    let (Target::Stored(stored), Some(store)) = (&job.target, &shared.store) else { return Some(job) };
    let fresh = match store.get(&stored.id).await {
        Ok(Some(fresh)) => fresh,
        Ok(None) => {
            tracing::warn!(event_id = %job.event.id, event = %job.event.name, "the subscription of a retry is gone; it is dropped");
            job.done.clone().finish(shared, true);
            return None;
        }
        Err(e) => {
            tracing::debug!(error = %e, "store look-up failed for a retry; it goes with the copy it has");
            return Some(job);
        }
    };
    if let Some(disabled) = &fresh.disabled {
        Stats::inc(&shared.stats.skipped_disabled);
        let reason = disabled.reason.clone();
        job.fail(shared, DeliveryError::SubscriptionDisabled { reason });
        return None;
    }
    if fresh.target_url != stored.target_url {
        match shared.urls.parse(&fresh.target_url) {
            Ok(url) => job.url = url,
            Err(e) => {
                job.fail(shared, DeliveryError::InvalidTarget(e));
                return None;
            }
        }
    }
    job.target = Target::Stored(Arc::new(fresh));
    job.copied = std::time::Instant::now();
    Some(job)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoint_keys_are_scheme_host_and_port() {
        let key = |s: &str| endpoint_key(&url::Url::parse(s).unwrap()).to_owned();
        assert_eq!(key("https://a.example/x?y"), "https://a.example");
        assert_eq!(key("https://a.example:443/z"), "https://a.example");
        assert_eq!(key("http://127.0.0.1:8080/h"), "http://127.0.0.1:8080");
        assert_ne!(key("http://127.0.0.1:8080/"), key("http://127.0.0.1:8081/"));
        assert_ne!(key("http://a.example/"), key("https://a.example/"));
    }
}
