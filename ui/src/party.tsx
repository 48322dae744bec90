import { useEffect, useRef, useState } from "react";
import type { LastCopy, Lineup, ReadyCheck } from "./bindings";
import type { PeerBridge } from "./bridge";
import { useFocusTrap } from "./focus";
import {
  READY_STATE_LABEL,
  boardPeerText,
  conflictingLineups,
  draftEntries,
  draftOf,
  draftProblem,
  errorText,
  lastCopyText,
  libraryEntries,
  lineupFetchText,
  lineupTitle,
  moveDraft,
  ownState,
  publisherText,
  readyCheckState,
  readyCheckText,
  readyCount,
  shownLineups,
  type AppModel,
  type DraftEntry,
} from "./state";

/**
 * Tonight's lineup above the library: each lineup's games in order with
 * their time and our state, who published it, and "Get the lineup". Several
 * publishers' lineups are all shown, each as published, with a note.
 */
export function LineupBanner({ model, bridge }: { model: AppModel; bridge: PeerBridge }) {
  const lineups = shownLineups(model);
  if (lineups.length === 0) return null;
  return (
    <section className="lineups" aria-label="Tonight's lineup">
      {conflictingLineups(model) && (
        <p className="conflict" role="note">
          Conflicting lineups: {lineups.length} peers published one. Each is shown as its publisher
          wrote it; ask them which one holds.
        </p>
      )}
      {lineups.map((lineup) => (
        <LineupCard key={lineup.publisher} model={model} bridge={bridge} lineup={lineup} />
      ))}
    </section>
  );
}

function LineupCard({ model, bridge, lineup }: { model: AppModel; bridge: PeerBridge; lineup: Lineup }) {
  const [busy, setBusy] = useState(false);
  const [result, setResult] = useState<string | null>(null);
  const get = () => {
    setBusy(true);
    bridge
      .getLineup(lineup.publisher)
      .then(
        (fetch) => setResult(lineupFetchText(fetch)),
        (e) => setResult(errorText(e)),
      )
      .finally(() => setBusy(false));
  };
  const label = `Lineup ${publisherText(lineup)}`;
  return (
    <article className="lineup" aria-label={label}>
      <div className="lineup-head">
        <h2>Tonight's lineup</h2>
        <span className={lineup.organizer ? "publisher organizer" : "publisher"}>{publisherText(lineup)}</span>
        <button disabled={busy} onClick={get}>
          {busy ? "Getting…" : "Get the lineup"}
        </button>
      </div>
      <ol className="lineup-games">
        {lineup.entries.map((entry) => {
          const state = ownState(model, entry);
          return (
            <li key={entry.versionId}>
              <span className="lineup-title">{lineupTitle(entry)}</span>
              <span className={`ready ready-${state}`}>{READY_STATE_LABEL[state]}</span>
            </li>
          );
        })}
      </ol>
      {result && (
        <p className="meta" role="status">
          {result}
        </p>
      )}
    </article>
  );
}

/**
 * The party tab: the ready board (every peer's state per lineup game) and,
 * for an organizer, the lineup editor and ready checks.
 */
