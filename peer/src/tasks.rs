//! Every task of a runtime: one `TaskTracker` to wait for them at shutdown,
//! and the names of those still running, so a shutdown that misses its
//! deadline reports each straggler by name (a service, a download, a
//! connection, a blocking disk job), not only the services.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::task::{AbortHandle, JoinHandle};
use tokio_util::task::TaskTracker;

/// A task still running: its name, and how to abort it (blocking work cannot
/// be aborted; it is only reported).
struct Running {
    name: String,
    abort: Option<AbortHandle>,
}

/// The runtime's tasks. Cloning is cheap; all clones share one tracker.
#[derive(Clone, Default)]
pub struct RuntimeTasks {
    tracker: TaskTracker,
    // A std Mutex: one insert or remove per task start and end, never an await.
    running: Arc<Mutex<BTreeMap<u64, Running>>>,
    next_id: Arc<AtomicU64>,
}

/// Removes a task from the running set when its future or closure is
/// dropped: on completion, abort and panic alike.
struct Registration {
    running: Arc<Mutex<BTreeMap<u64, Running>>>,
    id: u64,
}

impl Drop for Registration {
    fn drop(&mut self) {
        lock(&self.running).remove(&self.id);
    }
}

fn lock(
    running: &Mutex<BTreeMap<u64, Running>>,
) -> std::sync::MutexGuard<'_, BTreeMap<u64, Running>> {
    // Each critical section is one map edit: a poisoned map is still whole.
    running.lock().unwrap_or_else(|e| e.into_inner())
}

impl RuntimeTasks {
    pub fn new() -> Self {
        Self::default()
    }

    fn register(&self, name: String) -> Registration {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        lock(&self.running).insert(id, Running { name, abort: None });
        Registration {
            running: self.running.clone(),
            id,
        }
    }

    /// Spawn `future` on the tracker under `name`.
    pub fn spawn<F>(&self, name: impl Into<String>, future: F) -> JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        let registration = self.register(name.into());
        let id = registration.id;
        let handle = self.tracker.spawn(async move {
            let _registration = registration;
            future.await
        });
        // Unless it already finished (and removed itself).
        if let Some(running) = lock(&self.running).get_mut(&id) {
            running.abort = Some(handle.abort_handle());
        }
        handle
    }

    /// Run `work` on the blocking pool, tracked, under `name`.
    pub fn spawn_blocking<F, T>(&self, name: impl Into<String>, work: F) -> JoinHandle<T>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        let registration = self.register(name.into());
        self.tracker.spawn_blocking(move || {
            let _registration = registration;
            work()
        })
    }

    /// Refuse no task, but let [`Self::wait`] finish once all have ended.
    pub fn close(&self) {
        self.tracker.close();
    }

    /// Every task has ended (after [`Self::close`]). Cancel-safe.
    pub async fn wait(&self) {
        self.tracker.wait().await;
    }

    /// The names of the tasks still running, in start order.
    pub fn running(&self) -> Vec<String> {
        lock(&self.running)
            .values()
            .map(|r| r.name.clone())
            .collect()
    }

    /// Abort every task still running and name them all (blocking work
    /// cannot be aborted: it is named, and finishes on its own).
    pub fn abort_stragglers(&self) -> Vec<String> {
        let running = lock(&self.running);
        for task in running.values() {
            if let Some(abort) = &task.abort {
                abort.abort();
            }
        }
        running.values().map(|r| r.name.clone()).collect()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn stragglers_are_named_and_finished_tasks_are_not() {
        let tasks = RuntimeTasks::new();
        tasks.spawn("quick", async {}).await.unwrap();
        let _slow = tasks.spawn("slow", tokio::time::sleep(Duration::from_secs(3600)));
        let (release, held) = std::sync::mpsc::channel::<()>();
        let blocking = tasks.spawn_blocking("disk", move || {
            let _ = held.recv();
        });
        assert_eq!(tasks.running(), vec!["slow".to_owned(), "disk".to_owned()]);
        assert_eq!(
            tasks.abort_stragglers(),
            vec!["slow".to_owned(), "disk".to_owned()]
        );
        release.send(()).unwrap();
        blocking.await.unwrap();
        tasks.close();
        tasks.wait().await;
        assert!(tasks.running().is_empty());
    }

    #[tokio::test]
    async fn a_panicking_task_leaves_the_running_set() {
        let tasks = RuntimeTasks::new();
        let failed = tasks.spawn("panics", async { panic!("bug") }).await;
        assert!(failed.is_err());
        assert!(tasks.running().is_empty());
    }
}
