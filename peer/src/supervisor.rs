//! Supervision of the runtime's long-lived services.
//!
//! Each service is an async function that runs until its cancellation token
//! fires. The supervisor runs it inside the runtime's `TaskTracker`, catches
//! errors and panics alike, and applies the service's [`SupervisionPolicy`].
//! The backoff arithmetic is the pure [`BackoffState`]; the supervisor only
//! owns the clock and the sleeping.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::events::{EventSink, PeerEvent, ServiceState};
use crate::health::HealthBoard;
use crate::tasks::RuntimeTasks;

/// What the supervisor does when a service fails (returns an error, panics,
/// or returns while it was not asked to stop).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SupervisionPolicy {
    /// The runtime cannot work without it: emit `RuntimeFailed` and cancel
    /// the runtime.
    Required,
    /// Restart it after an exponentially growing delay.
    Restart(Backoff),
    /// Record the failure and leave it stopped.
    BestEffort,
}

impl SupervisionPolicy {
    fn label(&self) -> &'static str {
        match self {
            SupervisionPolicy::Required => "required",
            SupervisionPolicy::Restart(_) => "restart",
            SupervisionPolicy::BestEffort => "bestEffort",
        }
    }
}

/// Exponential backoff parameters for [`SupervisionPolicy::Restart`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// Delay before the first restart.
    pub initial: Duration,
    /// The delay doubles per consecutive failure up to this cap.
    pub max: Duration,
    /// A run at least this long counts as healthy and resets the delay.
    pub healthy_after: Duration,
}

impl Backoff {
    /// Restart quickly at first (a LAN service that hiccups should be back
    /// before the user notices), never wait more than 30 s (a network coming
    /// back should be found soon), and call a minute of running healthy.
    pub const DEFAULT: Backoff = Backoff {
        initial: Duration::from_millis(250),
        max: Duration::from_secs(30),
        healthy_after: Duration::from_secs(60),
    };
}

impl Default for Backoff {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// Pure backoff bookkeeping: given how long the failed run lasted, how long to
/// wait before the next one.
#[derive(Debug, Clone)]
pub struct BackoffState {
    backoff: Backoff,
    failures_in_a_row: u32,
}

impl BackoffState {
    pub fn new(backoff: Backoff) -> Self {
        Self {
            backoff,
            failures_in_a_row: 0,
        }
    }

    /// A run that lasted `ran_for` failed: return the delay before the next.
    pub fn handle_failure(&mut self, ran_for: Duration) -> Duration {
        if ran_for >= self.backoff.healthy_after {
            self.failures_in_a_row = 0;
        }
        let factor = 1u32.checked_shl(self.failures_in_a_row).unwrap_or(u32::MAX);
        let delay = self
            .backoff
            .initial
            .checked_mul(factor)
            .unwrap_or(self.backoff.max)
            .min(self.backoff.max);
        self.failures_in_a_row = self.failures_in_a_row.saturating_add(1);
        delay
    }
}

/// Handed to each run of a service.
#[derive(Clone)]
pub struct ServiceContext {
    name: &'static str,
    token: CancellationToken,
    health: HealthBoard,
}

impl ServiceContext {
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// Fires when the service must stop. Select on it first (`biased;`).
    pub fn token(&self) -> &CancellationToken {
        &self.token
    }

    /// Record a sign of life, shown as the service's last heartbeat.
    pub fn heartbeat(&self) {
        self.health.heartbeat(self.name);
    }
}

/// Runs services under their policies; owned by the runtime.
#[derive(Clone)]
pub(crate) struct Supervisor {
    tasks: RuntimeTasks,
    /// Cancelled by a `Required` failure, and by shutdown.
    runtime_token: CancellationToken,
    health: HealthBoard,
    events: EventSink,
}

impl Supervisor {
    pub(crate) fn new(
        tasks: RuntimeTasks,
        runtime_token: CancellationToken,
        health: HealthBoard,
        events: EventSink,
    ) -> Self {
        Self {
            tasks,
            runtime_token,
            health,
            events,
        }
    }

    /// Run `service` under `policy` until the runtime is cancelled. Its task
    /// is named after it, so a shutdown it holds up names it.
    pub(crate) fn spawn_supervised_service<F, Fut>(
        &self,
        name: &'static str,
        policy: SupervisionPolicy,
        service: F,
    ) where
        F: Fn(ServiceContext) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = anyhow::Result<()>> + Send + 'static,
    {
        self.health.register(name, policy.label());
        let ctx = ServiceContext {
            name,
            token: self.runtime_token.child_token(),
            health: self.health.clone(),
        };
        let runtime_token = self.runtime_token.clone();
        let events = self.events.clone();
        self.tasks.spawn(name, async move {
            supervise(ctx, policy, service, runtime_token, events).await;
        });
    }