export function Party({
  model,
  bridge,
  organizer,
}: {
  model: AppModel;
  bridge: PeerBridge;
  organizer: boolean;
}) {
  const ours = model.lineups.find((l) => l.ours && l.entries.length > 0);
  const [status, setStatus] = useState<string | null>(null);
  const check = (versionId: string, title: string) =>
    bridge.readyCheck(versionId).then(
      () => setStatus(`Ready check sent for ${title}.`),
      (e) => setStatus(errorText(e)),
    );
  const following = model.lineups.find((l) => l.publisher === model.board.publisher);
  return (
    <>
      <section aria-labelledby="board-title">
        <div className="section-head">
          <h2 id="board-title">Ready board</h2>
          {following && <span className="meta">Following the lineup {publisherText(following)}</span>}
        </div>
        {model.board.games.length === 0 ? (
          <p className="empty">
            No lineup yet. Once an organizer publishes tonight's lineup, everyone's state for its
            games shows here.
          </p>
        ) : (
          <ul className="board">
            {model.board.games.map((game) => (
              <li key={game.versionId} aria-label={`Ready board: ${game.title}`}>
                <div className="board-head">
                  <h3>{lineupTitle(game)}</h3>
                  <span className="ready-count">{readyCount(game)}</span>
                  <progress max={Math.max(game.peers.length, 1)} value={game.ready} aria-label={`${game.title} ready`} />
                  {organizer && ours?.entries.some((e) => e.versionId === game.versionId) && (
                    <button className="ghost" onClick={() => check(game.versionId, game.title)}>
                      Ready check
                    </button>
                  )}
                </div>
                <table className="table">
                  <tbody>
                    {game.peers.map((peer) => (
                      <tr key={peer.peerId} className={peer.us ? "us" : undefined}>
                        <td title={peer.peerId}>
                          {peer.name || peer.peerId.slice(0, 8)}
                          {peer.us ? " (you)" : ""}
                        </td>
                        <td className={`ready ready-${peer.state}`}>{boardPeerText(peer)}</td>
                      </tr>
                    ))}
                  </tbody>
                </table>
              </li>
            ))}
          </ul>
        )}
        {status && (
          <p className="meta" role="status">
            {status}
          </p>
        )}
      </section>
      {organizer && <LineupEditor model={model} bridge={bridge} ours={ours} />}
    </>
  );
}

/** The organizer's lineup: games from the catalog, in order, each with an optional time. */
function LineupEditor({ model, bridge, ours }: { model: AppModel; bridge: PeerBridge; ours: Lineup | undefined }) {
  const [draft, setDraftState] = useState<DraftEntry[]>(() => draftOf(ours));
  // Untouched, the draft follows what we published (it may arrive after
  // the tab opened, or be set by the CLI meanwhile).
  const [touched, setTouched] = useState(false);
  const setDraft = (change: (d: DraftEntry[]) => DraftEntry[]) => {
    setTouched(true);
    setDraftState(change);
  };
  const version = ours?.version;
  // Only a new version of our lineup resets an untouched draft.
  useEffect(() => {
    if (!touched) setDraftState(draftOf(ours));
  }, [version]);
  const [pick, setPick] = useState("");
  const [status, setStatus] = useState<string | null>(null);
  const [busy, setBusy] = useState(false);
  const inDraft = new Set(draft.map((e) => e.versionId));
  const choices = libraryEntries(model, "").filter((e) => !e.refused && !inDraft.has(e.versionId));
  const add = () => {
    const entry = choices.find((e) => e.versionId === pick) ?? choices[0];
    if (!entry) return;
    setDraft((d) => [...d, { versionId: entry.versionId, title: entry.title, at: "" }]);
    setPick("");
  };
  const edit = (index: number, at: string) => setDraft((d) => d.map((e, i) => (i === index ? { ...e, at } : e)));
  const publish = (entries: DraftEntry[]) => {
    const problem = draftProblem(entries);
    if (problem) {
      setStatus(problem);
      return;
    }
    setBusy(true);
    bridge
      .publishLineup(draftEntries(entries))
      .then(
        (lineup) => {
          setDraftState(draftOf(lineup));
          setTouched(false);
          setStatus(entries.length ? "Published." : "Lineup cleared.");
        },
        (e) => setStatus(errorText(e)),
      )
      .finally(() => setBusy(false));
  };
  return (
    <section aria-labelledby="editor-title">
      <h2 id="editor-title">Your lineup</h2>
      <p className="hint">
        Pick games from the catalog, put them in the order they are played and give each a time if
        you like. Publish tells every peer.
      </p>
      {draft.length > 0 && (
        <ol className="draft">
          {draft.map((entry, index) => (
            <li key={entry.versionId}>
              <span className="draft-title">{entry.title}</span>
              <input
                aria-label={`Time for ${entry.title}`}
                placeholder="21:00"
                value={entry.at}
                onChange={(e) => edit(index, e.target.value)}
              />
              <button className="ghost" aria-label={`Move ${entry.title} up`} disabled={index === 0} onClick={() => setDraft((d) => moveDraft(d, index, -1))}>
                ↑
              </button>
              <button
                className="ghost"
                aria-label={`Move ${entry.title} down`}
                disabled={index === draft.length - 1}
                onClick={() => setDraft((d) => moveDraft(d, index, 1))}
              >
                ↓
              </button>
              <button className="ghost" aria-label={`Remove ${entry.title}`} onClick={() => setDraft((d) => d.filter((_, i) => i !== index))}>
                ✕
              </button>
            </li>
          ))}
        </ol>
      )}
      <div className="row">
        <select aria-label="Game to add" value={pick} onChange={(e) => setPick(e.target.value)} disabled={choices.length === 0}>
          {choices.length === 0 && <option value="">No more games on the LAN</option>}
          {choices.map((e) => (
            <option key={e.versionId} value={e.versionId}>
              {e.title}
              {e.versionLabel ? ` (v${e.versionLabel})` : ""}
            </option>
          ))}
        </select>
        <button className="ghost" onClick={add} disabled={choices.length === 0}>
          Add to lineup
        </button>
      </div>
      <div className="row">
        <button onClick={() => publish(draft)} disabled={busy || draft.length === 0}>
          Publish
        </button>
        <button className="ghost danger-text" onClick={() => publish([])} disabled={busy || !ours}>
          Clear the lineup
        </button>
        {status && <span role="status">{status}</span>}
      </div>
    </section>
  );
}

