import { invoke } from "@tauri-apps/api/core";
import { listen } from "@tauri-apps/api/event";
import type { PeerBridge } from "./App";
import type { PeerEvent, ServiceHealth } from "./types";

/** The bridge to the Rust side of the desktop app. */
export const tauriBridge: PeerBridge = {
  health: () => invoke<ServiceHealth[]>("health"),
  onEvent: (handler) => listen<PeerEvent>("peer-event", (e) => handler(e.payload)),
};
