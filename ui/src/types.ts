// Mirrors of the Rust types the desktop shell sends (lanspread_peer events,
// health, catalog, peers, downloads). Field names are the serde camelCase ones.

export type ServiceState = "starting" | "running" | "backingOff" | "failed" | "stopped";

export interface ServiceHealth {
  service: string;
  policy: "required" | "restart" | "bestEffort";
  state: ServiceState;
  restarts: number;
  lastError: string | null;
  lastHeartbeatMs: number | null;
}

export interface CatalogEntry {
  gameId: string;
  versionId: string;
  title: string;
  description: string | null;
  genre: string | null;
  minPlayers: number | null;
  maxPlayers: number | null;
  versionLabel: string | null;
  totalSize: number;
  thumbnail: string | null;
  sources: string[];
  partialSources: string[];
  installed: boolean;
  updateTo: string | null;
}

export interface PeerInfo {
  peerId: string;
  displayName: string;
  addr: string | null;
  state: "connected" | "lost" | "incompatible";
  rttMs: number | null;
  games: number;
  source: "manual" | "mdns" | "exchange" | "incoming";
  lastError: string | null;
}

export interface SourceRate {
  peerId: string;
  bytesPerSec: number;
}

export type PeerEvent =
  | { type: "runtimeFailed"; component: string; error: string }
  | { type: "healthChanged"; health: ServiceHealth }
  | { type: "indexingProgress"; game: string; bytesDone: number; bytesTotal: number }
  | { type: "libraryChanged"; added: string[]; updated: string[]; removed: string[] }
  | { type: "peerDiscovered"; peer: PeerInfo }
  | { type: "peerLost"; peerId: string; reason: string }
  | { type: "catalogChanged"; catalog: CatalogEntry[] }
  | { type: "downloadStarted"; versionId: string; gameId: string; title: string; bytesTotal: number }
  | {
      type: "downloadProgress";
      versionId: string;
      gameId: string;
      bytesDone: number;
      bytesTotal: number;
      bytesPerSec: number;
      etaSecs: number | null;
      sources: SourceRate[];
    }
  | { type: "downloadCompleted"; versionId: string; gameId: string }
  | { type: "downloadFailed"; versionId: string; gameId: string; code: string; message: string }
  | { type: "downloadCancelled"; versionId: string; gameId: string }
  | { type: "downloadPeersGone"; versionId: string; gameId: string }
  | { type: "sourceBanned"; versionId: string; peerId: string; reason: string };

export interface Diagnostics {
  peerId: string;
  boundAddr: string;
  mdnsEnabled: boolean;
  discovery: ServiceHealth | null;
  interfaces: { name: string; addr: string; usedForDiscovery: boolean }[];
  peers: PeerInfo[];
  addresses: { addr: string; expectedPeerId: string | null; source: string; lastError: string | null }[];
  hints: string[];
}