    /// Record that these tasks ignored cancellation past the shutdown
    /// deadline (they were aborted); services among them show it.
    pub(crate) fn report_stragglers(&self, stragglers: &[String]) {
        for name in stragglers {
            tracing::error!(task = %name, "did not stop within the shutdown deadline");
            self.health.update(name, |h| {
                h.state = ServiceState::Failed;
                h.last_error = Some("did not stop within the shutdown deadline".into());
            });
        }
    }
}

// Long on purpose: one loop holds the run, the catch and the three
// policies, so the bookkeeping of a run (start time, health) stays in one place.
async fn supervise<F, Fut>(
    ctx: ServiceContext,
    policy: SupervisionPolicy,
    service: F,
    runtime_token: CancellationToken,
    events: EventSink,
) where
    F: Fn(ServiceContext) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = anyhow::Result<()>> + Send + 'static,
{
    let service = Arc::new(service);
    let name = ctx.name;
    let health = ctx.health.clone();
    let token = ctx.token.clone();
    let mut backoff = match policy {
        SupervisionPolicy::Restart(b) => Some(BackoffState::new(b)),
        _ => None,
    };
    loop {
        if token.is_cancelled() {
            break;
        }
        health.update(name, |h| {
            h.state = ServiceState::Running;
            h.last_heartbeat_ms = Some(crate::health::unix_ms());
        });
        let started = Instant::now();
        let run = {
            let ctx = ctx.clone();
            let service = service.clone();
            // Calling `service` inside the async block makes a panic in the
            // call itself land in `catch_unwind` too.
            AssertUnwindSafe(async move { service(ctx).await }).catch_unwind()
        };
        let error = match run.await {
            Ok(Ok(())) if token.is_cancelled() => None,
            Ok(Ok(())) => Some("stopped unexpectedly".to_owned()),
            Ok(Err(e)) => Some(format!("{e:#}")),
            Err(panic) => Some(format!("panicked: {}", panic_message(&panic))),
        };
        let Some(error) = error else { break };
        if token.is_cancelled() {
            // Failing while being stopped is not a failure of the runtime.
            tracing::debug!(service = name, %error, "error during shutdown");
            break;
        }
        tracing::warn!(service = name, %error, "service failed");
        match (policy, backoff.as_mut()) {
            (SupervisionPolicy::Restart(_), Some(backoff)) => {
                let delay = backoff.handle_failure(started.elapsed());
                health.update(name, |h| {
                    h.state = ServiceState::BackingOff;
                    h.last_error = Some(error.clone());
                    h.restarts += 1;
                });
                tokio::select! {
                    biased;
                    _ = token.cancelled() => break,
                    _ = tokio::time::sleep(delay) => {}
                }
            }
            (SupervisionPolicy::Required, _) => {
                health.update(name, |h| {
                    h.state = ServiceState::Failed;
                    h.last_error = Some(error.clone());
                });
                events.emit(PeerEvent::RuntimeFailed {
                    component: name.to_owned(),
                    error,
                });
                runtime_token.cancel();
                return;
            }
            _ => {
                health.update(name, |h| {
                    h.state = ServiceState::Failed;
                    h.last_error = Some(error.clone());
                });
                return;
            }
        }
    }
    health.update(name, |h| h.state = ServiceState::Stopped);
}

fn panic_message(panic: &Box<dyn std::any::Any + Send>) -> String {
    if let Some(s) = panic.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s.clone()
    } else {
        "unknown panic payload".to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(backoff: Backoff, runs_ms: &[u64], expected_delays_ms: &[u64]) {
        let mut state = BackoffState::new(backoff);
        let delays: Vec<u64> = runs_ms
            .iter()
            .map(|&ran| state.handle_failure(Duration::from_millis(ran)).as_millis() as u64)
            .collect();
        assert_eq!(delays, expected_delays_ms);
    }

    const B: Backoff = Backoff {
        initial: Duration::from_millis(100),
        max: Duration::from_millis(1000),
        healthy_after: Duration::from_millis(5000),
    };

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        check(B, &[0, 0, 0, 0, 0, 0], &[100, 200, 400, 800, 1000, 1000]);
    }

    #[test]
    fn backoff_resets_after_a_healthy_run() {
        check(B, &[0, 0, 0, 5000, 0], &[100, 200, 400, 100, 200]);
        check(B, &[0, 0, 4999], &[100, 200, 400]);
    }

    #[test]
    fn backoff_never_overflows() {
        let mut state = BackoffState::new(Backoff {
            initial: Duration::from_secs(u64::MAX / 2),
            max: Duration::from_secs(u64::MAX),
            healthy_after: Duration::MAX,
        });
        for _ in 0..100 {
            assert!(state.handle_failure(Duration::ZERO) <= Duration::from_secs(u64::MAX));
        }
    }
}
