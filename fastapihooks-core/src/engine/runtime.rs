//! [`DeliveryRuntime`]: where the delivery engine's tasks run.

use std::fmt;

use tokio_util::sync::CancellationToken;

/// Where the delivery engine runs: the pipeline (transforms included), the
/// fan-out, the endpoint workers, their retry timers and connections.
///
/// **By default, on threads of its own**, one per CPU the process may use
/// (as many as Tokio gives the app by default), at the app's priority. The
/// operating system then schedules delivery and request handling
/// preemptively, side by side: a request never waits behind delivery tasks
/// in a worker's queue, and when deliveries fall behind they get a fair
/// share of the CPU to catch up. Idle delivery threads cost no CPU.
///
/// Each thread runs a single-threaded Tokio runtime, and each endpoint
/// (scheme, host, port) delivers from one of them, given in turn the first
/// time the endpoint is seen: its connections and retry timers stay on
/// that thread, and its deliveries wake no other thread. Many endpoints
/// spread over all the threads; one endpoint gets at most one thread's
/// worth of CPU.
///
/// ```
/// # use fastapihooks_core::DeliveryRuntime;
/// // The default: a thread per CPU, at the app's priority.
/// let rt = DeliveryRuntime::default();
/// // Two threads at niceness 10 (Linux): requests first, even when
/// // deliveries fall behind on a saturated machine.
/// let rt = DeliveryRuntime::dedicated(2).nice(10);
/// // On the app's own Tokio runtime: no threads of its own.
/// let rt = DeliveryRuntime::shared();
/// ```
///
/// What each choice costs and gives, measured, is in the guide's
/// benchmarks page (`docs/benchmarks.md`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeliveryRuntime {
    dedicated: Option<Dedicated>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Dedicated {
    threads: usize,
    nice: i32,
}

impl Default for DeliveryRuntime {
    /// [`DeliveryRuntime::dedicated`] with a thread per CPU the process may
    /// use ([`std::thread::available_parallelism`]).
    fn default() -> Self {
        Self::dedicated(std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get))
    }
}

impl DeliveryRuntime {
    /// On the Tokio runtime `build` is called in: delivery tasks share the
    /// app's worker threads with request handling.
    pub fn shared() -> Self {
        Self { dedicated: None }
    }

    /// On `threads` (at least 1) threads of its own, at the app's priority.
    pub fn dedicated(threads: usize) -> Self {
        Self { dedicated: Some(Dedicated { threads: threads.max(1), nice: 0 }) }
    }

    /// Lowers the dedicated threads' priority to niceness `nice`, clamped to
    /// `0..=19` (0, the default: the app's own priority; higher yields more
    /// to request handling, and starves delivery on a saturated machine).
    /// Linux only; elsewhere the priority is unchanged. No effect on a
    /// shared runtime.
    #[must_use]
    pub fn nice(mut self, nice: i32) -> Self {
        if let Some(d) = &mut self.dedicated {
            d.nice = nice.clamp(0, 19);
        }
        self
    }

    /// Starts the dedicated threads, if any: one single-threaded Tokio
    /// runtime on each (see [`OwnedRuntime`]). They log to the `tracing`
    /// subscriber that is the default where this is called, as the app's
    /// own tasks would (a scoped subscriber included).
    pub(crate) fn start(&self) -> std::io::Result<Option<OwnedRuntime>> {
        let Some(Dedicated { threads, nice }) = self.dedicated else { return Ok(None) };
        let dispatch = tracing::dispatcher::get_default(Clone::clone);
        // Dropped (every thread told to stop) if a later thread fails to start.
        let mut owned = OwnedRuntime { shards: Vec::with_capacity(threads), stop: CancellationToken::new() };
        for _ in 0..threads {
            // Each runtime is built, run and dropped on its own thread (a
            // runtime must not be dropped in an async context, where `build`
            // runs); the thread hands its handle back.
            let (tx, rx) = std::sync::mpsc::sync_channel(1);
            let (stop, dispatch) = (owned.stop.clone(), dispatch.clone());
            std::thread::Builder::new().name("fastapihooks-delivery".into()).spawn(move || {
                let _log = tracing::dispatcher::set_default(&dispatch);
                let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                    Ok(rt) => rt,
                    Err(e) => return drop(tx.send(Err(e))),
                };
                if tx.send(Ok(rt.handle().clone())).is_err() {
                    return;
                }
                if nice > 0 {
                    lower_priority(nice);
                }
                // Runs this shard's tasks until told to stop; the runtime is
                // then dropped here, with what is left of them.
                rt.block_on(stop.cancelled());
            })?;
            let shard = rx.recv().map_err(|_| std::io::Error::other("a delivery thread exited at start"))??;
            owned.shards.push(shard);
        }
        Ok(Some(owned))
    }
}

#[cfg(target_os = "linux")]
fn lower_priority(nice: i32) {
    // On Linux, niceness is per thread: this lowers only the calling one.
    if let Err(e) = rustix::process::setpriority_process(Some(rustix::thread::gettid()), nice) {
        tracing::warn!(error = %e, nice, "could not lower the delivery thread's priority");
    }
}

#[cfg(not(target_os = "linux"))]
fn lower_priority(_nice: i32) {}

/// The dedicated delivery threads: each runs a single-threaded Tokio
/// runtime (a shard). The pipeline and the consumer run on the first; each
/// endpoint's workers, and so its connections and retry timers, on the
/// shard it was given (in turn, when first seen). A shard's tasks wake each other without waking
/// another thread, which a work-stealing runtime does several times per
/// delivery at moderate rates; endpoints spread the load over the shards.
///
/// May be dropped anywhere, async contexts included: the threads stop in
/// the background.
pub(crate) struct OwnedRuntime {
    shards: Vec<tokio::runtime::Handle>,
    stop: CancellationToken,
}

impl OwnedRuntime {
    /// The first shard: the pipeline's and the consumer's.
    pub(crate) fn handle(&self) -> Option<&tokio::runtime::Handle> {
        self.shards.first()
    }

    /// Every shard.
    pub(crate) fn shards(&self) -> &[tokio::runtime::Handle] {
        &self.shards
    }
}

impl Drop for OwnedRuntime {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl fmt::Debug for OwnedRuntime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OwnedRuntime").field("shards", &self.shards.len()).finish()
    }
}
