//! Supervisor and runtime lifecycle tests. Timers run on paused time, so the
//! delays asserted here are exact and the tests take no wall-clock time.

use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

use super::*;
use crate::events::{ServiceHealth, ServiceState};

/// A service that only waits for cancellation.
async fn idle_until_cancelled(ctx: ServiceContext) -> anyhow::Result<()> {
    ctx.token().cancelled().await;
    Ok(())
}

fn config(deadline: Duration) -> (PeerConfig, tempfile_dirs::Dirs) {
    let dirs = tempfile_dirs::Dirs::new();
    let mut config = PeerConfig::new(dirs.games(), dirs.data());
    config.shutdown_deadline = deadline;
    config.listen = "127.0.0.1:0".parse().unwrap();
    config.mdns = false;
    (config, dirs)
}

/// Two throwaway folders under the system temp dir, removed on drop.
mod tempfile_dirs {
    use std::path::PathBuf;

    pub struct Dirs(PathBuf);

    impl Dirs {
        pub fn new() -> Self {
            static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
            let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let root = std::env::temp_dir()
                .join(format!("lanspread-runtime-test-{}-{n}", std::process::id()));
            std::fs::create_dir_all(root.join("games")).unwrap();
            Self(root)
        }
        pub fn games(&self) -> PathBuf {
            self.0.join("games")
        }
        pub fn data(&self) -> PathBuf {
            self.0.join("data")
        }
    }

