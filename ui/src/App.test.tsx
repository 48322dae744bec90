import { act, fireEvent, render, screen } from "@testing-library/react";
import { describe, expect, it, vi } from "vitest";
import { App, type PeerBridge } from "./App";
import { gameState, initialModel, reconnecting, reduce } from "./state";
import type { CatalogEntry, PeerEvent, ServiceHealth } from "./types";

const running = (service: string): ServiceHealth => ({
  service,
  policy: "restart",
  state: "running",
  restarts: 0,
  lastError: null,
  lastHeartbeatMs: 1,
});

const entry = (over: Partial<CatalogEntry> = {}): CatalogEntry => ({
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
  ...over,
});

function fakeBridge(catalog: CatalogEntry[] = [], health: ServiceHealth[] = []) {
  let handler: ((e: PeerEvent) => void) | null = null;
  const bridge: PeerBridge = {
    health: async () => health,
    catalog: async () => catalog,
    peers: async () => [],
    download: vi.fn(async (target: string) => target),
    cancelDownload: vi.fn(async () => true),
    addPeer: vi.fn(async () => {}),
    diagnostics: async () => ({
      peerId: "abc",
      boundAddr: "0.0.0.0:27600",
      mdnsEnabled: true,
      discovery: null,
      interfaces: [{ name: "eth0", addr: "10.0.0.2", usedForDiscovery: true }],
      peers: [],
      addresses: [],
      hints: ["No peer connected. Allow UDP port 27600 through the firewall."],
    }),
    onEvent: async (h) => {
      handler = h;
      return () => {
        handler = null;
      };
    },
  };
  return { bridge, emit: (e: PeerEvent) => act(() => handler!(e)) };
}

describe("reduce", () => {
  it("records a runtime failure", () => {
    const model = reduce(initialModel, {
      kind: "event",
      event: { type: "runtimeFailed", component: "quic-server", error: "port in use" },
    });
    expect(model.failure).toEqual({ component: "quic-server", error: "port in use" });
  });

  it("lists services backing off as reconnecting", () => {
    let model = reduce(initialModel, { kind: "healthSnapshot", health: [running("discovery")] });
    expect(reconnecting(model)).toEqual([]);
    model = reduce(model, {
      kind: "event",
      event: { type: "healthChanged", health: { ...running("discovery"), state: "backingOff", restarts: 1 } },
    });
    expect(reconnecting(model)).toEqual(["discovery"]);
  });

  it("follows a download from start to completion and failure", () => {
    const vid = "cd".repeat(32);
    let model = reduce(initialModel, {
      kind: "event",
      event: { type: "downloadStarted", versionId: vid, gameId: "q3", title: "Quake III", bytesTotal: 100 },
    });
    model = reduce(model, {
      kind: "event",
      event: {
        type: "downloadProgress",
        versionId: vid,
        gameId: "q3",
        bytesDone: 40,
        bytesTotal: 100,
        bytesPerSec: 10,
        etaSecs: 6,
        sources: [{ peerId: "p", bytesPerSec: 10 }],
      },
    });
    expect(model.downloads[vid]).toMatchObject({ bytesDone: 40, etaSecs: 6, phase: "running" });
    expect(gameState(model, entry({ versionId: vid }))).toBe("downloading");
    const failed = reduce(model, {
      kind: "event",
      event: { type: "downloadFailed", versionId: vid, gameId: "q3", code: "noSpace", message: "disk full" },
    });
    expect(failed.downloads[vid]).toMatchObject({ phase: "failed", message: "disk full" });
    const done = reduce(model, { kind: "event", event: { type: "downloadCompleted", versionId: vid, gameId: "q3" } });
    expect(done.downloads[vid].phase).toBe("completed");
  });

  it("marks a lost peer", () => {
    let model = reduce(initialModel, {
      kind: "event",
      event: {
        type: "peerDiscovered",
        peer: { peerId: "p1", displayName: "host", addr: "10.0.0.2:27600", state: "connected", rttMs: 0.4, games: 3, source: "mdns", lastError: null },
      },
    });
    model = reduce(model, { kind: "event", event: { type: "peerLost", peerId: "p1", reason: "no answer" } });
    expect(model.peers.p1).toMatchObject({ state: "lost", lastError: "no answer", rttMs: null });
  });
});

describe("App", () => {
  it("shows a banner when the runtime fails", async () => {
    const { bridge, emit } = fakeBridge([], [running("quic-server")]);
    render(<App bridge={bridge} />);
    expect(screen.queryByRole("alert")).not.toBeInTheDocument();
    emit({ type: "runtimeFailed", component: "quic-server", error: "address in use" });
    const banner = screen.getByRole("alert");
    expect(banner).toHaveTextContent("quic-server failed");
    expect(banner).toHaveTextContent("can no longer share");
  });

  it("lists games from the catalog and downloads one on click", async () => {
    const game = entry();
    const { bridge } = fakeBridge([game]);
    render(<App bridge={bridge} />);
    const card = await screen.findByRole("listitem", { name: "OpenArena" });
    expect(card).toHaveTextContent("3.0 MiB · 1 source");
    expect(card).toHaveTextContent("Available");
    fireEvent.click(screen.getByRole("button", { name: "Download" }));
    expect(bridge.download).toHaveBeenCalledWith(game.versionId);
  });

  it("says what to do when there are no games", async () => {
    const { bridge } = fakeBridge([]);
    render(<App bridge={bridge} />);
    expect(await screen.findByText(/are you on the party network/)).toBeInTheDocument();
  });

  it("explains why no peers are visible", async () => {
    const { bridge } = fakeBridge([]);
    render(<App bridge={bridge} />);
    fireEvent.click(screen.getByRole("button", { name: "Services" }));
    expect(await screen.findByText(/Allow UDP port 27600/)).toBeInTheDocument();
    expect(screen.getByText("eth0")).toBeInTheDocument();
  });

  it("adds a peer by address", async () => {
    const { bridge } = fakeBridge([]);
    render(<App bridge={bridge} />);
    fireEvent.click(screen.getByRole("button", { name: "Peers" }));
    fireEvent.change(screen.getByLabelText("Add peer by address"), { target: { value: "10.0.0.2:27600" } });
    fireEvent.click(screen.getByRole("button", { name: "Add" }));
    expect(bridge.addPeer).toHaveBeenCalledWith("10.0.0.2:27600");
  });
});
