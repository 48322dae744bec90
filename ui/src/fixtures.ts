import type { CatalogEntry, ServiceHealth } from "./bindings";

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
