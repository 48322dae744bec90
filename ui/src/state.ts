import type {
  BoardPeer,
  CatalogEntry,
  DownloadInfo,
  GameMode,
  LastCopy,
  Lineup,
  LineupFetch,
  PeerEvent,
  PeerInfo,
  ReadyBoard,
  ReadyCheck,
  ReadyState,
  ServiceHealth,
  SourceRate,
} from "./bindings";

export interface RuntimeFailure {
  component: string;
  error: string;
}

export type DownloadPhase = "queued" | "running" | "completed" | "failed" | "cancelled" | "peersGone";

export interface DownloadView {
  versionId: string;
  gameId: string;
  title: string;
  bytesDone: number;
  bytesTotal: number;
  bytesPerSec: number;
  etaSecs: number | null;
  sources: SourceRate[];
  phase: DownloadPhase;
  message: string | null;
}

export interface AppModel {
  health: Record<string, ServiceHealth>;
  failure: RuntimeFailure | null;
  catalog: CatalogEntry[];
  peers: Record<string, PeerInfo>;
  downloads: Record<string, DownloadView>;
  /** Games of our own folder being hashed: bytes done and total. */
  indexing: Record<string, { bytesDone: number; bytesTotal: number }>;
  /** Every lineup on the LAN, ours first; more than one with games: conflicting organizers. */
  lineups: Lineup[];
  board: ReadyBoard;
  /** Ready checks not dismissed yet, one per game, the latest first. */
  readyChecks: ReadyCheck[];
  gameMode: GameMode;
  /** Set while the window waits for "Keep sharing" or "Quit anyway". */
  quitRequest: LastCopy[] | null;
}

export const initialModel: AppModel = {
  health: {},
  failure: null,
  catalog: [],
  peers: {},
  downloads: {},
  indexing: {},
  lineups: [],
  board: { publisher: null, games: [] },
  readyChecks: [],
  gameMode: { active: false, games: [], uploadCap: 0 },
  quitRequest: null,
};

export type Action =
  | { kind: "event"; event: PeerEvent }
  | { kind: "healthSnapshot"; health: ServiceHealth[] }
  | { kind: "catalogSnapshot"; catalog: CatalogEntry[] }
  | { kind: "peersSnapshot"; peers: PeerInfo[] }
  | { kind: "downloadsSnapshot"; downloads: DownloadInfo[] }
  | { kind: "clearDownload"; versionId: string }
  | { kind: "lineupsSnapshot"; lineups: Lineup[] }
  | { kind: "boardSnapshot"; board: ReadyBoard }
  | { kind: "gameModeSnapshot"; gameMode: GameMode }
  | { kind: "dismissReadyCheck"; versionId: string }
  | { kind: "quitRequested"; lastCopies: LastCopy[] }
  | { kind: "keepSharing" };

/** Folds peer events into what the UI shows. Pure: tested without a window. */
export function reduce(model: AppModel, action: Action): AppModel {
  switch (action.kind) {
    case "healthSnapshot":
      return { ...model, health: Object.fromEntries(action.health.map((h) => [h.service, h])) };
    case "catalogSnapshot":
      return { ...model, catalog: action.catalog };
    case "peersSnapshot":
      return { ...model, peers: Object.fromEntries(action.peers.map((p) => [p.peerId, p])) };
    case "downloadsSnapshot": {
      const downloads = { ...model.downloads };
      for (const d of action.downloads) {
        const known = downloads[d.versionId];
        const phase: DownloadPhase = d.state === "queued" ? "queued" : "running";
        downloads[d.versionId] = known
          ? { ...known, phase }
          : { ...newDownload(d.versionId, d.gameId, d.title, 0), phase };
      }
      return { ...model, downloads };
    }
    case "clearDownload": {
      const { [action.versionId]: _, ...rest } = model.downloads;
      return { ...model, downloads: rest };
    }
    case "lineupsSnapshot":
      return { ...model, lineups: action.lineups };
    case "boardSnapshot":
      return { ...model, board: action.board };
    case "gameModeSnapshot":
      return { ...model, gameMode: action.gameMode };
    case "dismissReadyCheck":
      return { ...model, readyChecks: model.readyChecks.filter((c) => c.versionId !== action.versionId) };
    case "quitRequested":
      return { ...model, quitRequest: action.lastCopies };
    case "keepSharing":
      return { ...model, quitRequest: null };
    case "event":
      return reduceEvent(model, action.event);
  }
}