/** "Get ready for Quake 3: 1.2 GiB, about 40 s", with Get it unless we are ready. */
export function ReadyCheckNotice({
  model,
  check,
  onGet,
  onDismiss,
}: {
  model: AppModel;
  check: ReadyCheck;
  onGet: () => void;
  onDismiss: () => void;
}) {
  const state = readyCheckState(model, check);
  return (
    <div className={`notice ready-check ready-check-${state}`} role="alert" aria-label={`Ready check: ${check.title}`}>
      <span>{readyCheckText(check, state)}</span>
      <div className="actions">
        {(state === "missing" || state === "outdated") && <button onClick={onGet}>Get it</button>}
        <button className="ghost" aria-label="Dismiss" onClick={onDismiss}>
          ✕
        </button>
      </div>
    </div>
  );
}

/** The window was asked to close while others fetch games only we have complete. */
export function QuitDialog({
  copies,
  onKeep,
  onQuit,
}: {
  copies: LastCopy[];
  onKeep: () => void;
  onQuit: () => void;
}) {
  const panel = useRef<HTMLDivElement>(null);
  useFocusTrap(panel);
  useEffect(() => panel.current?.querySelector<HTMLButtonElement>("button")?.focus(), []);
  const title = copies.length === 1 ? lastCopyText(copies[0]) : "Peers are still fetching games from you";
  return (
    <div className="overlay">
      <div
        className="detail"
        role="alertdialog"
        aria-modal="true"
        aria-labelledby="quit-title"
        ref={panel}
        onKeyDown={(e) => e.key === "Escape" && onKeep()}
      >
        <div className="detail-body">
          <h2 id="quit-title">{title}</h2>
          {copies.length > 1 && (
            <ul>
              {copies.map((c) => (
                <li key={c.versionId}>{lastCopyText(c)}</li>
              ))}
            </ul>
          )}
          <p>
            Only you have {copies.length === 1 ? "it" : "them"} complete. If you quit now, they wait
            until another peer has {copies.length === 1 ? "it" : "them"}.
          </p>
          <div className="actions">
            <button onClick={onKeep}>Keep sharing</button>
            <button className="ghost danger-text" onClick={onQuit}>
              Quit anyway
            </button>
          </div>
        </div>
      </div>
    </div>
  );
}
