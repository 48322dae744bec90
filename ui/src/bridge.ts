import { invoke } from "@tauri-apps/api/core";
import { listen } from "@tauri-apps/api/event";
import type { PeerBridge } from "./App";
import type { CatalogEntry, Diagnostics, PeerEvent, PeerInfo, ServiceHealth } from "./types";

/** The bridge to the Rust side of the desktop app: the only file that knows Tauri. */
export const tauriBridge: PeerBridge = {
  health: () => invoke<ServiceHealth[]>("health"),
  catalog: () => invoke<CatalogEntry[]>("catalog"),
  peers: () => invoke<PeerInfo[]>("peers"),
  download: (target) => invoke<string>("download", { target }),
  cancelDownload: (versionId, remove) =>
    invoke<boolean>("cancel_download", { versionId, delete: remove }),
  addPeer: (address) => invoke<void>("add_peer", { address }),
  diagnostics: () => invoke<Diagnostics>("diagnostics"),
  onEvent: (handler) => listen<PeerEvent>("peer-event", (e) => handler(e.payload)),
};
