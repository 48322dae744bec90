import { act, fireEvent, render, screen, waitFor, within } from "@testing-library/react";
import { describe, expect, it, vi } from "vitest";
import { App } from "./App";
import type { CatalogEntry, Lineup, LineupDraft, PeerEvent, QuitRequested, ReadyBoard, ServiceHealth, Settings, SettingsView } from "./bindings";
import type { PeerBridge, RuntimeFailed } from "./bridge";
import { boardGame, boardPeer, entry, lineup, q3, readyCheck, running, ut } from "./fixtures";

const savedSettings: Settings = {
  gamesDir: "/home/ana/games",
  displayName: "ana",
  uploadLimit: 0,
  partyKey: "",
  parallelDownloads: 2,
  organizer: false,
  keepReady: false,
  gameModeUploadPercent: 10,
};

function view(over: Partial<SettingsView> = {}): SettingsView {
  return { settings: savedSettings, firstRun: false, gamesDir: "/home/ana/games", problem: null, ...over };
}

interface Party {
  lineups?: Lineup[];
  board?: ReadyBoard;
}

function fakeBridge(catalog: CatalogEntry[] = [], health: ServiceHealth[] = [], settings = view(), party: Party = {}) {
  let handler: ((e: PeerEvent) => void) | null = null;
  let failureHandler: ((e: RuntimeFailed) => void) | null = null;
  let quitHandler: ((e: QuitRequested) => void) | null = null;
  const bridge: PeerBridge = {
    health: async () => health,
    catalog: async () => catalog,
    peers: async () => [],
    downloads: async () => [],
    download: vi.fn(async (target: string) => target),
    cancelDownload: vi.fn(async () => true),
    addPeer: vi.fn(async () => {}),
    diagnostics: async () => ({
      peerId: "abc",
      boundAddr: "0.0.0.0:27600",
      mdnsEnabled: true,
      discovery: null,
      interfaces: [
        { name: "eth0", addr: "10.0.0.2", usedForDiscovery: true, skippedBecause: null },
      ],
      peers: [],
      addresses: [],
      udpBuffers: { asked: 8388608, recv: 425984, send: 425984 },
      firewall: null,
      hints: ["No peer connected. Allow UDP port 27600 through the firewall."],
    }),
    thumbnail: vi.fn(async () => new Uint8Array([0x89, 0x50]).buffer),
    play: vi.fn(async () => {}),
    openGameFolder: vi.fn(async () => {}),
    deleteGame: vi.fn(async () => {}),
    settings: async () => settings,
    saveSettings: vi.fn(async (s: Settings) => view({ settings: s })),
    pickGamesFolder: vi.fn(async () => "/mnt/big/games"),
    openLogFolder: vi.fn(async () => "/home/ana/.local/share/lanspread/logs"),
    lineups: async () => party.lineups ?? [],
    publishLineup: vi.fn(async (entries: LineupDraft[]) => lineup({
      ours: true,
      publisherName: "ana",
      entries: entries.map((e) => {
        const game = catalog.find((c) => c.versionId === e.versionId)!;
        return { versionId: e.versionId, gameId: game.gameId, title: game.title, at: e.at, totalSize: game.totalSize, state: "ready" as const };
      }),
    })),
    getLineup: vi.fn(async () => ({ queued: [q3], already: 1, unavailable: ["doom"], failed: [] })),
    readyBoard: async () => party.board ?? { publisher: null, games: [] },
    readyCheck: vi.fn(async () => {}),
    lastCopies: async () => [],
    gameMode: async () => ({ active: false, games: [], uploadCap: 0 }),
    quit: vi.fn(async () => {}),
    onQuitRequested: async (h) => {
      quitHandler = h;
      return () => {
        quitHandler = null;
      };
    },
    onEvent: async (h) => {
      handler = h;
      return () => {
        handler = null;
      };
    },
    onRuntimeFailed: async (h) => {
      failureHandler = h;
      return () => {
        failureHandler = null;
      };
    },
  };
  return {
    bridge,
    /** An event on `peer-event`. */
    emit: (e: PeerEvent) => act(() => handler!(e)),
    /** An event on `peer-runtime-failed`, as the shell sends failures. */
    fail: (e: RuntimeFailed) => act(() => failureHandler!(e)),
    /** The shell's `quit-requested`: the window was asked to close. */
    askQuit: (e: QuitRequested) => act(() => quitHandler!(e)),
  };
}

