import type {
  CatalogEntry,
  DownloadInfo,
  PeerEvent,
  PeerInfo,
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
}

export const initialModel: AppModel = {
  health: {},
  failure: null,
  catalog: [],
  peers: {},
  downloads: {},
  indexing: {},
};

export type Action =
  | { kind: "event"; event: PeerEvent }
  | { kind: "healthSnapshot"; health: ServiceHealth[] }
  | { kind: "catalogSnapshot"; catalog: CatalogEntry[] }
  | { kind: "peersSnapshot"; peers: PeerInfo[] }
  | { kind: "downloadsSnapshot"; downloads: DownloadInfo[] }
  | { kind: "clearDownload"; versionId: string };

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
    default:
      return model;
  }
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
