import { useEffect, useRef, useState } from "react";
import type { CatalogEntry } from "./bindings";
import type { PeerBridge } from "./bridge";
import { useFocusTrap } from "./focus";
import {
  catalogNotes,
  conflictingIds,
  downloadOf,
  formatBytes,
  formatEta,
  gameState,
  libraryEntries,
  players,
  type AppModel,
  type DownloadView,
  type GameState,
  type LibraryFilter,
} from "./state";
import { useThumbnail } from "./thumbnails";

/** What the library asks the app to do; each answers when it is done. */
export interface GameActions {
  download(target: string): Promise<void>;
  cancel(versionId: string, discard: boolean): Promise<void>;
  play(gameId: string): Promise<void>;
  openFolder(gameId: string): Promise<void>;
  remove(gameId: string): Promise<void>;
}

const STATE_LABEL: Record<GameState, string> = {
  installed: "Installed",
  update: "Update available",
  downloading: "Downloading",
  queued: "Queued",
  paused: "Paused",
  available: "Available",
};

const FILTERS: [LibraryFilter, string][] = [
  ["all", "All"],
  ["installed", "Installed"],
  ["available", "On the LAN"],
  ["updates", "Updates"],
  ["downloading", "Downloading"],
];

export function Library({
  model,
  bridge,
  actions,
}: {
  model: AppModel;
  bridge: PeerBridge;
  actions: GameActions;
}) {
  const [search, setSearch] = useState("");
  const [filter, setFilter] = useState<LibraryFilter>("all");
  const [open, setOpen] = useState<string | null>(null);
  const entries = libraryEntries(model, search, filter);
  const anyGames = libraryEntries(model, "", "all").length > 0;
  const detail = model.catalog.find((e) => e.versionId === open);
  return (
    <section aria-labelledby="library-title">
      <div className="section-head">
        <h2 id="library-title">Library</h2>
        <div className="filters" role="group" aria-label="Show">
          {FILTERS.map(([id, label]) => (
            <button
              key={id}
              className={filter === id ? "chip active" : "chip"}
              aria-pressed={filter === id}
              onClick={() => setFilter(id)}
            >
              {label}
            </button>
          ))}
        </div>
        <input
          type="search"
          placeholder="Search games"
          aria-label="Search games"
          value={search}
          onChange={(e) => setSearch(e.target.value)}
        />
      </div>
      {!anyGames ? (
        <p className="empty">
          No games yet — are you on the party network? Games of the peers around you show up here;
          add a peer by address on the Peers tab, or put game folders into your games folder to
          share them.
        </p>
      ) : entries.length === 0 ? (
        <p className="empty">No game matches. Clear the search or pick another filter.</p>
      ) : (
        <ul className="grid">
          {entries.map((entry) => (
            <GameCard
              key={entry.versionId}
              model={model}
              bridge={bridge}
              entry={entry}
              onOpen={() => setOpen(entry.versionId)}
            />
          ))}
        </ul>
      )}
      {detail && (
        <GameDetail
          model={model}
          bridge={bridge}
          entry={detail}
          actions={actions}
          onClose={() => setOpen(null)}
        />
      )}
    </section>
  );
}

function Cover({ bridge, entry, large }: { bridge: PeerBridge; entry: CatalogEntry; large?: boolean }) {
  const url = useThumbnail(bridge, entry.thumbnail);
  const className = large ? "cover cover-large" : "cover";
  return url ? (
    <img className={className} src={url} alt="" />
  ) : (
    <div className={className} aria-hidden="true">
      {entry.title.slice(0, 2).toUpperCase()}
    </div>
  );
}

function sourceCount(entry: CatalogEntry): number {
  return entry.sources.length + entry.partialSources.length;
}

function GameCard({
  model,
  bridge,
  entry,
  onOpen,
}: {
  model: AppModel;
  bridge: PeerBridge;
  entry: CatalogEntry;
  onOpen: () => void;
}) {
  const state = gameState(model, entry);
  const download = downloadOf(model, entry);
  const sources = sourceCount(entry);
  return (
    <li className="card">
      <button className="card-open" onClick={onOpen} aria-label={`${entry.title}: ${STATE_LABEL[state]}`}>
        <Cover bridge={bridge} entry={entry} />
        <div className="card-body">
          <h3>{entry.title}</h3>
          <p className="meta">
            {formatBytes(entry.totalSize)} · {sources} {sources === 1 ? "source" : "sources"}
            {entry.versionLabel ? ` · v${entry.versionLabel}` : ""}
          </p>
          <p className={`badge badge-${state}`}>{STATE_LABEL[state]}</p>
          {entry.refused && <p className="badge badge-refused">Refused</p>}
          {!entry.refused && entry.conflict && <p className="badge badge-refused">Names disagree</p>}
          {(state === "downloading" || state === "paused") && download && <Progress download={download} />}
        </div>
      </button>
    </li>
  );
}

export function Progress({ download }: { download: DownloadView }) {
  const percent = download.bytesTotal ? (100 * download.bytesDone) / download.bytesTotal : 0;
  return (
    <div className="progress">
      <progress max={100} value={percent} aria-label={`${download.title} progress`} />
      {download.phase === "completed" ? (
        <span>Installed and verified · {formatBytes(download.bytesTotal)}</span>
      ) : download.phase === "running" ? (
        <span>
          {percent.toFixed(0)}% · {formatBytes(download.bytesPerSec)}/s
          {download.etaSecs != null ? ` · ${formatEta(download.etaSecs)}` : ""}
        </span>
      ) : (
        <span>
          {percent.toFixed(0)}% of {formatBytes(download.bytesTotal)}
        </span>
      )}
    </div>
  );
}

