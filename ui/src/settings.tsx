import { useEffect, useRef, useState, type FormEvent } from "react";
import type { Settings, SettingsView } from "./bindings";
import type { PeerBridge } from "./bridge";
import { useFocusTrap } from "./focus";
import { errorText } from "./state";

const MIB = 1024 * 1024;

/** The settings form; saving may restart the network part of the app. */
export function SettingsPage({
  view,
  bridge,
  onSaved,
}: {
  view: SettingsView;
  bridge: PeerBridge;
  onSaved: (view: SettingsView) => void;
}) {
  const [draft, setDraft] = useState<Settings>({ ...view.settings, gamesDir: view.settings.gamesDir ?? view.gamesDir });
  const [uploadMib, setUploadMib] = useState(String(view.settings.uploadLimit / MIB));
  const [status, setStatus] = useState<string | null>(null);
  const [saving, setSaving] = useState(false);
  const set = (change: Partial<Settings>) => setDraft((d) => ({ ...d, ...change }));
  const pick = () =>
    bridge.pickGamesFolder().then(
      (dir) => dir && set({ gamesDir: dir }),
      (e) => setStatus(errorText(e)),
    );
  const submit = (e: FormEvent) => {
    e.preventDefault();
    const mib = Number(uploadMib);
    if (!Number.isFinite(mib) || mib < 0) {
      setStatus("The upload limit is a number of MiB/s, 0 for none.");
      return;
    }
    setSaving(true);
    setStatus(null);
    bridge
      .saveSettings({ ...draft, uploadLimit: Math.round(mib * MIB) })
      .then(
        (saved) => {
          setStatus("Saved.");
          onSaved(saved);
        },
        (err) => setStatus(errorText(err)),
      )
      .finally(() => setSaving(false));
  };
  return (
    <section aria-labelledby="settings-title">
      <h2 id="settings-title">Settings</h2>
      {view.problem && (
        <p className="notice" role="alert">
          {view.problem}
        </p>
      )}
      <form className="settings" onSubmit={submit}>
        <label htmlFor="games-dir">Games folder</label>
        <div className="row">
          <input id="games-dir" value={draft.gamesDir ?? ""} readOnly />
          <button type="button" className="ghost" onClick={pick}>
            Choose…
          </button>
        </div>
        <p className="hint">Downloads go here; every game folder in it is shared with the party.</p>

        <label htmlFor="display-name">Display name</label>
        <input
          id="display-name"
          placeholder="This computer's name"
          value={draft.displayName}
          onChange={(e) => set({ displayName: e.target.value })}
        />

        <label htmlFor="upload-limit">Upload limit (MiB/s)</label>
        <input
          id="upload-limit"
          type="number"
          min={0}
          step="any"
          value={uploadMib}
          onChange={(e) => setUploadMib(e.target.value)}
        />
        <p className="hint">0: no limit. Applies at once, to everything you serve.</p>

        <label htmlFor="party-key">Party key</label>
        <input
          id="party-key"
          placeholder="None: any peer may connect"
          value={draft.partyKey}
          onChange={(e) => set({ partyKey: e.target.value })}
        />
        <p className="hint">Only peers with the same key see each other.</p>

        <label htmlFor="parallel">Parallel downloads</label>
        <input
          id="parallel"
          type="number"
          min={1}
          max={8}
          value={draft.parallelDownloads}
          onChange={(e) => set({ parallelDownloads: Number(e.target.value) })}
        />

        <h3>The party</h3>
        <label className="check">
          <input type="checkbox" checked={draft.organizer} onChange={(e) => set({ organizer: e.target.checked })} />
          I am the organizer
        </label>
        <p className="hint">
          Publish tonight's lineup and call ready checks. Under a party key only an organizer may.
          Saving restarts the network part of the app.
        </p>
        <label className="check">
          <input type="checkbox" checked={draft.keepReady} onChange={(e) => set({ keepReady: e.target.checked })} />
          Keep me ready (queue new lineup games by themselves)
        </label>
        <p className="hint">Every game the lineup adds is downloaded without asking. Applies at once.</p>
        <label htmlFor="game-mode-share">Seeding while playing: {draft.gameModeUploadPercent} % of the upload limit</label>
        <input
          id="game-mode-share"
          type="range"
          min={1}
          max={100}
          value={draft.gameModeUploadPercent}
          onChange={(e) => set({ gameModeUploadPercent: Number(e.target.value) })}
        />
        <p className="hint">
          While a game started from lanspread runs, others get at most this share of your upload, so
          your game keeps its network; with no upload limit, of about 100 MB/s. Applies at once.
        </p>

        <div className="row">
          <button type="submit" disabled={saving}>
            {saving ? "Saving…" : "Save"}
          </button>
          {status && <span role="status">{status}</span>}
        </div>
      </form>
    </section>
  );
}

/** First run: ask where games go before anything else. */
export function FirstRun({
  view,
  bridge,
  onSaved,
}: {
  view: SettingsView;
  bridge: PeerBridge;
  onSaved: (view: SettingsView) => void;
}) {
  const [folder, setFolder] = useState(view.gamesDir);
  const [name, setName] = useState(view.settings.displayName);
  const [error, setError] = useState<string | null>(view.problem);
  const panel = useRef<HTMLFormElement>(null);
  useFocusTrap(panel);
  useEffect(() => panel.current?.querySelector<HTMLButtonElement>("button[type=submit]")?.focus(), []);
  const pick = () =>
    bridge.pickGamesFolder().then(
      (dir) => dir && setFolder(dir),
      (e) => setError(errorText(e)),
    );
  const start = (e: FormEvent) => {
    e.preventDefault();
    bridge.saveSettings({ ...view.settings, gamesDir: folder, displayName: name.trim() }).then(onSaved, (err) =>
      setError(errorText(err)),
    );
  };
  return (
    <div className="overlay">
      <form className="detail welcome" role="dialog" aria-modal="true" aria-labelledby="welcome-title" ref={panel} onSubmit={start}>
        <div className="detail-body">
          <h2 id="welcome-title">Welcome to lanspread</h2>
          <p>
            Where should your games live? Games you download go into this folder, and every game
            folder in it is shared with the party.
          </p>
          <div className="row">
            <code className="path">{folder}</code>
            <button type="button" className="ghost" onClick={pick}>
              Choose another folder…
            </button>
          </div>
          <label htmlFor="welcome-name">Your name at the party</label>
          <input
            id="welcome-name"
            placeholder="This computer's name"
            value={name}
            onChange={(e) => setName(e.target.value)}
          />
          {error && <p role="alert">{error}</p>}
          <div className="actions">
            <button type="submit">Start</button>
          </div>
        </div>
      </form>
    </div>
  );
}
