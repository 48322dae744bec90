import { useEffect, useReducer } from "react";
import { reduce, initialModel, reconnecting, type AppModel, type Action } from "./state";
import type { PeerEvent, ServiceHealth } from "./types";

/** How the app reaches the peer; the real one wraps Tauri, tests pass a fake. */
export interface PeerBridge {
  health(): Promise<ServiceHealth[]>;
  onEvent(handler: (event: PeerEvent) => void): Promise<() => void>;
}

const FAILURE_MEANING: Record<string, string> = {
  "quic-server": "This computer can no longer share or serve games. Restart lanspread.",
  "command-loop": "The app lost contact with its background service. Restart lanspread.",
};

export function App({ bridge }: { bridge: PeerBridge }) {
  const [model, dispatch] = useReducer<AppModel, [Action]>(reduce, initialModel);

  useEffect(() => {
    let unlisten: (() => void) | undefined;
    let cancelled = false;
    bridge.onEvent((event) => dispatch({ kind: "event", event })).then((u) => {
      if (cancelled) u();
      else unlisten = u;
    });
    bridge.health().then((health) => {
      if (!cancelled) dispatch({ kind: "healthSnapshot", health });
    });
    return () => {
      cancelled = true;
      unlisten?.();
    };
  }, [bridge]);

  const waiting = reconnecting(model);
  return (
    <div className="app">
      <header className="topbar">
        <h1>lanspread</h1>
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
      <main>
        <section aria-labelledby="library-title">
          <h2 id="library-title">Library</h2>
          <p className="empty">No games yet — peers on the party network will show up here.</p>
        </section>
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
        </section>
      </main>
    </div>
  );
}