/** A game's page: what it is, who has it, and what can be done with it. */
function GameDetail({
  model,
  bridge,
  entry,
  actions,
  onClose,
}: {
  model: AppModel;
  bridge: PeerBridge;
  entry: CatalogEntry;
  actions: GameActions;
  onClose: () => void;
}) {
  const state = gameState(model, entry);
  const download = downloadOf(model, entry);
  const [confirmDelete, setConfirmDelete] = useState(false);
  const [busy, setBusy] = useState(false);
  const panel = useRef<HTMLDivElement>(null);
  useFocusTrap(panel);
  useEffect(() => {
    panel.current?.focus();
  }, []);
  const run = (action: () => Promise<void>) => {
    setBusy(true);
    action().finally(() => setBusy(false));
  };
  const sourceNames = [...entry.sources, ...entry.partialSources].map((id) => {
    const name = model.peers[id]?.displayName || id.slice(0, 8);
    return entry.partialSources.includes(id) ? `${name} (part)` : name;
  });
  const facts: [string, string | null][] = [
    ["Genre", entry.genre],
    ["Players", players(entry)],
    ["Version", entry.versionLabel],
    ["Size", formatBytes(entry.totalSize)],
    ["Sources", sourceNames.length ? sourceNames.join(", ") : "none online"],
  ];
  return (
    <div className="overlay" onClick={onClose}>
      <div
        className="detail"
        role="dialog"
        aria-modal="true"
        aria-labelledby="detail-title"
        tabIndex={-1}
        ref={panel}
        onClick={(e) => e.stopPropagation()}
        onKeyDown={(e) => e.key === "Escape" && onClose()}
      >
        <Cover bridge={bridge} entry={entry} large />
        <div className="detail-body">
          <div className="detail-head">
            <h2 id="detail-title">{entry.title}</h2>
            <button className="ghost" onClick={onClose} aria-label="Close">
              ✕
            </button>
          </div>
          <p className={`badge badge-${state}`}>{STATE_LABEL[state]}</p>
          {entry.description && <p className="description">{entry.description}</p>}
          {catalogNotes(entry).length > 0 && (
            <ul className="warnings" aria-label="Warnings">
              {catalogNotes(entry).map((note) => (
                <li key={note}>{note}</li>
              ))}
            </ul>
          )}
          <dl className="facts">
            {facts
              .filter(([, value]) => value)
              .map(([label, value]) => (
                <div key={label}>
                  <dt>{label}</dt>
                  <dd>{value}</dd>
                </div>
              ))}
          </dl>
          {download && download.phase !== "completed" && <Progress download={download} />}
          {download?.message && <p className="message">{download.message}</p>}
          {confirmDelete ? (
            <div className="confirm" role="alertdialog" aria-label="Confirm delete">
              <p>
                Delete {entry.title} ({formatBytes(entry.totalSize)}) from this computer? Others
                can no longer download it from you.
              </p>
              <div className="actions">
                <button
                  className="danger"
                  disabled={busy}
                  onClick={() => run(() => actions.remove(entry.gameId).then(onClose))}
                >
                  Delete
                </button>
                <button className="ghost" onClick={() => setConfirmDelete(false)}>
                  Keep
                </button>
              </div>
            </div>
          ) : (
            <div className="actions">
              {state === "available" && !entry.refused && conflictingIds(entry).length === 0 && (
                <button disabled={busy} onClick={() => run(() => actions.download(entry.versionId))}>
                  Download
                </button>
              )}
              {state === "available" &&
                !entry.refused &&
                conflictingIds(entry).map((id) => (
                  <button key={id} disabled={busy} onClick={() => run(() => actions.download(`${entry.versionId}:${id}`))}>
                    Download as {id}
                  </button>
                ))}
              {state === "update" && entry.updateTo && (
                <button disabled={busy} onClick={() => run(() => actions.download(entry.updateTo!))}>
                  Update
                </button>
              )}
              {(state === "installed" || state === "update") && (
                <>
                  <button disabled={busy} onClick={() => run(() => actions.play(entry.gameId))}>
                    Play
                  </button>
                  <button className="ghost" onClick={() => actions.openFolder(entry.gameId)}>
                    Open folder
                  </button>
                  <button className="ghost danger-text" onClick={() => setConfirmDelete(true)}>
                    Delete
                  </button>
                </>
              )}
              {(state === "downloading" || state === "queued") && download && (
                <button className="ghost" onClick={() => run(() => actions.cancel(download.versionId, false))}>
                  Cancel
                </button>
              )}
              {state === "paused" && download && (
                <>
                  <button disabled={busy} onClick={() => run(() => actions.download(download.versionId))}>
                    Resume
                  </button>
                  <button
                    className="ghost danger-text"
                    onClick={() => run(() => actions.cancel(download.versionId, true))}
                  >
                    Discard download
                  </button>
                </>
              )}
            </div>
          )}
        </div>
      </div>
    </div>
  );
}
