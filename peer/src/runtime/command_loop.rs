//! The command loop: it takes the handle's commands, and when the runtime
//! stops it runs the shutdown sequence and writes the stop report. It is not
//! a service: it outlives them all.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::{parse_peer_address, AddPeerError, PeerCommand, StopReport};
use crate::download::Engine;
use crate::events::{EventSink, PeerEvent, Source};
use crate::health::HealthBoard;
use crate::net::SocketClosed;
use crate::net::{close_code, tls};
use crate::peers::PeerDirectory;
use crate::store::Store;
use crate::supervisor::Supervisor;
use crate::tasks::RuntimeTasks;

/// How long shutdown waits for peers to acknowledge our Goodbye.
const GOODBYE_WAIT: Duration = Duration::from_millis(300);
/// Time allowed to release the UDP port after the tasks ended, even when
/// they took the whole deadline: closed connections drain for three probe
/// timeouts, then quinn closes the socket from its driver task. On a LAN that
/// is ~0.2 s ([`tls::INITIAL_RTT`]); on a starved machine a round trip
/// measured while the handshake waited for a core stretches it, up to the
/// idle timeout, where draining ends anyway (seen at 5 s under load, past
/// the 0.5 s this once allowed). Shutdown waits only as long as it takes.
const SOCKET_RELEASE: Duration = Duration::from_secs(tls::IDLE_TIMEOUT.as_secs() + 1);

pub(super) struct CommandLoop {
    pub commands: mpsc::Receiver<PeerCommand>,
    pub runtime_token: CancellationToken,
    pub shutdown_token: CancellationToken,
    pub shutdown_requested: Arc<AtomicBool>,
    pub directory: Arc<PeerDirectory>,
    pub engine: Arc<Engine>,
    pub store: Arc<Store>,
    pub endpoint: quinn::Endpoint,
    pub socket_closed: SocketClosed,
    /// `[id@]host:port` to add at start.
    pub manual: Vec<String>,
    pub supervisor: Supervisor,
    pub tasks: RuntimeTasks,
    pub events: EventSink,
    pub health: HealthBoard,
    pub shutdown_deadline: Duration,
}

impl CommandLoop {
    pub(super) async fn run(mut self) -> StopReport {
        // Whatever happens here, a panic included, stops every service.
        let _stop_everything = self.runtime_token.clone().drop_guard();
        self.engine.resume_saved().await;
        for address in std::mem::take(&mut self.manual) {
            self.spawn_add_peer(address, None);
        }
        loop {
            tokio::select! {
                biased;
                _ = self.shutdown_token.cancelled() => break,
                _ = self.runtime_token.cancelled() => break,
                command = self.commands.recv() => match command {
                    Some(command) => self.handle_command(command).await,
                    None if self.shutdown_requested.load(Ordering::SeqCst) => break,
                    None => {
                        self.events.emit(PeerEvent::RuntimeFailed {
                            component: "command-loop".into(),
                            error: "the command channel closed without a shutdown request".into(),
                        });
                        break;
                    }
                },
            }
        }
        self.shutdown().await
    }

    async fn handle_command(&mut self, command: PeerCommand) {
        // A reply whose asker gave up is not our failure: sends are ignored.
        match command {
            PeerCommand::Health(reply) => {
                let _ = reply.send(self.health.snapshot());
            }
            PeerCommand::Download { target, reply } => {
                let _ = reply.send(self.engine.start(&target).await);
            }
            PeerCommand::CancelDownload {
                version_id,
                delete,
                reply,
            } => {
                let _ = reply.send(self.engine.cancel(&version_id, delete).await);
            }
            PeerCommand::AddPeer { address, reply } => self.spawn_add_peer(address, Some(reply)),
        }
    }