async function openGame(title: RegExp) {
  fireEvent.click(await screen.findByRole("button", { name: title }));
  return screen.getByRole("dialog");
}

describe("App", () => {
  // Regression: the UI listened to `peer-event` only, while the contract
  // names `peer-runtime-failed` for failures; the banner showed only because
  // the shell sent them on both. Nothing arrives on `peer-event` here.
  it("shows a banner when the runtime fails, told on peer-runtime-failed", async () => {
    const { bridge, fail } = fakeBridge([], [running("quic-server")]);
    render(<App bridge={bridge} />);
    await screen.findByText(/are you on the party network/);
    expect(screen.queryByRole("alert")).not.toBeInTheDocument();
    fail({ type: "runtimeFailed", component: "quic-server", error: "address in use" });
    const banner = screen.getByRole("alert");
    expect(banner).toHaveTextContent("quic-server failed");
    expect(banner).toHaveTextContent("can no longer share");
  });

  it("shows a card per game with its picture, size, sources and state", async () => {
    const { bridge } = fakeBridge([entry({ thumbnail: "77".repeat(32) })]);
    const { container } = render(<App bridge={bridge} />);
    const card = await screen.findByRole("button", { name: "OpenArena: Available" });
    expect(card).toHaveTextContent("3.0 MiB · 1 source · v0.8.8");
    await waitFor(() => expect(container.querySelector("img.cover")).toHaveAttribute("src", expect.stringMatching(/^blob:/)));
    expect(bridge.thumbnail).toHaveBeenCalledWith("77".repeat(32));
  });

  // Issue 13: a refused game, names that disagree and cut text are said in
  // words; a refused game has no Download button, and a disagreement is
  // settled by the user's choice of folder name.
  it("says why a game is refused and lets the user choose between disagreeing names", async () => {
    const refused = entry({ title: "Escape", gameId: "../x", versionId: "01".repeat(32), refused: "game id `../x` is not a plain folder name: `../x` starts with a dot or holds a path separator" });
    const disputed = entry({
      title: "Arena",
      gameId: "arena",
      versionId: "02".repeat(32),
      conflict: { gameIds: ["arena", "saves"], titles: ["Arena", "Saves"] },
      notes: ["description cut to 8192 bytes"],
    });
    const { bridge } = fakeBridge([refused, disputed]);
    render(<App bridge={bridge} />);
    const card = await screen.findByRole("button", { name: /Escape/ });
    expect(card).toHaveTextContent("Refused");
    let dialog = await openGame(/Escape/);
    expect(dialog).toHaveTextContent("Refused: game id `../x` is not a plain folder name");
    expect(within(dialog).queryByRole("button", { name: /Download/ })).not.toBeInTheDocument();
    fireEvent.click(within(dialog).getByRole("button", { name: "Close" }));

    dialog = await openGame(/^Arena/);
    expect(dialog).toHaveTextContent("disagree on its folder name: `arena`, `saves`");
    expect(dialog).toHaveTextContent("disagree on its title: “Arena”, “Saves”");
    expect(dialog).toHaveTextContent("Description cut to 8192 bytes.");
    expect(within(dialog).queryByRole("button", { name: "Download" })).not.toBeInTheDocument();
    fireEvent.click(within(dialog).getByRole("button", { name: "Download as saves" }));
    expect(bridge.download).toHaveBeenCalledWith(`${disputed.versionId}:saves`);
  });

  it("keeps a catalog event over an older snapshot that answers after it", async () => {
    // After a restart the snapshot is asked for while the new runtime's
    // first events are on their way; one answered late must not undo them.
    const game = entry({ sources: ["p1"] });
    const { bridge, emit } = fakeBridge([]);
    let answer: (catalog: CatalogEntry[]) => void = () => {};
    bridge.catalog = () => new Promise((resolve) => (answer = resolve));
    render(<App bridge={bridge} />);
    await act(async () => {});
    emit({ type: "catalogChanged", catalog: [game] });
    await screen.findByRole("button", { name: /OpenArena/ });
    await act(async () => answer([]));
    expect(screen.getByRole("button", { name: /OpenArena/ })).toBeInTheDocument();
  });

  it("opens a game's page with its facts and downloads it", async () => {
    const game = entry({ description: "Fast arena shooter.", minPlayers: 2, sources: ["p1"] });
    const { bridge, emit } = fakeBridge([game]);
    render(<App bridge={bridge} />);
    await screen.findByRole("button", { name: /OpenArena/ });
    emit({
      type: "peerDiscovered",
      peer: { peerId: "p1", displayName: "lan-host", addr: "10.0.0.9:27600", state: "connected", rttMs: 0.3, games: 1, source: "mdns", lastError: null },
    });
    const dialog = await openGame(/OpenArena/);
    expect(dialog).toHaveTextContent("Fast arena shooter.");
    expect(dialog).toHaveTextContent("Shooter");
    expect(dialog).toHaveTextContent("2–16 players");
    expect(dialog).toHaveTextContent("0.8.8");
    expect(dialog).toHaveTextContent("lan-host");
    fireEvent.click(within(dialog).getByRole("button", { name: "Download" }));
    expect(bridge.download).toHaveBeenCalledWith(game.versionId);

    emit({ type: "downloadStarted", versionId: game.versionId, gameId: game.gameId, title: game.title, bytesTotal: 100 });
    emit({
      type: "downloadProgress",
      versionId: game.versionId,
      gameId: game.gameId,
      bytesDone: 25,
      bytesTotal: 100,
      bytesPerSec: 2048,
      etaSecs: 90,
      sources: [{ peerId: "p1", bytesPerSec: 2048 }],
    });
    expect(dialog).toHaveTextContent("25% · 2.0 KiB/s · 1 min 30 s left");
    fireEvent.click(within(dialog).getByRole("button", { name: "Cancel" }));
    expect(bridge.cancelDownload).toHaveBeenCalledWith(game.versionId, false);
    fireEvent.keyDown(dialog, { key: "Escape" });
    expect(screen.queryByRole("dialog")).not.toBeInTheDocument();
  });

  it("keeps Tab inside the game's page and gives focus back when it closes", async () => {
    const { bridge } = fakeBridge([entry()]);
    render(<App bridge={bridge} />);
    const card = await screen.findByRole("button", { name: /OpenArena/ });
    card.focus();
    fireEvent.click(card);
    const dialog = screen.getByRole("dialog");
    const close = within(dialog).getByRole("button", { name: "Close" });
    const download = within(dialog).getByRole("button", { name: "Download" });
    download.focus();
    fireEvent.keyDown(download, { key: "Tab" });
    expect(close).toHaveFocus();
    fireEvent.keyDown(close, { key: "Tab", shiftKey: true });
    expect(download).toHaveFocus();
    fireEvent.keyDown(dialog, { key: "Escape" });
    expect(card).toHaveFocus();
  });

  it("says which games are being prepared for sharing", async () => {
    const { bridge, emit } = fakeBridge([]);
    render(<App bridge={bridge} />);
    await screen.findByText(/are you on the party network/);
    emit({ type: "indexingProgress", game: "quake", bytesDone: 512, bytesTotal: 1024 });
    expect(screen.getByText("Preparing quake (50%) to share…")).toBeInTheDocument();
  });

  it("plays, opens and deletes an installed game, deleting only once confirmed", async () => {
    const { bridge } = fakeBridge([entry({ installed: true, sources: [] })]);
    render(<App bridge={bridge} />);
    const dialog = await openGame(/OpenArena: Installed/);
    fireEvent.click(within(dialog).getByRole("button", { name: "Play" }));
    expect(bridge.play).toHaveBeenCalledWith("openarena");
    await waitFor(() => expect(within(dialog).getByRole("button", { name: "Play" })).toBeEnabled());
    fireEvent.click(within(dialog).getByRole("button", { name: "Open folder" }));
    expect(bridge.openGameFolder).toHaveBeenCalledWith("openarena");
    fireEvent.click(within(dialog).getByRole("button", { name: "Delete" }));
    expect(bridge.deleteGame).not.toHaveBeenCalled();
    const confirm = within(dialog).getByRole("alertdialog");
    expect(confirm).toHaveTextContent("Delete OpenArena (3.0 MiB)");
    fireEvent.click(within(confirm).getByRole("button", { name: "Delete" }));
    expect(bridge.deleteGame).toHaveBeenCalledWith("openarena");
  });

  it("says why Play did not start", async () => {
    const { bridge } = fakeBridge([entry({ installed: true, sources: [] })]);
    bridge.play = vi.fn(async () => Promise.reject({ code: "noExecutable", message: "OpenArena names no program to start" }));
    render(<App bridge={bridge} />);
    const dialog = await openGame(/OpenArena/);
    fireEvent.click(within(dialog).getByRole("button", { name: "Play" }));
    expect(await screen.findByText(/names no program to start/)).toBeInTheDocument();
  });

  it("lists downloads with per-source rates and resumes a paused one", async () => {
    const game = entry();
    const { bridge, emit } = fakeBridge([game]);
    render(<App bridge={bridge} />);
    await screen.findByRole("button", { name: /OpenArena/ });
    emit({ type: "downloadStarted", versionId: game.versionId, gameId: game.gameId, title: game.title, bytesTotal: 1000 });
    emit({
      type: "downloadProgress",
      versionId: game.versionId,
      gameId: game.gameId,
      bytesDone: 500,
      bytesTotal: 1000,
      bytesPerSec: 3072,
      etaSecs: 1,
      sources: [
        { peerId: "aaaaaaaaaaaa", bytesPerSec: 1024 },
        { peerId: "bbbbbbbbbbbb", bytesPerSec: 2048 },
      ],
    });
    fireEvent.click(screen.getByRole("button", { name: "Downloads (1)" }));
    const sources = screen.getByRole("list", { name: "OpenArena sources" });
    expect(sources).toHaveTextContent("aaaaaaaa: 1.0 KiB/s");
    expect(sources).toHaveTextContent("bbbbbbbb: 2.0 KiB/s");
    emit({ type: "downloadPeersGone", versionId: game.versionId, gameId: game.gameId });
    expect(screen.getByText(/Every source left/)).toBeInTheDocument();
    fireEvent.click(screen.getByRole("button", { name: "Resume" }));
    expect(bridge.download).toHaveBeenCalledWith(game.versionId);
  });

  it("says what to do when there are no games", async () => {
    const { bridge } = fakeBridge([]);
    render(<App bridge={bridge} />);
    expect(await screen.findByText(/are you on the party network/)).toBeInTheDocument();
  });

  it("explains why no peers are visible and opens the log folder", async () => {
    const { bridge } = fakeBridge([]);
    render(<App bridge={bridge} />);
    fireEvent.click(screen.getByRole("button", { name: "Services" }));
    expect(await screen.findByText(/Allow UDP port 27600/)).toBeInTheDocument();
    expect(screen.getByText("eth0")).toBeInTheDocument();
    fireEvent.click(screen.getByRole("button", { name: "Open log folder" }));
    expect(await screen.findByText(/lanspread\/logs/)).toBeInTheDocument();
  });

  it("adds a peer by address", async () => {
    const { bridge } = fakeBridge([]);
    render(<App bridge={bridge} />);
    fireEvent.click(screen.getByRole("button", { name: "Peers" }));
    fireEvent.change(screen.getByLabelText("Add peer by address"), { target: { value: "10.0.0.2:27600" } });
    fireEvent.click(screen.getByRole("button", { name: "Add" }));
    expect(bridge.addPeer).toHaveBeenCalledWith("10.0.0.2:27600");
  });

  it("asks for the games folder on first run", async () => {
    const { bridge } = fakeBridge([], [], view({ firstRun: true, settings: { ...savedSettings, gamesDir: null } }));
    render(<App bridge={bridge} />);
    const welcome = await screen.findByRole("dialog", { name: "Welcome to lanspread" });
    fireEvent.click(within(welcome).getByRole("button", { name: "Choose another folder…" }));
    expect(await within(welcome).findByText("/mnt/big/games")).toBeInTheDocument();
    fireEvent.change(within(welcome).getByLabelText("Your name at the party"), { target: { value: " Ana " } });
    fireEvent.click(within(welcome).getByRole("button", { name: "Start" }));
    expect(bridge.saveSettings).toHaveBeenCalledWith({ ...savedSettings, gamesDir: "/mnt/big/games", displayName: "Ana" });
    await waitFor(() => expect(screen.queryByRole("dialog")).not.toBeInTheDocument());
  });

  it("asks again, saying why, when the saved games folder is gone", async () => {
    const problem = "the games folder /mnt/usb/games is missing; pick it again or choose another";
    const { bridge } = fakeBridge([], [], view({ firstRun: true, problem, gamesDir: "/home/ana/lanspread-games" }));
    render(<App bridge={bridge} />);
    const welcome = await screen.findByRole("dialog", { name: "Welcome to lanspread" });
    expect(within(welcome).getByRole("alert")).toHaveTextContent(problem);
    expect(within(welcome).getByText("/home/ana/lanspread-games")).toBeInTheDocument();
  });

  it("saves settings, with the upload limit given in MiB/s", async () => {
    const { bridge } = fakeBridge([]);
    render(<App bridge={bridge} />);
    fireEvent.click(screen.getByRole("button", { name: "Settings" }));
    fireEvent.change(await screen.findByLabelText("Upload limit (MiB/s)"), { target: { value: "12.5" } });
    fireEvent.change(screen.getByLabelText("Party key"), { target: { value: "lan2026" } });
    fireEvent.change(screen.getByLabelText("Parallel downloads"), { target: { value: "3" } });
    fireEvent.click(screen.getByRole("button", { name: "Save" }));
    expect(bridge.saveSettings).toHaveBeenCalledWith({
      ...savedSettings,
      uploadLimit: 12.5 * 1024 * 1024,
      partyKey: "lan2026",
      parallelDownloads: 3,
    });
    expect(await screen.findByText("Saved.")).toBeInTheDocument();
  });

  it("saves the party settings: organizer, keep me ready, seeding while playing", async () => {
    const { bridge } = fakeBridge([]);
    render(<App bridge={bridge} />);
    fireEvent.click(screen.getByRole("button", { name: "Settings" }));
    fireEvent.click(await screen.findByLabelText("I am the organizer"));
    fireEvent.click(screen.getByLabelText("Keep me ready (queue new lineup games by themselves)"));
    const share = screen.getByLabelText("Seeding while playing: 10 % of the upload limit");
    fireEvent.change(share, { target: { value: "25" } });
    expect(screen.getByLabelText("Seeding while playing: 25 % of the upload limit")).toBe(share);
    fireEvent.click(screen.getByRole("button", { name: "Save" }));
    expect(bridge.saveSettings).toHaveBeenCalledWith({ ...savedSettings, organizer: true, keepReady: true, gameModeUploadPercent: 25 });
  });
});

