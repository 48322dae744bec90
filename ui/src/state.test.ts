import { describe, expect, it } from "vitest";
import type { PeerEvent } from "./bindings";
import { entry, running } from "./fixtures";
import { downloadTitle, formatEta, gameState, initialModel, libraryEntries, players, reconnecting, reduce, type AppModel } from "./state";

const apply = (model: AppModel, ...events: PeerEvent[]) =>
  events.reduce((m, event) => reduce(m, { kind: "event", event }), model);

const vid = "cd".repeat(32);

describe("reduce", () => {
  it("records a runtime failure", () => {
    const model = apply(initialModel, { type: "runtimeFailed", component: "quic-server", error: "port in use" });
    expect(model.failure).toEqual({ component: "quic-server", error: "port in use" });
  });

  it("lists services backing off as reconnecting", () => {
    let model = reduce(initialModel, { kind: "healthSnapshot", health: [running("discovery")] });
    expect(reconnecting(model)).toEqual([]);
    model = apply(model, { type: "healthChanged", health: { ...running("discovery"), state: "backingOff", restarts: 1 } });
    expect(reconnecting(model)).toEqual(["discovery"]);
  });

  it("follows a download from the queue to completion", () => {
    let model = apply(initialModel, { type: "downloadQueued", versionId: vid, gameId: "q3", title: "Quake III" });
    expect(model.downloads[vid].phase).toBe("queued");
    expect(gameState(model, entry({ versionId: vid }))).toBe("queued");
    model = apply(
      model,
      { type: "downloadStarted", versionId: vid, gameId: "q3", title: "Quake III", bytesTotal: 100 },
      {
        type: "downloadProgress",
        versionId: vid,
        gameId: "q3",
        bytesDone: 40,
        bytesTotal: 100,
        bytesPerSec: 10,
        etaSecs: 6,
        sources: [{ peerId: "p", bytesPerSec: 10 }],
      },
    );
    expect(model.downloads[vid]).toMatchObject({ bytesDone: 40, etaSecs: 6, phase: "running" });
    expect(gameState(model, entry({ versionId: vid }))).toBe("downloading");
    const done = apply(model, { type: "downloadCompleted", versionId: vid, gameId: "q3" });
    expect(done.downloads[vid]).toMatchObject({ phase: "completed", bytesDone: 100, bytesPerSec: 0, sources: [] });
  });

  it("says why a verified update waits, until it is installed", () => {
    const started = apply(initialModel, { type: "downloadStarted", versionId: vid, gameId: "q3", title: "Quake III", bytesTotal: 100 });
    const message = "Quake III is running: the update is verified and installs when the game exits";
    const waiting = apply(started, { type: "downloadWaiting", versionId: vid, gameId: "q3", message });
    expect(waiting.downloads[vid]).toMatchObject({ phase: "running", message });
    const done = apply(waiting, { type: "downloadCompleted", versionId: vid, gameId: "q3" });
    expect(done.downloads[vid]).toMatchObject({ phase: "completed", message: null });
  });

  it("keeps a failed, cancelled or abandoned download resumable", () => {
    const started = apply(initialModel, {
      type: "downloadStarted",
      versionId: vid,
      gameId: "q3",
      title: "Quake III",
      bytesTotal: 100,
    });
    const failed = apply(started, { type: "downloadFailed", versionId: vid, gameId: "q3", code: "noSpace", message: "disk full" });
    expect(failed.downloads[vid]).toMatchObject({ phase: "failed", message: "disk full" });
    const cancelled = apply(started, { type: "downloadCancelled", versionId: vid, gameId: "q3" });
    expect(cancelled.downloads[vid].phase).toBe("cancelled");
    const gone = apply(started, { type: "downloadPeersGone", versionId: vid, gameId: "q3" });
    expect(gone.downloads[vid].message).toMatch(/Every source left/);
    for (const model of [failed, cancelled, gone]) {
      expect(gameState(model, entry({ versionId: vid }))).toBe("paused");
    }
  });

  it("takes running and queued downloads from a snapshot", () => {
    const model = reduce(initialModel, {
      kind: "downloadsSnapshot",
      downloads: [
        { versionId: vid, gameId: "q3", title: "Quake III", state: "running" },
        { versionId: "ef".repeat(32), gameId: "ut", title: "Unreal", state: "queued" },
      ],
    });
    expect(Object.values(model.downloads).map((d) => [d.title, d.phase])).toEqual([
      ["Quake III", "running"],
      ["Unreal", "queued"],
    ]);
  });

  it("tracks games being prepared for sharing until the library has them", () => {
    let model = apply(initialModel, { type: "indexingProgress", game: "q3", bytesDone: 10, bytesTotal: 100 });
    expect(model.indexing).toEqual({ q3: { bytesDone: 10, bytesTotal: 100 } });
    model = apply(model, { type: "libraryChanged", added: ["q3"], updated: [], removed: [] });
    expect(model.indexing).toEqual({});
    model = apply(model, { type: "indexingProgress", game: "ut", bytesDone: 100, bytesTotal: 100 });
    expect(model.indexing).toEqual({});
  });

  it("names a resumed download by the catalog's title once it is known", () => {
    let model = apply(initialModel, { type: "downloadQueued", versionId: vid, gameId: "q3", title: "q3" });
    expect(downloadTitle(model, model.downloads[vid])).toBe("q3");
    model = reduce(model, { kind: "catalogSnapshot", catalog: [entry({ versionId: vid, title: "Quake III" })] });
    expect(downloadTitle(model, model.downloads[vid])).toBe("Quake III");
  });

  it("marks a lost peer", () => {
    let model = apply(initialModel, {
      type: "peerDiscovered",
      peer: { peerId: "p1", displayName: "host", addr: "10.0.0.2:27600", state: "connected", rttMs: 0.4, games: 3, source: "mdns", lastError: null },
    });
    model = apply(model, { type: "peerLost", peerId: "p1", reason: "no answer" });
    expect(model.peers.p1).toMatchObject({ state: "lost", lastError: "no answer", rttMs: null });
  });
});

