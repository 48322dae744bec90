import { describe, expect, it } from "vitest";
import type { PeerEvent } from "./bindings";
import { boardGame, boardPeer, entry, lineup, lineupEntry, q3, readyCheck, running, ut } from "./fixtures";
import {
  boardPeerText,
  conflictingLineups,
  downloadTitle,
  draftEntries,
  draftOf,
  draftProblem,
  formatAbout,
  formatEta,
  gameModeText,
  gameState,
  initialModel,
  lastCopyText,
  libraryEntries,
  lineupFetchText,
  lineupTitle,
  moveDraft,
  ownState,
  players,
  publisherText,
  readyCheckState,
  readyCheckText,
  readyCount,
  reconnecting,
  reduce,
  shownLineups,
  type AppModel,
} from "./state";

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

describe("party", () => {
  it("takes lineups, the board and game mode from events and snapshots", () => {
    let model = reduce(initialModel, { kind: "lineupsSnapshot", lineups: [lineup()] });
    expect(shownLineups(model)).toHaveLength(1);
    model = apply(model, { type: "lineupChanged", lineups: [lineup({ ours: true, entries: [] }), lineup()] });
    // Our withdrawn (empty) lineup is not shown, so nothing conflicts.
    expect(shownLineups(model).map((l) => l.publisherName)).toEqual(["LAN host"]);
    expect(conflictingLineups(model)).toBe(false);
    model = apply(model, { type: "lineupChanged", lineups: [lineup(), lineup({ publisher: "otherpeeraaaaaaaaaaaaaaaaa", publisherName: "bob", organizer: false })] });
    expect(conflictingLineups(model)).toBe(true);

    model = apply(model, { type: "readyBoardChanged", board: { publisher: lineup().publisher, games: [boardGame()] } });
    expect(model.board.games[0].peers).toHaveLength(3);
    model = reduce(model, { kind: "boardSnapshot", board: { publisher: null, games: [] } });
    expect(model.board.games).toEqual([]);

    model = apply(model, { type: "gameModeChanged", gameMode: { active: true, games: ["quake3"], uploadCap: 1048576 } });
    expect(gameModeText(model.gameMode)).toBe("Game mode: seeding capped to 1.0 MiB/s");
    model = reduce(model, { kind: "gameModeSnapshot", gameMode: { active: false, games: [], uploadCap: 0 } });
    expect(gameModeText(model.gameMode)).toBe(null);
  });

  it("keeps one ready check per game, the latest first, until dismissed", () => {
    let model = apply(initialModel, { type: "readyCheck", check: readyCheck() });
    model = apply(model, { type: "readyCheck", check: readyCheck({ versionId: ut, title: "Unreal Tournament" }) });
    model = apply(model, { type: "readyCheck", check: readyCheck({ etaSecs: 12 }) });
    expect(model.readyChecks.map((c) => [c.title, c.etaSecs])).toEqual([
      ["Quake 3", 12],
      ["Unreal Tournament", 40],
    ]);
    model = reduce(model, { kind: "dismissReadyCheck", versionId: q3 });
    expect(model.readyChecks.map((c) => c.title)).toEqual(["Unreal Tournament"]);
  });

  it("remembers a quit request until the player keeps sharing", () => {
    const copies = [{ versionId: q3, gameId: "quake3", title: "Quake 3", fetching: 3 }];
    let model = reduce(initialModel, { kind: "quitRequested", lastCopies: copies });
    expect(model.quitRequest).toEqual(copies);
    model = reduce(model, { kind: "keepSharing" });
    expect(model.quitRequest).toBe(null);
    expect(lastCopyText(copies[0])).toBe("3 peers are still fetching Quake 3 from you");
    expect(lastCopyText({ ...copies[0], fetching: 1 })).toBe("1 peer is still fetching Quake 3 from you");
  });

  it("takes our state from our board row, and a download we just started", () => {
    const entry = lineupEntry();
    expect(ownState(initialModel, entry)).toBe("missing");
    const onBoard = apply(initialModel, {
      type: "readyBoardChanged",
      board: { publisher: null, games: [boardGame({ peers: [boardPeer({ state: "ready" })] })] },
    });
    expect(ownState(onBoard, entry)).toBe("ready");
    const queued = apply(initialModel, { type: "downloadQueued", versionId: q3, gameId: "quake3", title: "Quake 3" });
    expect(ownState(queued, entry)).toBe("downloading");
    expect(ownState(queued, lineupEntry({ state: "ready" }))).toBe("ready");
    expect(readyCheckState(queued, readyCheck())).toBe("downloading");
  });

  it("says lineups, the board and ready checks in words", () => {
    expect(lineupTitle(lineupEntry())).toBe("Quake 3 · 21:00");
    expect(lineupTitle(lineupEntry({ at: null }))).toBe("Quake 3");
    expect(publisherText(lineup())).toBe("by LAN host (organizer)");
    expect(publisherText(lineup({ organizer: false, present: false }))).toBe("by LAN host (not an organizer, left)");
    expect(publisherText(lineup({ ours: true, present: false }))).toBe("by you (organizer)");
    expect(readyCount({ ready: 17, peers: new Array(20) })).toBe("17 / 20 ready");
    expect(boardPeerText(boardPeer({ state: "downloading", percent: 42.5, etaSecs: 65 }))).toBe("Downloading 42% · 1 min 5 s left");
    expect(boardPeerText(boardPeer({ state: "downloading" }))).toBe("Downloading");
    expect(boardPeerText(boardPeer({ state: "outdated" }))).toBe("Outdated");
    expect(readyCheckText(readyCheck())).toBe("Get ready for Quake 3: 1.2 GiB, about 40 s");
    expect(readyCheckText(readyCheck(), "ready")).toBe("Quake 3 is ready: LAN host called a ready check");
    expect(formatAbout(0.4)).toBe("about 1 s");
    expect(formatAbout(200)).toBe("about 3 min");
    expect(formatAbout(3900)).toBe("about 1 h 5 min");
    expect(lineupFetchText({ queued: [q3, ut], already: 1, unavailable: ["doom"], failed: [] })).toBe(
      "Queued 2 games; 1 game already here or on the way; no peer has doom yet.",
    );
    expect(lineupFetchText({ queued: [], already: 2, unavailable: [], failed: [] })).toBe("2 games already here or on the way.");
    expect(lineupFetchText({ queued: [], already: 0, unavailable: [], failed: ["Quake 3: not enough space"] })).toBe(
      "Not queued: Quake 3: not enough space.",
    );
    expect(lineupFetchText({ queued: [], already: 0, unavailable: [], failed: [] })).toBe("Nothing to get.");
  });

  it("edits a lineup draft: order, times, bounds", () => {
    const draft = draftOf(lineup());
    expect(draft.map((e) => [e.title, e.at])).toEqual([
      ["Quake 3", "21:00"],
      ["Unreal Tournament", ""],
    ]);
    const moved = moveDraft(draft, 1, -1);
    expect(moved.map((e) => e.title)).toEqual(["Unreal Tournament", "Quake 3"]);
    expect(moveDraft(draft, 0, -1)).toBe(draft);
    expect(moveDraft(draft, 1, 1)).toBe(draft);
    expect(draftEntries(moved)).toEqual([
      { versionId: ut, at: null },
      { versionId: q3, at: "21:00" },
    ]);
    expect(draftProblem(draft)).toBe(null);
    // 11 three-byte characters: 33 bytes.
    expect(draftProblem([{ ...draft[0], at: "午".repeat(11) }])).toMatch(/too long: at most 32 bytes/);
  });
});