function newDownload(versionId: string, gameId: string, title: string, bytesTotal: number): DownloadView {
  return {
    versionId,
    gameId,
    title,
    bytesDone: 0,
    bytesTotal,
    bytesPerSec: 0,
    etaSecs: null,
    sources: [],
    phase: "running",
    message: null,
  };
}

function updateDownload(model: AppModel, versionId: string, change: Partial<DownloadView>): AppModel {
  const current = model.downloads[versionId];
  if (!current) return model;
  return { ...model, downloads: { ...model.downloads, [versionId]: { ...current, ...change } } };
}

const stopped = { bytesPerSec: 0, etaSecs: null, sources: [] };

function reduceEvent(model: AppModel, event: PeerEvent): AppModel {
  switch (event.type) {
    case "runtimeFailed":
      return { ...model, failure: { component: event.component, error: event.error } };
    case "indexingProgress": {
      const { [event.game]: _, ...others } = model.indexing;
      const done = event.bytesDone >= event.bytesTotal;
      const progress = { bytesDone: event.bytesDone, bytesTotal: event.bytesTotal };
      return { ...model, indexing: done ? others : { ...others, [event.game]: progress } };
    }
    case "libraryChanged": {
      const finished = new Set([...event.added, ...event.updated, ...event.removed]);
      const indexing = Object.fromEntries(Object.entries(model.indexing).filter(([game]) => !finished.has(game)));
      return { ...model, indexing };
    }
    case "healthChanged":
      return { ...model, health: { ...model.health, [event.health.service]: event.health } };
    case "catalogChanged":
      return { ...model, catalog: event.catalog };
    case "peerDiscovered":
      return { ...model, peers: { ...model.peers, [event.peer.peerId]: event.peer } };
    case "peerLost": {
      const peer = model.peers[event.peerId];
      if (!peer) return model;
      const lost: PeerInfo = { ...peer, state: "lost", lastError: event.reason, rttMs: null };
      return { ...model, peers: { ...model.peers, [event.peerId]: lost } };
    }
    case "downloadQueued": {
      const known = model.downloads[event.versionId];
      const view = known ?? newDownload(event.versionId, event.gameId, event.title, 0);
      return {
        ...model,
        downloads: {
          ...model.downloads,
          [event.versionId]: { ...view, ...stopped, phase: "queued", message: null },
        },
      };
    }
    case "downloadStarted": {
      // A resumed download keeps the bytes it had until progress says more.
      const known = model.downloads[event.versionId];
      const view = known ?? newDownload(event.versionId, event.gameId, event.title, event.bytesTotal);
      return {
        ...model,
        downloads: {
          ...model.downloads,
          [event.versionId]: {
            ...view,
            title: event.title,
            bytesTotal: event.bytesTotal,
            phase: "running",
            message: null,
          },
        },
      };
    }
    case "downloadProgress":
      return updateDownload(model, event.versionId, {
        bytesDone: event.bytesDone,
        bytesTotal: event.bytesTotal,
        bytesPerSec: event.bytesPerSec,
        etaSecs: event.etaSecs,
        sources: event.sources,
      });
    case "downloadCompleted": {
      const done = model.downloads[event.versionId];
      return updateDownload(model, event.versionId, {
        ...stopped,
        phase: "completed",
        bytesDone: done?.bytesTotal ?? 0,
        etaSecs: 0,
        message: null,
      });
    }
    case "downloadFailed":
      return updateDownload(model, event.versionId, { ...stopped, phase: "failed", message: event.message });
    case "downloadCancelled":
      return updateDownload(model, event.versionId, {
        ...stopped,
        phase: "cancelled",
        message: "Paused. What was downloaded is kept; Resume goes on from there.",
      });
    case "downloadWaiting":
      return updateDownload(model, event.versionId, { message: event.message });
    case "downloadPeersGone":
      return updateDownload(model, event.versionId, {
        ...stopped,
        phase: "peersGone",
        message: "Every source left. Resume when one is back.",
      });
    case "lineupChanged":
      return { ...model, lineups: event.lineups };
    case "readyBoardChanged":
      return { ...model, board: event.board };
    case "readyCheck": {
      // A second check for the same game replaces the first.
      const others = model.readyChecks.filter((c) => c.versionId !== event.check.versionId);
      return { ...model, readyChecks: [event.check, ...others] };
    }
    case "gameModeChanged":
      return { ...model, gameMode: event.gameMode };
    default:
      return model;
  }
}

