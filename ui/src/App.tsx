import { useEffect, useReducer, useState, type FormEvent } from "react";
import {
  formatBytes,
  gameState,
  initialModel,
  libraryEntries,
  reconnecting,
  reduce,
  type Action,
  type AppModel,
  type DownloadView,
} from "./state";
import type { CatalogEntry, Diagnostics, PeerEvent, PeerInfo, ServiceHealth } from "./types";

/** How the app reaches the peer; the real one wraps Tauri, tests pass a fake. */
export interface PeerBridge {
  health(): Promise<ServiceHealth[]>;
  catalog(): Promise<CatalogEntry[]>;
  peers(): Promise<PeerInfo[]>;
  download(target: string): Promise<string>;
  cancelDownload(versionId: string, remove: boolean): Promise<boolean>;
  addPeer(address: string): Promise<void>;
  diagnostics(): Promise<Diagnostics>;
  onEvent(handler: (event: PeerEvent) => void): Promise<() => void>;
}

const FAILURE_MEANING: Record<string, string> = {
  "quic-server": "This computer can no longer share or serve games. Restart lanspread.",
  "command-loop": "The app lost contact with its background service. Restart lanspread.",
};

type Tab = "library" | "downloads" | "peers" | "services";

function errorText(e: unknown): string {
  if (e && typeof e === "object" && "message" in e) return String((e as { message: unknown }).message);
  return String(e);
}

export function App({ bridge }: { bridge: PeerBridge }) {
  const [model, dispatch] = useReducer<AppModel, [Action]>(reduce, initialModel);
  const [tab, setTab] = useState<Tab>("library");
  const [notice, setNotice] = useState<string | null>(null);

  useEffect(() => {
    let unlisten: (() => void) | undefined;
    let cancelled = false;
    bridge.onEvent((event) => dispatch({ kind: "event", event })).then((u) => {
      if (cancelled) u();
      else unlisten = u;
    });
    bridge.health().then((health) => !cancelled && dispatch({ kind: "healthSnapshot", health }));
    bridge.catalog().then((catalog) => !cancelled && dispatch({ kind: "catalogSnapshot", catalog }));
    bridge.peers().then((peers) => !cancelled && dispatch({ kind: "peersSnapshot", peers }));
    return () => {
      cancelled = true;
      unlisten?.();
    };
  }, [bridge]);

  const startDownload = (target: string) =>
    bridge.download(target).then(
      () => setNotice(null),
      (e) => setNotice(errorText(e)),
    );

  const waiting = reconnecting(model);
  const running = Object.values(model.downloads).filter((d) => d.phase === "running").length;
  const tabs: [Tab, string][] = [
    ["library", "Library"],
    ["downloads", running ? `Downloads (${running})` : "Downloads"],
    ["peers", "Peers"],
    ["services", "Services"],
  ];
  return (
    <div className="app">
      <header className="topbar">
        <h1>lanspread</h1>
        <nav aria-label="Sections">
          {tabs.map(([id, label]) => (
            <button
              key={id}
              className={tab === id ? "tab active" : "tab"}
              aria-current={tab === id ? "page" : undefined}
              onClick={() => setTab(id)}
            >
              {label}
            </button>
          ))}
        </nav>
        {waiting.length > 0 && (
          <span className="reconnecting" role="status">
            Reconnecting {waiting.join(", ")}…
          </span>
        )}
      </header>
      {model.failure && (
        <div className="banner" role="alert">
          <strong>{model.failure.component} failed:</strong> {model.failure.error}.{" "}
          {FAILURE_MEANING[model.failure.component] ?? "Part of lanspread stopped working."}
        </div>
      )}
      {notice && (
        <div className="notice" role="status">
          {notice}
        </div>
      )}
      <main>
        {tab === "library" && <Library model={model} onDownload={startDownload} />}
        {tab === "downloads" && (
          <Downloads
            model={model}
            onCancel={(d) => bridge.cancelDownload(d.versionId, false)}
            onResume={(d) => startDownload(d.versionId)}
          />
        )}
        {tab === "peers" && <Peers model={model} onAdd={(a) => bridge.addPeer(a)} />}
        {tab === "services" && <Services model={model} bridge={bridge} />}
      </main>
    </div>
  );
}

