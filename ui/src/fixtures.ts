import type { BoardGame, BoardPeer, CatalogEntry, Lineup, LineupEntry, ReadyCheck, ServiceHealth } from "./bindings";

// Test data shared by the UI tests.

export const running = (service: string): ServiceHealth => ({
  service,
  policy: "restart",
  state: "running",
  restarts: 0,
  lastError: null,
  lastHeartbeatMs: 1,
});

export const entry = (over: Partial<CatalogEntry> = {}): CatalogEntry => ({
  gameId: "openarena",
  versionId: "ab".repeat(32),
  title: "OpenArena",
  description: null,
  genre: "Shooter",
  minPlayers: null,
  maxPlayers: 16,
  versionLabel: "0.8.8",
  totalSize: 3 * 1024 * 1024,
  thumbnail: null,
  sources: ["peer1"],
  partialSources: [],
  installed: false,
  updateTo: null,
  conflict: null,
  refused: null,
  notes: [],
  ...over,
});

export const q3 = "a1".repeat(32);
export const ut = "b2".repeat(32);

export const lineupEntry = (over: Partial<LineupEntry> = {}): LineupEntry => ({
  versionId: q3,
  gameId: "quake3",
  title: "Quake 3",
  at: "21:00",
  totalSize: 1288490189,
  state: "missing",
  ...over,
});

export const lineup = (over: Partial<Lineup> = {}): Lineup => ({
  publisher: "hostpeeraaaaaaaaaaaaaaaaaa",
  publisherName: "LAN host",
  ours: false,
  organizer: true,
  present: true,
  version: 1,
  entries: [lineupEntry(), lineupEntry({ versionId: ut, gameId: "ut99", title: "Unreal Tournament", at: null, state: "ready" })],
  ...over,
});

export const boardPeer = (over: Partial<BoardPeer> = {}): BoardPeer => ({
  peerId: "anapeeraaaaaaaaaaaaaaaaaaa",
  name: "ana",
  us: true,
  state: "missing",
  percent: null,
  etaSecs: null,
  ...over,
});

export const boardGame = (over: Partial<BoardGame> = {}): BoardGame => ({
  versionId: q3,
  gameId: "quake3",
  title: "Quake 3",
  at: "21:00",
  ready: 1,
  peers: [
    boardPeer(),
    boardPeer({ peerId: "hostpeeraaaaaaaaaaaaaaaaaa", name: "LAN host", us: false, state: "ready" }),
    boardPeer({ peerId: "bobpeeraaaaaaaaaaaaaaaaaaa", name: "bob", us: false, state: "downloading", percent: 42.5, etaSecs: 65 }),
  ],
  ...over,
});

export const readyCheck = (over: Partial<ReadyCheck> = {}): ReadyCheck => ({
  publisher: "hostpeeraaaaaaaaaaaaaaaaaa",
  publisherName: "LAN host",
  versionId: q3,
  gameId: "quake3",
  title: "Quake 3",
  bytesNeeded: 1288490189,
  etaSecs: 40,
  state: "missing",
  ...over,
});