    /// Add a typed peer off the loop; the answer goes to `reply`, or to the
    /// log for the peers given at start. A slow name lookup stops with the
    /// runtime, so it never holds up shutdown.
    fn spawn_add_peer(
        &self,
        address: String,
        reply: Option<oneshot::Sender<Result<(), AddPeerError>>>,
    ) {
        let (directory, store) = (self.directory.clone(), self.store.clone());
        let (token, tasks) = (self.runtime_token.clone(), self.tasks.clone());
        self.tasks.spawn("add a peer", async move {
            let added = token
                .run_until_cancelled(add_manual_peer(&directory, &store, &tasks, &address))
                .await;
            match (added, reply) {
                (Some(result), Some(reply)) => {
                    let _ = reply.send(result);
                }
                (Some(Err(e)), None) => tracing::warn!("peer `{address}`: {e}"),
                _ => {}
            }
        });
    }

    async fn shutdown(self) -> StopReport {
        // Shutdown order:
        // 1. Stop accepting: no new connections, no new commands (queued ones
        //    are dropped with their reply channels: `RuntimeStopped`).
        self.endpoint.set_server_config(None);
        drop(self.commands);
        // 2. Goodbye to every connected peer, so they drop us at once.
        self.directory.goodbye_all(GOODBYE_WAIT).await;
        // 3. Cancel the runtime token: downloads stop between pieces, every
        //    service stops, and the server closes the endpoint.
        self.runtime_token.cancel();
        // 4. Wait for every task under the deadline, then abort the ones that
        //    ignored cancellation and name them all.
        self.tasks.close();
        let deadline = tokio::time::Instant::now() + self.shutdown_deadline;
        let mut stragglers = match tokio::time::timeout_at(deadline, self.tasks.wait()).await {
            Ok(()) => Vec::new(),
            Err(_) => self.tasks.abort_stragglers(),
        };
        self.supervisor.report_stragglers(&stragglers);
        // 5. Release the UDP port, so a new runtime can bind it as soon as
        //    this one reports (the desktop app restarts one when settings
        //    change): drop the connections and the endpoint handle we hold,
        //    close the endpoint, and wait until quinn has closed the socket.
        self.directory.forget_connections();
        self.engine.release_endpoint();
        self.endpoint.close(
            quinn::VarInt::from_u32(close_code::GOODBYE),
            b"shutting down",
        );
        let release_by = deadline.max(tokio::time::Instant::now() + SOCKET_RELEASE);
        let _ = tokio::time::timeout_at(release_by, self.endpoint.wait_idle()).await;
        drop(self.endpoint);
        if tokio::time::timeout_at(release_by, self.socket_closed)
            .await
            .is_err()
        {
            tracing::error!("the UDP socket was still open at the shutdown deadline");
            stragglers.push("udp-socket".into());
        }
        StopReport {
            requested: self.shutdown_requested.load(Ordering::SeqCst),
            stragglers,
        }
    }
}

/// Resolve a typed address, remember it (on the blocking pool) and hand it
/// to the directory.
async fn add_manual_peer(
    directory: &PeerDirectory,
    store: &Arc<Store>,
    tasks: &RuntimeTasks,
    text: &str,
) -> Result<(), AddPeerError> {
    let (host, expected) = parse_peer_address(text)?;
    let addrs: Vec<std::net::SocketAddr> = tokio::net::lookup_host(&host)
        .await
        .map_err(|e| AddPeerError::Unresolved {
            address: host.clone(),
            reason: e.to_string(),
        })?
        .collect();
    let Some(addr) = addrs
        .iter()
        .find(|a| a.is_ipv4())
        .or(addrs.first())
        .copied()
    else {
        return Err(AddPeerError::Unresolved {
            address: host,
            reason: "no address".into(),
        });
    };
    let (store, typed, id) = (
        store.clone(),
        text.trim().to_owned(),
        expected.as_ref().map(|id| id.to_string()),
    );
    tasks
        .spawn_blocking("remember a peer", move || {
            store.add_manual_peer(&typed, id.as_deref())
        })
        .await
        .map_err(|e| AddPeerError::Store(e.to_string()))?
        .map_err(|e| AddPeerError::Store(e.to_string()))?;
    directory.add_candidate(addr, expected, Source::Manual);
    Ok(())
}