/** Lineups that name at least one game: the ones shown. */
export function shownLineups(model: AppModel): Lineup[] {
  return model.lineups.filter((l) => l.entries.length > 0);
}

/** More than one peer published a lineup: they are shown side by side, never merged. */
export function conflictingLineups(model: AppModel): boolean {
  return shownLineups(model).length > 1;
}

/** "Quake 3 · 21:00", or the title alone when no time is set. */
export function lineupTitle(entry: { title: string; at: string | null }): string {
  return entry.at ? `${entry.title} · ${entry.at}` : entry.title;
}

/** "by LAN host (organizer)"; a publisher that left says so. */
export function publisherText(lineup: Lineup): string {
  const name = lineup.ours ? "you" : lineup.publisherName || lineup.publisher.slice(0, 8);
  const roles = [lineup.organizer ? "organizer" : "not an organizer", ...(lineup.present || lineup.ours ? [] : ["left"])];
  return `by ${name} (${roles.join(", ")})`;
}

export const READY_STATE_LABEL: Record<ReadyState, string> = {
  ready: "Ready",
  downloading: "Downloading",
  outdated: "Outdated",
  missing: "Missing",
  playing: "Playing",
};

/**
 * Our own state for a lineup game: our row on the ready board when the
 * board has the game (it changes most often), else the lineup's. A download
 * we just started counts before the peer's next report says so.
 */
export function ownState(model: AppModel, entry: { versionId: string; state: ReadyState }): ReadyState {
  const row = model.board.games.find((g) => g.versionId === entry.versionId)?.peers.find((p) => p.us);
  const state = row?.state ?? entry.state;
  const download = model.downloads[entry.versionId];
  const fetching = download?.phase === "running" || download?.phase === "queued";
  return (state === "missing" || state === "outdated") && fetching ? "downloading" : state;
}

/** "17 / 20 ready". */
export function readyCount(game: { ready: number; peers: unknown[] }): string {
  return `${game.ready} / ${game.peers.length} ready`;
}

/** A ready-board row's state in words: "Downloading 42% · 1 min 5 s left". */
export function boardPeerText(peer: BoardPeer): string {
  const label = READY_STATE_LABEL[peer.state];
  if (peer.state !== "downloading") return label;
  const parts = [label];
  if (peer.percent != null) parts.push(`${Math.floor(peer.percent)}%`);
  if (peer.etaSecs != null) parts.push(formatEta(peer.etaSecs));
  return parts.length > 1 ? `${parts[0]} ${parts.slice(1).join(" · ")}` : label;
}

/** "about 40 s", "about 3 min", "about 1 h 5 min". */
export function formatAbout(secs: number): string {
  if (secs < 60) return `about ${Math.max(1, Math.round(secs))} s`;
  const minutes = Math.round(secs / 60);
  if (minutes < 60) return `about ${minutes} min`;
  return `about ${Math.floor(minutes / 60)} h ${minutes % 60} min`;
}

/**
 * What a ready-check notice says: "Get ready for Quake 3: 1.2 GiB, about
 * 40 s", or that we are ready. `state` is our state now, which may have
 * moved on since the check arrived.
 */