    impl Drop for Dirs {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

const FAST: Backoff = Backoff {
    initial: Duration::from_millis(100),
    max: Duration::from_millis(800),
    healthy_after: Duration::from_secs(10),
};

fn health_of(handle: &PeerRuntimeHandle, service: &str) -> ServiceHealth {
    handle
        .health()
        .into_iter()
        .find(|h| h.service == service)
        .unwrap_or_else(|| panic!("no service {service}"))
}

fn drain(events: &mut broadcast::Receiver<PeerEvent>) -> Vec<PeerEvent> {
    let mut out = Vec::new();
    while let Ok(event) = events.try_recv() {
        out.push(event);
    }
    out
}

fn runtime_failures(events: &[PeerEvent]) -> Vec<(String, String)> {
    events
        .iter()
        .filter_map(|e| match e {
            PeerEvent::RuntimeFailed { component, error } => {
                Some((component.clone(), error.clone()))
            }
            _ => None,
        })
        .collect()
}

/// Records when each run of a service started.
#[derive(Clone, Default)]
struct Starts(Arc<Mutex<Vec<Instant>>>);

impl Starts {
    fn record(&self) -> usize {
        let mut starts = self.0.lock().unwrap();
        starts.push(Instant::now());
        starts.len()
    }
    fn gaps_ms(&self) -> Vec<u128> {
        let starts = self.0.lock().unwrap();
        starts
            .windows(2)
            .map(|w| (w[1] - w[0]).as_millis())
            .collect()
    }
    fn count(&self) -> usize {
        self.0.lock().unwrap().len()
    }
}

#[tokio::test(start_paused = true)]
async fn required_failure_cancels_the_runtime_and_emits_runtime_failed() {
    let (config, _dirs) = config(Duration::from_secs(1));
    let services = vec![
        ServiceSpec::new("server", SupervisionPolicy::Required, |_ctx| async {
            tokio::time::sleep(Duration::from_millis(50)).await;
            anyhow::bail!("port exploded")
        }),
        ServiceSpec::new(
            "discovery",
            SupervisionPolicy::Restart(FAST),
            idle_until_cancelled,
        ),
    ];
    let (handle, mut events) = start_with_services(config, |_| services).await.unwrap();

    let report = handle.wait_stopped().await;

    assert!(!report.requested, "a failure is not a requested stop");
    assert!(report.stragglers.is_empty());
    assert_eq!(
        runtime_failures(&drain(&mut events)),
        vec![("server".to_owned(), "port exploded".to_owned())]
    );
    assert_eq!(health_of(&handle, "server").state, ServiceState::Failed);
    assert_eq!(health_of(&handle, "discovery").state, ServiceState::Stopped);
    assert!(handle
        .sender()
        .send(PeerCommand::Health(oneshot::channel().0))
        .await
        .is_err());
}

#[tokio::test(start_paused = true)]
async fn restart_backs_off_exponentially_until_shutdown() {
    let (config, _dirs) = config(Duration::from_secs(1));
    let starts = Starts::default();
    let recorder = starts.clone();
    let services = vec![ServiceSpec::new(
        "flaky",
        SupervisionPolicy::Restart(FAST),
        move |_ctx| {
            recorder.record();
            async { anyhow::bail!("flaked") }
        },
    )];
    let (handle, _events) = start_with_services(config, |_| services).await.unwrap();

    tokio::time::sleep(Duration::from_millis(3000)).await;
    handle.shutdown();
    let report = handle.wait_stopped().await;
    let runs_at_stop = starts.count();
    tokio::time::sleep(Duration::from_secs(5)).await;

    assert!(report.requested);
    // 0, 100, 300, 700, 1500, 2300 (cap 800 reached) -> 6 runs in 3 s.
    assert_eq!(starts.gaps_ms(), vec![100, 200, 400, 800, 800]);
    assert_eq!(starts.count(), runs_at_stop, "no restart after shutdown");
    let health = health_of(&handle, "flaky");
    assert_eq!(health.restarts, 6);
    assert_eq!(health.state, ServiceState::Stopped);
    assert_eq!(health.last_error.as_deref(), Some("flaked"));
}

#[tokio::test(start_paused = true)]
async fn restart_delay_resets_after_a_healthy_spell() {
    let (config, _dirs) = config(Duration::from_secs(1));
    let starts = Starts::default();
    let recorder = starts.clone();
    let services = vec![ServiceSpec::new(
        "flaky",
        SupervisionPolicy::Restart(FAST),
        move |_ctx| {
            let run = recorder.record();
            async move {
                if run == 4 {
                    // Healthy for longer than `healthy_after`, then fails.
                    tokio::time::sleep(Duration::from_secs(11)).await;
                }
                anyhow::bail!("run {run} failed")
            }
        },
    )];
    let (handle, _events) = start_with_services(config, |_| services).await.unwrap();

    tokio::time::sleep(Duration::from_millis(700 + 11_000 + 100 + 200 + 50)).await;
    handle.shutdown();
    handle.wait_stopped().await;

    // Runs 1-3 fail at once (100, 200, 400 ms), run 4 is healthy for 11 s;
    // after it the delay starts again at 100 ms instead of 800.
    assert_eq!(starts.gaps_ms(), vec![100, 200, 400, 11_100, 200]);
}

#[tokio::test(start_paused = true)]
async fn best_effort_failure_is_recorded_and_not_restarted() {
    let (config, _dirs) = config(Duration::from_secs(1));
    let starts = Starts::default();
    let recorder = starts.clone();
    let services = vec![
        ServiceSpec::new("monitor", SupervisionPolicy::BestEffort, move |_ctx| {
            recorder.record();
            async { anyhow::bail!("watch limit reached") }
        }),
        ServiceSpec::new("server", SupervisionPolicy::Required, idle_until_cancelled),
    ];
    let (handle, mut events) = start_with_services(config, |_| services).await.unwrap();

    tokio::time::sleep(Duration::from_secs(60)).await;
    let monitor = health_of(&handle, "monitor");
    let server = health_of(&handle, "server");
    handle.shutdown();
    let report = handle.wait_stopped().await;

    assert_eq!(starts.count(), 1);
    assert_eq!(monitor.state, ServiceState::Failed);
    assert_eq!(monitor.restarts, 0);
    assert_eq!(monitor.last_error.as_deref(), Some("watch limit reached"));
    assert_eq!(
        server.state,
        ServiceState::Running,
        "the runtime keeps going"
    );
    assert!(report.requested);
    assert!(runtime_failures(&drain(&mut events)).is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_panicking_service_is_caught_and_handled_by_its_policy() {
    let (config, _dirs) = config(Duration::from_secs(1));
    let restarts = Starts::default();
    let recorder = restarts.clone();
    let services = vec![
        ServiceSpec::new("liveness", SupervisionPolicy::Restart(FAST), move |_ctx| {
            let run = recorder.record();
            async move {
                if run < 3 {
                    panic!("liveness bug #{run}");
                }
                std::future::pending::<anyhow::Result<()>>().await
            }
        }),
        ServiceSpec::new("server", SupervisionPolicy::Required, |ctx| async move {
            tokio::select! {
                biased;
                _ = ctx.token().cancelled() => Ok(()),
                _ = tokio::time::sleep(Duration::from_secs(2)) => panic!("server bug"),
            }
        }),
    ];
    let (handle, mut events) = start_with_services(config, |_| services).await.unwrap();

    tokio::time::sleep(Duration::from_secs(1)).await;
    let liveness = health_of(&handle, "liveness");
    let report = handle.wait_stopped().await;

    assert_eq!(liveness.restarts, 2, "two panics, two restarts");
    assert_eq!(liveness.state, ServiceState::Running);
    assert_eq!(
        liveness.last_error.as_deref(),
        Some("panicked: liveness bug #2")
    );
    assert!(!report.requested);
    assert_eq!(
        runtime_failures(&drain(&mut events)),
        vec![("server".to_owned(), "panicked: server bug".to_owned())]
    );
}

#[tokio::test(start_paused = true)]
async fn shutdown_is_observable_through_wait_stopped() {
    let (config, _dirs) = config(Duration::from_secs(1));
    let (handle, mut events) = start_with_services(config, default_services).await.unwrap();
    tokio::time::sleep(Duration::from_millis(10)).await;
    assert!(handle
        .health()
        .iter()
        .all(|h| h.state == ServiceState::Running));

    let (reply, answer) = oneshot::channel();
    handle
        .sender()
        .send(PeerCommand::Health(reply))
        .await
        .unwrap();
    // quic-server, liveness, library-monitor, party (no mDNS here).
    assert_eq!(answer.await.unwrap().len(), 4);

    handle.shutdown();
    let report = handle.wait_stopped().await;

    assert_eq!(
        report,
        StopReport {
            requested: true,
            stragglers: vec![]
        }
    );
    assert!(handle
        .health()
        .iter()
        .all(|h| h.state == ServiceState::Stopped));
    assert!(runtime_failures(&drain(&mut events)).is_empty());
    // Waiting again returns the same report at once.
    assert_eq!(handle.wait_stopped().await, report);
}

#[tokio::test(start_paused = true)]
async fn a_service_that_ignores_cancellation_cannot_hold_shutdown_past_the_deadline() {
    let deadline = Duration::from_millis(1500);
    let (config, _dirs) = config(deadline);
    let services = vec![
        ServiceSpec::new("stubborn", SupervisionPolicy::Restart(FAST), |_ctx| {
            std::future::pending::<anyhow::Result<()>>()
        }),
        ServiceSpec::new(
            "polite",
            SupervisionPolicy::Restart(FAST),
            idle_until_cancelled,
        ),
    ];
    let (handle, _events) = start_with_services(config, |_| services).await.unwrap();
    tokio::time::sleep(Duration::from_millis(10)).await;

    let asked = Instant::now();
    handle.shutdown();
    let report = handle.wait_stopped().await;

    assert_eq!(asked.elapsed(), deadline);
    assert_eq!(report.stragglers, vec!["stubborn".to_owned()]);
    let stubborn = health_of(&handle, "stubborn");
    assert_eq!(stubborn.state, ServiceState::Failed);
    assert!(stubborn.last_error.unwrap().contains("deadline"));
    assert_eq!(health_of(&handle, "polite").state, ServiceState::Stopped);
}

#[tokio::test(start_paused = true)]
async fn an_unexpected_command_channel_close_fails_the_runtime() {
    let (config, _dirs) = config(Duration::from_secs(1));
    let (handle, mut events) = start_with_services(config, default_services).await.unwrap();
    let stopped = handle.stop_watch();

    // The owner vanished without calling shutdown().
    drop(handle);
    let report = wait_for_stop(stopped).await;

    assert!(!report.requested);
    let failures = runtime_failures(&drain(&mut events));
    assert_eq!(failures.len(), 1);
    assert_eq!(failures[0].0, "command-loop");
}

#[tokio::test(start_paused = true)]
async fn a_graceful_command_channel_close_is_not_a_failure() {
    let (config, _dirs) = config(Duration::from_secs(1));
    let (handle, mut events) = start_with_services(config, default_services).await.unwrap();
    let stopped = handle.stop_watch();
    let sender = handle.sender();

    handle.shutdown();
    drop(handle);
    drop(sender);
    let report = wait_for_stop(stopped).await;

    assert!(report.requested);
    assert!(runtime_failures(&drain(&mut events)).is_empty());
}

#[tokio::test]
async fn start_refuses_a_missing_games_dir() {
    let (mut config, _dirs) = config(Duration::from_secs(1));
    config.games_dir = config.games_dir.join("nope");
    let err = start_peer(config).await.err().expect("must fail");
    assert!(matches!(err, StartError::GamesDirMissing(_)));
    assert!(err.to_string().contains("does not exist"));
}

#[test]
fn typed_peer_addresses() {
    let id = crate::net::identity::Identity::ephemeral()
        .peer_id()
        .clone();
    let check = |text: &str, host: &str, with_id: bool| {
        let (parsed, parsed_id) = parse_peer_address(text).unwrap();
        assert_eq!(parsed, host, "{text}");
        assert_eq!(parsed_id.is_some(), with_id, "{text}");
    };
    check("192.168.1.20:4000", "192.168.1.20:4000", false);
    check("192.168.1.20", "192.168.1.20:27600", false);
    check("lanbox", "lanbox:27600", false);
    check("lanbox:9", "lanbox:9", false);
    check("fe80::1", "[fe80::1]:27600", false);
    check("[fe80::1]:5", "[fe80::1]:5", false);
    check(&format!("{id}@10.0.0.2:7"), "10.0.0.2:7", true);
    assert!(matches!(
        parse_peer_address("nope@10.0.0.2"),
        Err(AddPeerError::BadPeerId(_))
    ));
    assert!(parse_peer_address("  ").is_err());
}

/// Pins a bug: once stopped, the runtime answered a download with an `Io`
/// error and a typed peer with a `Store` error, and a cancel with a silent
/// `false`; every command now says `RuntimeStopped`.
#[tokio::test(start_paused = true)]
async fn a_stopped_runtime_answers_every_command_with_its_own_code() {
    let (config, _dirs) = config(Duration::from_secs(1));
    let (handle, _events) = start_with_services(config, default_services).await.unwrap();
    handle.shutdown();
    handle.wait_stopped().await;

    let download = handle.download("quake3").await.unwrap_err();
    assert_eq!(download.code, FailureCode::RuntimeStopped);
    let added = handle.add_peer("10.0.0.2").await.unwrap_err();
    assert_eq!(added, AddPeerError::RuntimeStopped);
    assert_eq!(added.code(), FailureCode::RuntimeStopped);
    let cancelled = handle.cancel_download(Hash([1; 32]), false).await;
    assert_eq!(cancelled, Err(RuntimeStopped));
}

/// When `wait_stopped` returns, the UDP port is free: a new runtime binds
/// the same address at once, without retrying (the desktop app restarts the
/// runtime on its fixed port when settings change).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_port_is_free_when_wait_stopped_returns() {
    let (config, _dirs) = config(Duration::from_secs(1));
    let (first, _events) = start_peer(config.clone()).await.unwrap();
    let mut again = config;
    again.listen = first.local_addr();
    first.shutdown();
    let report = first.wait_stopped().await;
    assert!(report.stragglers.is_empty(), "{report:?}");
    let (second, _events) = start_peer(again).await.expect("the port is free");
    assert_eq!(second.local_addr(), first.local_addr());
    second.shutdown();
    assert!(second.wait_stopped().await.stragglers.is_empty());
}
