import type { CatalogEntry, PeerEvent, PeerInfo, ServiceHealth, SourceRate } from "./types";

export interface RuntimeFailure {
  component: string;
  error: string;
}

export type DownloadPhase = "running" | "completed" | "failed" | "cancelled" | "peersGone";

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
}

export const initialModel: AppModel = {
  health: {},
  failure: null,
  catalog: [],
  peers: {},
  downloads: {},
};

export type Action =
  | { kind: "event"; event: PeerEvent }
  | { kind: "healthSnapshot"; health: ServiceHealth[] }
  | { kind: "catalogSnapshot"; catalog: CatalogEntry[] }
  | { kind: "peersSnapshot"; peers: PeerInfo[] };

/** Folds peer events into what the UI shows. Pure: tested without a window. */
export function reduce(model: AppModel, action: Action): AppModel {
  switch (action.kind) {
    case "healthSnapshot":
      return { ...model, health: Object.fromEntries(action.health.map((h) => [h.service, h])) };
    case "catalogSnapshot":
      return { ...model, catalog: action.catalog };
    case "peersSnapshot":
      return { ...model, peers: Object.fromEntries(action.peers.map((p) => [p.peerId, p])) };
    case "event":
      return reduceEvent(model, action.event);
  }
}

function updateDownload(
  model: AppModel,
  versionId: string,
  change: Partial<DownloadView>,
): AppModel {
  const current = model.downloads[versionId];
  if (!current) return model;
  return { ...model, downloads: { ...model.downloads, [versionId]: { ...current, ...change } } };
}

function reduceEvent(model: AppModel, event: PeerEvent): AppModel {
  switch (event.type) {
    case "runtimeFailed":
      return { ...model, failure: { component: event.component, error: event.error } };
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
    case "downloadStarted":
      return {
        ...model,
        downloads: {
          ...model.downloads,
          [event.versionId]: {
            versionId: event.versionId,
            gameId: event.gameId,
            title: event.title,
            bytesDone: 0,
            bytesTotal: event.bytesTotal,
            bytesPerSec: 0,
            etaSecs: null,
            sources: [],
            phase: "running",
            message: null,
          },
        },
      };
    case "downloadProgress":
      return updateDownload(model, event.versionId, {
        bytesDone: event.bytesDone,
        bytesTotal: event.bytesTotal,
        bytesPerSec: event.bytesPerSec,
        etaSecs: event.etaSecs,
        sources: event.sources,
      });
    case "downloadCompleted":
      return updateDownload(model, event.versionId, { phase: "completed", etaSecs: 0 });
    case "downloadFailed":
      return updateDownload(model, event.versionId, { phase: "failed", message: event.message });
    case "downloadCancelled":
      return updateDownload(model, event.versionId, { phase: "cancelled" });
    case "downloadPeersGone":
      return updateDownload(model, event.versionId, {
        phase: "peersGone",
        message: "Every source left. Resume when one is back.",
      });
    default:
      return model;
  }
}

/** Services that are waiting to be restarted: the UI shows "reconnecting". */
export function reconnecting(model: AppModel): string[] {
  return Object.values(model.health)
    .filter((h) => h.state === "backingOff")
    .map((h) => h.service);
}

export type GameState = "installed" | "update" | "downloading" | "available";

export function gameState(model: AppModel, entry: CatalogEntry): GameState {
  const download = model.downloads[entry.versionId];
  if (download && download.phase === "running") return "downloading";
  if (entry.installed && entry.updateTo) return "update";
  if (entry.installed) return "installed";
  return "available";
}

/** Catalog entries worth a card: installed versions and versions others serve. */
export function libraryEntries(model: AppModel, search: string): CatalogEntry[] {
  const needle = search.trim().toLowerCase();
  return model.catalog
    .filter((e) => e.installed || e.sources.length + e.partialSources.length > 0)
    .filter((e) => !needle || e.title.toLowerCase().includes(needle) || e.gameId.includes(needle));
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