describe("the party", () => {
  it("shows the lineup above the library with times, our state and its publisher, and gets it", async () => {
    const { bridge } = fakeBridge([entry()], [], view(), { lineups: [lineup()] });
    render(<App bridge={bridge} />);
    const banner = await screen.findByRole("article", { name: /Lineup by LAN host/ });
    const games = within(banner).getAllByRole("listitem").map((li) => li.textContent);
    expect(games).toEqual(["Quake 3 · 21:00Missing", "Unreal TournamentReady"]);
    expect(banner).toHaveTextContent("by LAN host (organizer)");
    // Above the library.
    const library = screen.getByRole("heading", { name: "Library" });
    expect(banner.compareDocumentPosition(library) & Node.DOCUMENT_POSITION_FOLLOWING).toBeTruthy();
    expect(screen.queryByRole("note")).not.toBeInTheDocument();
    fireEvent.click(within(banner).getByRole("button", { name: "Get the lineup" }));
    expect(bridge.getLineup).toHaveBeenCalledWith(lineup().publisher);
    expect(await within(banner).findByRole("status")).toHaveTextContent(
      "Queued 1 game; 1 game already here or on the way; no peer has doom yet.",
    );
  });

  it("shows every publisher's lineup with a note when they conflict, never merged", async () => {
    const bob = "bobpeeraaaaaaaaaaaaaaaaaaa";
    const other = lineup({
      publisher: bob,
      publisherName: "bob",
      organizer: false,
      entries: [lineup().entries[1]],
    });
    const { bridge, emit } = fakeBridge([], [], view(), { lineups: [lineup()] });
    render(<App bridge={bridge} />);
    await screen.findByRole("article", { name: /Lineup by LAN host/ });
    emit({ type: "lineupChanged", lineups: [lineup(), other] });
    expect(screen.getByRole("note")).toHaveTextContent("Conflicting lineups: 2 peers published one");
    const bobs = screen.getByRole("article", { name: "Lineup by bob (not an organizer)" });
    expect(within(bobs).getAllByRole("listitem")).toHaveLength(1);
    expect(within(screen.getByRole("article", { name: /LAN host/ })).getAllByRole("listitem")).toHaveLength(2);
    fireEvent.click(within(bobs).getByRole("button", { name: "Get the lineup" }));
    expect(bridge.getLineup).toHaveBeenCalledWith(bob);
  });

  it("shows the ready board per lineup game with every peer, live", async () => {
    const board = { publisher: lineup().publisher, games: [boardGame()] };
    const { bridge, emit } = fakeBridge([], [], view(), { lineups: [lineup()], board });
    render(<App bridge={bridge} />);
    fireEvent.click(screen.getByRole("button", { name: "Party" }));
    const game = await screen.findByRole("listitem", { name: "Ready board: Quake 3" });
    expect(game).toHaveTextContent("Quake 3 · 21:00");
    expect(game).toHaveTextContent("1 / 3 ready");
    const rows = within(game).getAllByRole("row").map((r) => r.textContent);
    expect(rows).toEqual(["ana (you)Missing", "LAN hostReady", "bobDownloading 42% · 1 min 5 s left"]);
    expect(screen.getByText("Following the lineup by LAN host (organizer)")).toBeInTheDocument();
    // Not an organizer: no ready check.
    expect(within(game).queryByRole("button", { name: "Ready check" })).not.toBeInTheDocument();

    emit({
      type: "readyBoardChanged",
      board: { ...board, games: [boardGame({ ready: 2, peers: [boardPeer({ state: "ready" }), ...boardGame().peers.slice(1)] })] },
    });
    expect(game).toHaveTextContent("2 / 3 ready");
    expect(within(game).getAllByRole("row")[0]).toHaveTextContent("ana (you)Ready");
  });

  it("lets an organizer pick, order, time and publish the lineup, call ready checks and clear it", async () => {
    const quake = entry({ versionId: q3, gameId: "quake3", title: "Quake 3" });
    const unreal = entry({ versionId: ut, gameId: "ut99", title: "Unreal Tournament" });
    const organizer = view({ settings: { ...savedSettings, organizer: true } });
    const { bridge, emit } = fakeBridge([quake, unreal], [], organizer);
    render(<App bridge={bridge} />);
    fireEvent.click(screen.getByRole("button", { name: "Party" }));
    const editor = await screen.findByRole("region", { name: "Your lineup" });
    const pick = within(editor).getByLabelText("Game to add");
    await waitFor(() => expect(within(pick).getAllByRole("option")).toHaveLength(2));
    fireEvent.change(pick, { target: { value: q3 } });
    fireEvent.click(within(editor).getByRole("button", { name: "Add to lineup" }));
    // The first one left.
    fireEvent.click(within(editor).getByRole("button", { name: "Add to lineup" }));
    fireEvent.change(within(editor).getByLabelText("Time for Quake 3"), { target: { value: "21:00" } });
    fireEvent.click(within(editor).getByRole("button", { name: "Move Unreal Tournament up" }));
    fireEvent.click(within(editor).getByRole("button", { name: "Publish" }));
    expect(bridge.publishLineup).toHaveBeenCalledWith([
      { versionId: ut, at: null },
      { versionId: q3, at: "21:00" },
    ]);
    expect(await within(editor).findByText("Published.")).toBeInTheDocument();

    const published = await (bridge.publishLineup as ReturnType<typeof vi.fn>).mock.results[0].value;
    emit({ type: "lineupChanged", lineups: [published] });
    emit({
      type: "readyBoardChanged",
      board: { publisher: published.publisher, games: [boardGame({ versionId: ut, title: "Unreal Tournament", at: null }), boardGame()] },
    });
    const game = screen.getByRole("listitem", { name: "Ready board: Quake 3" });
    fireEvent.click(within(game).getByRole("button", { name: "Ready check" }));
    expect(bridge.readyCheck).toHaveBeenCalledWith(q3);
    expect(await screen.findByText("Ready check sent for Quake 3.")).toBeInTheDocument();

    fireEvent.click(within(editor).getByRole("button", { name: "Clear the lineup" }));
    expect(bridge.publishLineup).toHaveBeenLastCalledWith([]);
    expect(await within(editor).findByText("Lineup cleared.")).toBeInTheDocument();
  });

  it("starts the organizer's draft from the lineup we publish, even when it arrives later", async () => {
    const organizer = view({ settings: { ...savedSettings, organizer: true } });
    const { bridge, emit } = fakeBridge([entry()], [], organizer);
    render(<App bridge={bridge} />);
    fireEvent.click(screen.getByRole("button", { name: "Party" }));
    const editor = await screen.findByRole("region", { name: "Your lineup" });
    expect(within(editor).queryByLabelText("Time for Quake 3")).not.toBeInTheDocument();
    emit({ type: "lineupChanged", lineups: [lineup({ ours: true, version: 7 })] });
    expect(within(editor).getByLabelText("Time for Quake 3")).toHaveValue("21:00");
    expect(within(editor).getByLabelText("Time for Unreal Tournament")).toHaveValue("");
    // Once edited, news of our lineup does not undo the edit.
    fireEvent.change(within(editor).getByLabelText("Time for Quake 3"), { target: { value: "22:00" } });
    emit({ type: "lineupChanged", lineups: [lineup({ ours: true, version: 8 })] });
    expect(within(editor).getByLabelText("Time for Quake 3")).toHaveValue("22:00");
  });

  it("says what an organizer's publish was refused for", async () => {
    const organizer = view({ settings: { ...savedSettings, organizer: true } });
    const { bridge } = fakeBridge([entry()], [], organizer);
    bridge.publishLineup = vi.fn(async () => Promise.reject({ code: "notOrganizer", message: "only an organizer publishes a lineup under a party key" }));
    render(<App bridge={bridge} />);
    fireEvent.click(screen.getByRole("button", { name: "Party" }));
    const editor = await screen.findByRole("region", { name: "Your lineup" });
    await waitFor(() => expect(within(editor).getByRole("button", { name: "Add to lineup" })).toBeEnabled());
    fireEvent.click(within(editor).getByRole("button", { name: "Add to lineup" }));
    fireEvent.click(within(editor).getByRole("button", { name: "Publish" }));
    expect(await within(editor).findByText(/only an organizer publishes/)).toBeInTheDocument();
  });

  it("shows a ready check with what it takes and gets the game, unless we are ready", async () => {
    const { bridge, emit } = fakeBridge([]);
    render(<App bridge={bridge} />);
    await screen.findByText(/are you on the party network/);
    emit({ type: "readyCheck", check: readyCheck() });
    const notice = screen.getByRole("alert", { name: "Ready check: Quake 3" });
    expect(notice).toHaveTextContent("Get ready for Quake 3: 1.2 GiB, about 40 s");
    fireEvent.click(within(notice).getByRole("button", { name: "Get it" }));
    expect(bridge.download).toHaveBeenCalledWith(q3);
    emit({ type: "downloadQueued", versionId: q3, gameId: "quake3", title: "Quake 3" });
    expect(notice).toHaveTextContent("Getting ready for Quake 3: downloading");
    expect(within(notice).queryByRole("button", { name: "Get it" })).not.toBeInTheDocument();

    emit({ type: "readyCheck", check: readyCheck({ versionId: ut, title: "Unreal Tournament", bytesNeeded: 0, etaSecs: 0, state: "ready" }) });
    const ready = screen.getByRole("alert", { name: "Ready check: Unreal Tournament" });
    expect(ready).toHaveTextContent("Unreal Tournament is ready");
    expect(within(ready).queryByRole("button", { name: "Get it" })).not.toBeInTheDocument();
    fireEvent.click(within(ready).getByRole("button", { name: "Dismiss" }));
    expect(screen.queryByRole("alert", { name: /Unreal Tournament/ })).not.toBeInTheDocument();
  });

  it("shows game mode in the header while a game runs", async () => {
    const { bridge, emit } = fakeBridge([]);
    render(<App bridge={bridge} />);
    await screen.findByText(/are you on the party network/);
    expect(screen.queryByText(/Game mode/)).not.toBeInTheDocument();
    emit({ type: "gameModeChanged", gameMode: { active: true, games: ["quake3"], uploadCap: 1048576 } });
    expect(within(screen.getByRole("banner")).getByText("Game mode: seeding capped to 1.0 MiB/s")).toBeInTheDocument();
    emit({ type: "gameModeChanged", gameMode: { active: false, games: [], uploadCap: 0 } });
    expect(screen.queryByText(/Game mode/)).not.toBeInTheDocument();
  });

  it("asks before quitting while others fetch a last copy from us", async () => {
    const { bridge, askQuit } = fakeBridge([]);
    render(<App bridge={bridge} />);
    await screen.findByText(/are you on the party network/);
    askQuit({ lastCopies: [{ versionId: q3, gameId: "quake3", title: "Quake 3", fetching: 3 }] });
    let dialog = screen.getByRole("alertdialog", { name: "3 peers are still fetching Quake 3 from you" });
    expect(within(dialog).getByRole("button", { name: "Keep sharing" })).toHaveFocus();
    fireEvent.click(within(dialog).getByRole("button", { name: "Keep sharing" }));
    expect(screen.queryByRole("alertdialog")).not.toBeInTheDocument();
    expect(bridge.quit).not.toHaveBeenCalled();

    askQuit({
      lastCopies: [
        { versionId: q3, gameId: "quake3", title: "Quake 3", fetching: 3 },
        { versionId: ut, gameId: "ut99", title: "Unreal Tournament", fetching: 1 },
      ],
    });
    dialog = screen.getByRole("alertdialog", { name: "Peers are still fetching games from you" });
    expect(dialog).toHaveTextContent("1 peer is still fetching Unreal Tournament from you");
    fireEvent.click(within(dialog).getByRole("button", { name: "Quit anyway" }));
    expect(bridge.quit).toHaveBeenCalled();
  });
});