function Library({ model, onDownload }: { model: AppModel; onDownload: (target: string) => void }) {
  const [search, setSearch] = useState("");
  const entries = libraryEntries(model, search);
  return (
    <section aria-labelledby="library-title">
      <div className="section-head">
        <h2 id="library-title">Library</h2>
        <input
          type="search"
          placeholder="Search games"
          aria-label="Search games"
          value={search}
          onChange={(e) => setSearch(e.target.value)}
        />
      </div>
      {entries.length === 0 ? (
        <p className="empty">
          No games yet — are you on the party network? Peers and their games show up here; add one
          by address on the Peers tab.
        </p>
      ) : (
        <ul className="grid">
          {entries.map((entry) => (
            <GameCard key={entry.versionId} model={model} entry={entry} onDownload={onDownload} />
          ))}
        </ul>
      )}
    </section>
  );
}

function GameCard({
  model,
  entry,
  onDownload,
}: {
  model: AppModel;
  entry: CatalogEntry;
  onDownload: (target: string) => void;
}) {
  const state = gameState(model, entry);
  const download = model.downloads[entry.versionId];
  const sources = entry.sources.length + entry.partialSources.length;
  const label: Record<typeof state, string> = {
    installed: "Installed",
    update: "Update available",
    downloading: "Downloading",
    available: "Available",
  };
  return (
    <li className="card" aria-label={entry.title}>
      <div className="cover" aria-hidden="true">
        {entry.title.slice(0, 2).toUpperCase()}
      </div>
      <div className="card-body">
        <h3>{entry.title}</h3>
        <p className="meta">
          {formatBytes(entry.totalSize)} · {sources} {sources === 1 ? "source" : "sources"}
          {entry.versionLabel ? ` · v${entry.versionLabel}` : ""}
        </p>
        <p className={`badge badge-${state}`}>{label[state]}</p>
        {state === "downloading" && download && <Progress download={download} />}
        {state === "available" && (
          <button onClick={() => onDownload(entry.versionId)}>Download</button>
        )}
        {state === "update" && entry.updateTo && (
          <button onClick={() => onDownload(entry.updateTo!)}>Update</button>
        )}
      </div>
    </li>
  );
}

function Progress({ download }: { download: DownloadView }) {
  const percent = download.bytesTotal ? (100 * download.bytesDone) / download.bytesTotal : 0;
  return (
    <div className="progress">
      <progress max={100} value={percent} aria-label={`${download.title} progress`} />
      {download.phase === "completed" ? (
        <span>Installed and verified · {formatBytes(download.bytesTotal)}</span>
      ) : (
        <span>
          {percent.toFixed(0)}% · {formatBytes(download.bytesPerSec)}/s
          {download.etaSecs != null ? ` · ${download.etaSecs} s left` : ""}
        </span>
      )}
    </div>
  );
}

function Downloads({
  model,
  onCancel,
  onResume,
}: {
  model: AppModel;
  onCancel: (d: DownloadView) => void;
  onResume: (d: DownloadView) => void;
}) {
  const list = Object.values(model.downloads);
  return (
    <section aria-labelledby="downloads-title">
      <h2 id="downloads-title">Downloads</h2>
      {list.length === 0 ? (
        <p className="empty">Nothing downloading. Pick a game in the Library.</p>
      ) : (
        <ul className="downloads">
          {list.map((d) => (
            <li key={d.versionId}>
              <strong>{d.title}</strong> <span className={`phase phase-${d.phase}`}>{d.phase}</span>
              <Progress download={d} />
              {d.sources.length > 0 && (
                <ul className="sources">
                  {d.sources.map((s) => (
                    <li key={s.peerId}>
                      {model.peers[s.peerId]?.displayName ?? s.peerId.slice(0, 8)}:{" "}
                      {formatBytes(s.bytesPerSec)}/s
                    </li>
                  ))}
                </ul>
              )}
              {d.message && <p className="message">{d.message}</p>}
              {d.phase === "running" ? (
                <button onClick={() => onCancel(d)}>Cancel</button>
              ) : d.phase !== "completed" ? (
                <button onClick={() => onResume(d)}>Resume</button>
              ) : null}
            </li>
          ))}
        </ul>
      )}
    </section>
  );
}