export function readyCheckText(check: ReadyCheck, state: ReadyState = check.state): string {
  if (state === "ready" || state === "playing") return `${check.title} is ready: ${check.publisherName || "the organizer"} called a ready check`;
  if (state === "downloading") return `Getting ready for ${check.title}: downloading`;
  return `Get ready for ${check.title}: ${formatBytes(check.bytesNeeded)}, ${formatAbout(check.etaSecs)}`;
}

/** Our state now for the game of a ready check. */
export function readyCheckState(model: AppModel, check: ReadyCheck): ReadyState {
  const entry = model.lineups.flatMap((l) => l.entries).find((e) => e.versionId === check.versionId);
  return ownState(model, entry ?? check);
}

/** The header's game-mode indicator; null when no game runs. */
export function gameModeText(gameMode: GameMode): string | null {
  if (!gameMode.active) return null;
  return `Game mode: seeding capped to ${formatBytes(gameMode.uploadCap)}/s`;
}

/** "3 peers are still fetching Quake 3 from you". */
export function lastCopyText(copy: LastCopy): string {
  const who = copy.fetching === 1 ? "1 peer is" : `${copy.fetching} peers are`;
  return `${who} still fetching ${copy.title} from you`;
}

/** What "Get the lineup" did, in words. */
export function lineupFetchText(fetch: LineupFetch): string {
  const parts: string[] = [];
  const games = (n: number) => (n === 1 ? "1 game" : `${n} games`);
  if (fetch.queued.length > 0) parts.push(`Queued ${games(fetch.queued.length)}`);
  if (fetch.already > 0) parts.push(`${games(fetch.already)} already here or on the way`);
  if (fetch.unavailable.length > 0) parts.push(`no peer has ${fetch.unavailable.join(", ")} yet`);
  if (fetch.failed.length > 0) parts.push(`not queued: ${fetch.failed.join("; ")}`);
  if (parts.length === 0) return "Nothing to get.";
  const text = parts.join("; ");
  return `${text[0].toUpperCase()}${text.slice(1)}.`;
}

/** One row of the lineup an organizer edits. */
export interface DraftEntry {
  versionId: string;
  title: string;
  at: string;
}

/** The longest time text a lineup entry takes, in bytes (UTF-8). */
export const MAX_AT_BYTES = 32;

/** The draft an organizer starts from: the lineup they published, if any. */
export function draftOf(lineup: Lineup | undefined): DraftEntry[] {
  return (lineup?.entries ?? []).map((e) => ({ versionId: e.versionId, title: e.title, at: e.at ?? "" }));
}

/** The entry at `index` moved by `delta` places (within bounds). */
export function moveDraft(draft: DraftEntry[], index: number, delta: number): DraftEntry[] {
  const to = index + delta;
  if (to < 0 || to >= draft.length) return draft;
  const moved = [...draft];
  [moved[index], moved[to]] = [moved[to], moved[index]];
  return moved;
}

/** Why the draft cannot be published, or null. */
export function draftProblem(draft: DraftEntry[]): string | null {
  const long = draft.find((e) => new TextEncoder().encode(e.at.trim()).length > MAX_AT_BYTES);
  if (long) return `The time of ${long.title} is too long: at most ${MAX_AT_BYTES} bytes.`;
  return null;
}

/** The draft as the publish command takes it; an empty time is none. */
export function draftEntries(draft: DraftEntry[]): { versionId: string; at: string | null }[] {
  return draft.map((e) => ({ versionId: e.versionId, at: e.at.trim() || null }));
}

/**
 * A download's title: the catalog's when it knows the version (a download
 * resumed at start is named by its game id until then).
 */
export function downloadTitle(model: AppModel, d: DownloadView): string {
  return model.catalog.find((e) => e.versionId === d.versionId)?.title ?? d.title;
}

/** Services that are waiting to be restarted: the UI shows "reconnecting". */
export function reconnecting(model: AppModel): string[] {
  return Object.values(model.health)
    .filter((h) => h.state === "backingOff")
    .map((h) => h.service);
}

export type GameState = "installed" | "update" | "downloading" | "queued" | "paused" | "available";

