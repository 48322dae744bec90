//! Per-service health, as the UI and the CLI show it.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::events::{EventSink, HealthSnapshot, PeerEvent, ServiceHealth, ServiceState};

/// The shared health table. Cloning is cheap; all clones see one table.
#[derive(Clone)]
pub(crate) struct HealthBoard {
    // A std Mutex: every critical section is a few field writes, never an await.
    services: Arc<Mutex<BTreeMap<String, ServiceHealth>>>,
    events: EventSink,
}

impl HealthBoard {
    pub(crate) fn new(events: EventSink) -> Self {
        Self {
            services: Arc::default(),
            events,
        }
    }

    pub(crate) fn register(&self, service: &str, policy: &str) {
        let health = ServiceHealth {
            service: service.to_owned(),
            policy: policy.to_owned(),
            state: ServiceState::Starting,
            restarts: 0,
            last_error: None,
            last_heartbeat_ms: None,
        };
        self.lock().insert(service.to_owned(), health.clone());
        self.events.emit(PeerEvent::HealthChanged { health });
    }

    /// Apply `change` to the service's entry and broadcast the result.
    pub(crate) fn update(&self, service: &str, change: impl FnOnce(&mut ServiceHealth)) {
        let health = {
            let mut services = self.lock();
            let Some(entry) = services.get_mut(service) else {
                return;
            };
            change(entry);
            entry.clone()
        };
        self.events.emit(PeerEvent::HealthChanged { health });
    }

    /// Record a sign of life without broadcasting (heartbeats are frequent).
    pub(crate) fn heartbeat(&self, service: &str) {
        if let Some(entry) = self.lock().get_mut(service) {
            entry.last_heartbeat_ms = Some(unix_ms());
        }
    }

    pub(crate) fn snapshot(&self) -> HealthSnapshot {
        self.lock().values().cloned().collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, ServiceHealth>> {
        // A panic while holding this lock cannot leave the map inconsistent
        // (each write is a whole field), so a poisoned lock is still usable.
        self.services.lock().unwrap_or_else(|e| e.into_inner())
    }
}

pub(crate) fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
