import { act, render, screen } from "@testing-library/react";
import { describe, expect, it } from "vitest";
import { App, type PeerBridge } from "./App";
import { initialModel, reconnecting, reduce } from "./state";
import type { PeerEvent, ServiceHealth } from "./types";

const running = (service: string): ServiceHealth => ({
  service,
  policy: "restart",
  state: "running",
  restarts: 0,
  lastError: null,
  lastHeartbeatMs: 1,
});

function fakeBridge(health: ServiceHealth[]) {
  let handler: ((e: PeerEvent) => void) | null = null;
  const bridge: PeerBridge = {
    health: async () => health,
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
});

describe("App", () => {
  it("shows service health and a banner when the runtime fails", async () => {
    const { bridge, emit } = fakeBridge([running("quic-server"), running("discovery")]);
    render(<App bridge={bridge} />);

    expect(await screen.findByText("quic-server")).toBeInTheDocument();
    expect(screen.queryByRole("alert")).not.toBeInTheDocument();

    emit({ type: "runtimeFailed", component: "quic-server", error: "address in use" });

    const banner = screen.getByRole("alert");
    expect(banner).toHaveTextContent("quic-server failed");
    expect(banner).toHaveTextContent("can no longer share");
  });
});