function Peers({ model, onAdd }: { model: AppModel; onAdd: (address: string) => Promise<void> }) {
  const [address, setAddress] = useState("");
  const [error, setError] = useState<string | null>(null);
  const peers = Object.values(model.peers);
  const submit = (e: FormEvent) => {
    e.preventDefault();
    onAdd(address).then(
      () => {
        setAddress("");
        setError(null);
      },
      (err) => setError(errorText(err)),
    );
  };
  return (
    <section aria-labelledby="peers-title">
      <h2 id="peers-title">Peers</h2>
      <form className="add-peer" onSubmit={submit}>
        <label htmlFor="peer-address">Add peer by address</label>
        <input
          id="peer-address"
          placeholder="192.168.1.20:27600"
          value={address}
          onChange={(e) => setAddress(e.target.value)}
        />
        <button type="submit" disabled={!address.trim()}>
          Add
        </button>
        {error && <span role="alert">{error}</span>}
      </form>
      {peers.length === 0 ? (
        <p className="empty">
          No peers yet — are you on the party network? Add one by address; it finds the rest.
        </p>
      ) : (
        <table className="health">
          <thead>
            <tr>
              <th>Name</th>
              <th>Address</th>
              <th>RTT</th>
              <th>Games</th>
              <th>State</th>
            </tr>
          </thead>
          <tbody>
            {peers.map((p) => (
              <tr key={p.peerId}>
                <td>{p.displayName || p.peerId.slice(0, 8)}</td>
                <td>{p.addr ?? "—"}</td>
                <td>{p.rttMs != null ? `${p.rttMs.toFixed(1)} ms` : "—"}</td>
                <td>{p.games}</td>
                <td className={`state state-${p.state}`}>{p.state}</td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
    </section>
  );
}

function Services({ model, bridge }: { model: AppModel; bridge: PeerBridge }) {
  const [report, setReport] = useState<Diagnostics | null>(null);
  useEffect(() => {
    bridge.diagnostics().then(setReport, () => setReport(null));
  }, [bridge]);
  return (
    <section aria-labelledby="health-title">
      <h2 id="health-title">Services</h2>
      <table className="health">
        <thead>
          <tr>
            <th>Service</th>
            <th>State</th>
            <th>Restarts</th>
            <th>Last error</th>
          </tr>
        </thead>
        <tbody>
          {Object.values(model.health).map((h) => (
            <tr key={h.service}>
              <td>{h.service}</td>
              <td className={`state state-${h.state}`}>{h.state}</td>
              <td>{h.restarts}</td>
              <td>{h.lastError ?? "—"}</td>
            </tr>
          ))}
        </tbody>
      </table>
      {report && <DiagnosticsReport report={report} />}
    </section>
  );
}

/** "Why can't I see peers": what the runtime knows about the network. */
function DiagnosticsReport({ report }: { report: Diagnostics }) {
  return (
    <div className="diagnostics" aria-labelledby="diagnostics-title">
      <h2 id="diagnostics-title">Why can't I see peers?</h2>
      <ul className="hints">
        {report.hints.map((hint) => (
          <li key={hint}>{hint}</li>
        ))}
      </ul>
      <p className="meta">
        Peer id <code>{report.peerId}</code> · listening on {report.boundAddr} (UDP) · mDNS{" "}
        {report.mdnsEnabled ? (report.discovery?.state ?? "not running") : "off"}
      </p>
      <table className="health">
        <thead>
          <tr>
            <th>Interface</th>
            <th>Address</th>
            <th>Discovery</th>
          </tr>
        </thead>
        <tbody>
          {report.interfaces.map((i) => (
            <tr key={`${i.name}-${i.addr}`}>
              <td>{i.name}</td>
              <td>{i.addr}</td>
              <td>{i.usedForDiscovery ? "used" : "skipped"}</td>
            </tr>
          ))}
        </tbody>
      </table>
      {report.addresses.some((a) => a.lastError) && (
        <ul className="hints">
          {report.addresses
            .filter((a) => a.lastError)
            .map((a) => (
              <li key={a.addr}>
                {a.addr}: {a.lastError}
              </li>
            ))}
        </ul>
      )}
    </div>
  );
}
