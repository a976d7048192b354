//! [`DeliveryRuntime`]: where the delivery engine's tasks run.

use std::fmt;

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

    /// Starts the dedicated runtime, if there is one. Its threads log to the
    /// `tracing` subscriber that is the default where this is called, as
    /// the app's own tasks would (a scoped subscriber included).
    pub(crate) fn start(&self) -> std::io::Result<Option<OwnedRuntime>> {
        let Some(Dedicated { threads, nice }) = self.dedicated else { return Ok(None) };
        let dispatch = tracing::dispatcher::get_default(Clone::clone);
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .thread_name("fastapihooks-delivery")
            .enable_all()
            .on_thread_start(move || {
                let guard = tracing::dispatcher::set_default(&dispatch);
                THREAD_DISPATCH.with(|slot| *slot.borrow_mut() = Some(guard));
                if nice > 0 {
                    lower_priority(nice);
                }
            })
            .on_thread_stop(|| drop(THREAD_DISPATCH.with(|slot| slot.borrow_mut().take())))
            .build()?;
        Ok(Some(OwnedRuntime(Some(rt))))
    }
}

thread_local! {
    /// A delivery thread's default `tracing` subscriber, for as long as the thread runs.
    static THREAD_DISPATCH: std::cell::RefCell<Option<tracing::dispatcher::DefaultGuard>> =
        const { std::cell::RefCell::new(None) };
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

/// A runtime that may be dropped anywhere, async contexts included (a
/// plain `Runtime` panics there): it shuts down in the background.
pub(crate) struct OwnedRuntime(Option<tokio::runtime::Runtime>);

impl OwnedRuntime {
    pub(crate) fn handle(&self) -> Option<&tokio::runtime::Handle> {
        self.0.as_ref().map(tokio::runtime::Runtime::handle)
    }
}

impl Drop for OwnedRuntime {
    fn drop(&mut self) {
        if let Some(rt) = self.0.take() {
            rt.shutdown_background();
        }
    }
}

impl fmt::Debug for OwnedRuntime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("OwnedRuntime")
    }
}