describe("library", () => {
  const installed = entry({ gameId: "q3", title: "Quake III", versionId: "01".repeat(32), installed: true, sources: [] });
  const newer = entry({ gameId: "q3", title: "Quake III", versionId: "02".repeat(32), versionLabel: "1.32" });
  const withUpdate = { ...installed, updateTo: newer.versionId };
  const other = entry();
  const model = reduce(initialModel, { kind: "catalogSnapshot", catalog: [other, withUpdate, newer] });

  it("shows an update on the installed game's card, not as a card of its own", () => {
    expect(libraryEntries(model, "").map((e) => e.versionId)).toEqual([other.versionId, installed.versionId]);
    expect(gameState(model, withUpdate)).toBe("update");
  });

  it("filters and searches", () => {
    expect(libraryEntries(model, "", "installed").map((e) => e.title)).toEqual(["Quake III"]);
    expect(libraryEntries(model, "", "available").map((e) => e.title)).toEqual(["OpenArena"]);
    expect(libraryEntries(model, "", "updates").map((e) => e.title)).toEqual(["Quake III"]);
    expect(libraryEntries(model, "quake", "all").map((e) => e.title)).toEqual(["Quake III"]);
    expect(libraryEntries(model, "", "downloading")).toEqual([]);
  });

  it("says players and time left in words", () => {
    expect(players(entry({ minPlayers: 2, maxPlayers: 16 }))).toBe("2–16 players");
    expect(players(entry({ minPlayers: null, maxPlayers: 16 }))).toBe("up to 16 players");
    expect(players(entry({ minPlayers: null, maxPlayers: null }))).toBe(null);
    expect(formatEta(42)).toBe("42 s left");
    expect(formatEta(125)).toBe("2 min 5 s left");
    expect(formatEta(3720)).toBe("1 h 2 min left");
  });
});