/** The download of this entry, or of the update it points to. */
export function downloadOf(model: AppModel, entry: CatalogEntry): DownloadView | undefined {
  return model.downloads[entry.versionId] ?? (entry.updateTo ? model.downloads[entry.updateTo] : undefined);
}

export function gameState(model: AppModel, entry: CatalogEntry): GameState {
  const download = downloadOf(model, entry);
  if (download?.phase === "running") return "downloading";
  if (download?.phase === "queued") return "queued";
  if (entry.installed && entry.updateTo) return "update";
  if (entry.installed) return "installed";
  if (download && download.phase !== "completed") return "paused";
  return "available";
}

/**
 * What a game's page says beyond its facts, in words: why it cannot be
 * downloaded, which names its sources disagree on, what was cut to fit a
 * limit. The same sentences as the CLI's games list.
 */
export function catalogNotes(entry: CatalogEntry): string[] {
  const notes: string[] = [];
  if (entry.refused) notes.push(`Refused: ${entry.refused}`);
  if (entry.conflict && entry.conflict.gameIds.length > 1) {
    notes.push(
      `The computers sharing this game disagree on its folder name: ${entry.conflict.gameIds
        .map((id) => `\`${id}\``)
        .join(", ")}. Choose the one to install it as.`,
    );
  }
  if (entry.conflict && entry.conflict.titles.length > 1) {
    notes.push(`The computers sharing this game disagree on its title: ${entry.conflict.titles.map((t) => `“${t}”`).join(", ")}.`);
  }
  for (const note of entry.notes) notes.push(`${note[0].toUpperCase()}${note.slice(1)}.`);
  return notes;
}

/** The game ids a download may choose between when the sources disagree. */
export function conflictingIds(entry: CatalogEntry): string[] {
  return entry.conflict && entry.conflict.gameIds.length > 1 ? entry.conflict.gameIds : [];
}

export type LibraryFilter = "all" | "installed" | "available" | "updates" | "downloading";

/**
 * Catalog entries worth a card: installed versions and versions others
 * serve. A newer version of an installed game is shown on the installed
 * card ("Update available"), not as a card of its own.
 */
export function libraryEntries(model: AppModel, search: string, filter: LibraryFilter = "all"): CatalogEntry[] {
  const needle = search.trim().toLowerCase();
  const updates = new Set(model.catalog.filter((e) => e.installed && e.updateTo).map((e) => e.updateTo));
  return model.catalog
    .filter((e) => e.installed || e.sources.length + e.partialSources.length > 0)
    .filter((e) => !updates.has(e.versionId))
    .filter((e) => !needle || e.title.toLowerCase().includes(needle) || e.gameId.includes(needle))
    .filter((e) => {
      const state = gameState(model, e);
      switch (filter) {
        case "all":
          return true;
        case "installed":
          return e.installed;
        case "available":
          return !e.installed;
        case "updates":
          return state === "update";
        case "downloading":
          return state === "downloading" || state === "queued" || state === "paused";
      }
    })
    .sort((a, b) => a.title.localeCompare(b.title));
}

export function formatBytes(bytes: number): string {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let value = bytes;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit += 1;
  }
  return unit === 0 ? `${bytes} B` : `${value.toFixed(1)} ${units[unit]}`;
}

export function formatEta(secs: number): string {
  if (secs < 60) return `${secs} s left`;
  const minutes = Math.floor(secs / 60);
  if (minutes < 60) return `${minutes} min ${secs % 60} s left`;
  return `${Math.floor(minutes / 60)} h ${minutes % 60} min left`;
}

export function players(entry: CatalogEntry): string | null {
  const { minPlayers: min, maxPlayers: max } = entry;
  if (min != null && max != null) return min === max ? `${min} players` : `${min}–${max} players`;
  if (max != null) return `up to ${max} players`;
  if (min != null) return `${min}+ players`;
  return null;
}

/** The message of a command error (`{ code, message }`) or of anything else. */
export function errorText(e: unknown): string {
  if (e && typeof e === "object" && "message" in e) return String((e as { message: unknown }).message);
  return String(e);
}
