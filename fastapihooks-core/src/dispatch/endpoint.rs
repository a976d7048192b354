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

use super::{Job, Shared};
use crate::backend::{Deferral, RetrySchedule, Scheduled, TargetRef};
use crate::dead_letter::DeliveryError;
use crate::retry::Decision;
use crate::send::{Attempt, AttemptError, Timer};
use crate::stats::Stats;

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
            Some(Attempt::Delivered { status }) => {
                tracing::debug!(status, latency_ms = timer.millis(), "delivered");
                Stats::inc(&shared.stats.delivered);
                job.done.clone().finish(&shared, true);
            }
            Some(Attempt::Failed { error, retry_after }) => {
                match shared.retry.decide(job.attempts, &error, retry_after) {
                    Decision::Final => {
                        // Reported once, through on_failure (which logs it when no handler is set).
                        tracing::debug!(latency_ms = timer.millis(), error = %error, "delivery failed for good");
                        job.fail(&shared, error.into());
                    }
                    Decision::RetryAfter(delay) => {
                        tracing::debug!(latency_ms = timer.millis(), error = %error, retry_in_ms = delay.as_millis() as u64, "delivery failed; will retry");
                        Stats::inc(&shared.stats.retried);
                        match (shared.schedule.clone(), job.target.reference()) {
                            (Some(schedule), Some(target)) => defer(&shared, job, schedule, target, delay, Some(error)),
                            _ => schedule_retry(&shared, job, delay, error),
                        }
                    }
                }
            }
        }
    }
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
            () = tokio::time::sleep(delay) => enqueue(&shared2, job, true),
        }
    });
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
