import { useCallback, useEffect, useReducer, useRef, useState } from "react";
import type { PeerEvent, SettingsView } from "./bindings";
import type { PeerBridge } from "./bridge";
import { Downloads } from "./downloads";
import { Library, type GameActions } from "./library";
import { LineupBanner, Party, QuitDialog, ReadyCheckNotice } from "./party";
import { Peers } from "./peers";
import { Services } from "./services";
import { FirstRun, SettingsPage } from "./settings";
import { errorText, gameModeText, initialModel, reconnecting, reduce, type Action, type AppModel } from "./state";

const FAILURE_MEANING: Record<string, string> = {
  "quic-server": "This computer can no longer share or serve games. Restart lanspread.",
  "command-loop": "The app lost contact with its background service. Restart lanspread.",
};

type Tab = "library" | "party" | "downloads" | "peers" | "services" | "settings";

export function App({ bridge }: { bridge: PeerBridge }) {
  const [model, dispatch] = useReducer<AppModel, [Action]>(reduce, initialModel);
  const [tab, setTab] = useState<Tab>("library");
  const [notice, setNotice] = useState<string | null>(null);
  const [settings, setSettings] = useState<SettingsView | null>(null);

  // Events that carry a whole state (the catalog, the lineups, the board,
  // game mode), counted by type: a snapshot asked for before one of them
  // arrived may be older than it, and is then not taken.
  const seen = useRef<Partial<Record<PeerEvent["type"], number>>>({});
  const fresh = useCallback((type: PeerEvent["type"]) => {
    const before = seen.current[type] ?? 0;
    return () => (seen.current[type] ?? 0) === before;
  }, []);

  // Snapshots first, then events keep the model current. After a settings
  // change restarted the runtime, the snapshots are fetched again.
  const resync = useCallback(
    (live: () => boolean) => {
      const catalogFresh = fresh("catalogChanged");
      const lineupsFresh = fresh("lineupChanged");
      const boardFresh = fresh("readyBoardChanged");
      const gameModeFresh = fresh("gameModeChanged");
      bridge.health().then((health) => live() && dispatch({ kind: "healthSnapshot", health }));
      bridge.catalog().then((catalog) => live() && catalogFresh() && dispatch({ kind: "catalogSnapshot", catalog }));
      bridge.peers().then((peers) => live() && dispatch({ kind: "peersSnapshot", peers }));
      bridge.downloads().then((downloads) => live() && dispatch({ kind: "downloadsSnapshot", downloads }));
      bridge.lineups().then((lineups) => live() && lineupsFresh() && dispatch({ kind: "lineupsSnapshot", lineups }));
      bridge.readyBoard().then((board) => live() && boardFresh() && dispatch({ kind: "boardSnapshot", board }));
      bridge
        .gameMode()
        .then((gameMode) => live() && gameModeFresh() && dispatch({ kind: "gameModeSnapshot", gameMode }));
    },
    [bridge, fresh],
  );

  useEffect(() => {
    const unlisteners: (() => void)[] = [];
    let cancelled = false;
    const live = () => !cancelled;
    const keep = (unlisten: () => void) => {
      if (cancelled) unlisten();
      else unlisteners.push(unlisten);
    };
    const fold = (event: PeerEvent) => {
      seen.current[event.type] = (seen.current[event.type] ?? 0) + 1;
      dispatch({ kind: "event", event });
    };
    bridge.onEvent(fold).then(keep);
    // A failure comes on its own channel; it shows as the banner.
    bridge.onRuntimeFailed(fold).then(keep);
    bridge.onQuitRequested(({ lastCopies }) => dispatch({ kind: "quitRequested", lastCopies })).then(keep);
    resync(live);
    bridge.settings().then((view) => live() && setSettings(view));
    return () => {
      cancelled = true;
      unlisteners.forEach((unlisten) => unlisten());
    };
  }, [bridge, resync]);

  const report = (action: Promise<unknown>) =>
    action.then(
      () => setNotice(null),
      (e) => setNotice(errorText(e)),
    );
  const actions: GameActions = {
    download: (target) => report(bridge.download(target)),
    cancel: (versionId, discard) =>
      report(
        bridge.cancelDownload(versionId, discard).then(() => {
          if (discard) dispatch({ kind: "clearDownload", versionId });
        }),
      ),
    play: (gameId) => report(bridge.play(gameId)),
    openFolder: (gameId) => report(bridge.openGameFolder(gameId)),
    remove: (gameId) => report(bridge.deleteGame(gameId)),
  };
  const settingsSaved = (view: SettingsView) => {
    setSettings(view);
    resync(() => true);
  };

  const waiting = reconnecting(model);
  const indexing = Object.entries(model.indexing);
  const active = Object.values(model.downloads).filter((d) => d.phase === "running" || d.phase === "queued").length;
  const gameMode = gameModeText(model.gameMode);
  const tabs: [Tab, string][] = [
    ["library", "Library"],
    ["party", "Party"],
    ["downloads", active ? `Downloads (${active})` : "Downloads"],
    ["peers", "Peers"],
    ["services", "Services"],
    ["settings", "Settings"],
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
        {gameMode && (
          <span className="game-mode" role="status" title={model.gameMode.games.join(", ")}>
            {gameMode}
          </span>
        )}
        {waiting.length > 0 && (
          <span className="reconnecting" role="status">
            Reconnecting {waiting.join(", ")}…
          </span>
        )}
        {indexing.length > 0 && (
          <span className="indexing" role="status">
            Preparing {indexing.map(([game, p]) => `${game} (${Math.floor((100 * p.bytesDone) / Math.max(p.bytesTotal, 1))}%)`).join(", ")} to share…
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
          <button className="ghost" aria-label="Dismiss" onClick={() => setNotice(null)}>
            ✕
          </button>
        </div>
      )}
      {model.readyChecks.map((check) => (
        <ReadyCheckNotice
          key={check.versionId}
          model={model}
          check={check}
          onGet={() => actions.download(check.versionId)}
          onDismiss={() => dispatch({ kind: "dismissReadyCheck", versionId: check.versionId })}
        />
      ))}
      <main>
        {tab === "library" && <LineupBanner model={model} bridge={bridge} />}
        {tab === "library" && <Library model={model} bridge={bridge} actions={actions} />}
        {tab === "party" && <Party model={model} bridge={bridge} organizer={settings?.settings.organizer ?? false} />}
        {tab === "downloads" && (
          <Downloads
            model={model}
            onCancel={(d) => actions.cancel(d.versionId, false)}
            onResume={(d) => actions.download(d.versionId)}
            onClear={(d) => dispatch({ kind: "clearDownload", versionId: d.versionId })}
          />
        )}
        {tab === "peers" && <Peers model={model} onAdd={(a) => bridge.addPeer(a)} />}
        {tab === "services" && <Services model={model} bridge={bridge} />}
        {tab === "settings" && settings && <SettingsPage view={settings} bridge={bridge} onSaved={settingsSaved} />}
      </main>
      {settings?.firstRun && <FirstRun view={settings} bridge={bridge} onSaved={settingsSaved} />}
      {model.quitRequest && (
        <QuitDialog
          copies={model.quitRequest}
          onKeep={() => dispatch({ kind: "keepSharing" })}
          onQuit={() => report(bridge.quit())}
        />
      )}
    </div>
  );
}
