//! [`DeliveryRuntime`]: where the delivery engine's tasks run.

use std::fmt;

/// Where deliveries run: on the app's Tokio runtime (the default), or on
/// threads of their own at a lower OS priority, so that delivery, which is
/// background work, yields the CPU to request handling when both want it.
///
/// ```
/// # use fastapihooks_core::DeliveryRuntime;
/// // Two delivery threads at niceness 10 (Linux; elsewhere the priority is unchanged).
/// let rt = DeliveryRuntime::dedicated(2).nice(10);
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DeliveryRuntime {
    dedicated: Option<Dedicated>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Dedicated {
    threads: usize,
    nice: i32,
}

impl DeliveryRuntime {
    /// On the runtime `build` is called in (the default).
    pub fn shared() -> Self {
        Self::default()
    }

    /// On `threads` (at least 1) threads of their own, at niceness 10.
    pub fn dedicated(threads: usize) -> Self {
        Self { dedicated: Some(Dedicated { threads: threads.max(1), nice: 10 }) }
    }

    /// Sets the niceness of dedicated threads, clamped to `0..=19` (0: the
    /// app's own priority; higher yields more). No effect on a shared runtime.
    #[must_use]
    pub fn nice(mut self, nice: i32) -> Self {
        if let Some(d) = &mut self.dedicated {
            d.nice = nice.clamp(0, 19);
        }
        self
    }

    /// Starts the dedicated runtime, if there is one.
    pub(crate) fn start(&self) -> std::io::Result<Option<OwnedRuntime>> {
        let Some(Dedicated { threads, nice }) = self.dedicated else { return Ok(None) };
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .thread_name("fastapihooks-delivery")
            .enable_all()
            .on_thread_start(move || lower_priority(nice))
            .build()?;
        Ok(Some(OwnedRuntime(Some(rt))))
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
