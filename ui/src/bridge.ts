import { invoke } from "@tauri-apps/api/core";
import { listen } from "@tauri-apps/api/event";
import type {
  CatalogEntry,
  Diagnostics,
  DownloadInfo,
  GameMode,
  LastCopy,
  Lineup,
  LineupDraft,
  LineupFetch,
  PeerEvent,
  PeerInfo,
  QuitRequested,
  ReadyBoard,
  ServiceHealth,
  Settings,
  SettingsView,
} from "./bindings";

/** How the app reaches the peer; the real one wraps Tauri, tests pass a fake. */
export interface PeerBridge {
  health(): Promise<ServiceHealth[]>;
  catalog(): Promise<CatalogEntry[]>;
  peers(): Promise<PeerInfo[]>;
  downloads(): Promise<DownloadInfo[]>;
  download(target: string): Promise<string>;
  cancelDownload(versionId: string, remove: boolean): Promise<boolean>;
  addPeer(address: string): Promise<void>;
  diagnostics(): Promise<Diagnostics>;
  /** A game picture's bytes by its hash. */
  thumbnail(hash: string): Promise<ArrayBuffer>;
  play(gameId: string): Promise<void>;
  openGameFolder(gameId: string): Promise<void>;
  deleteGame(gameId: string): Promise<void>;
  settings(): Promise<SettingsView>;
  saveSettings(settings: Settings): Promise<SettingsView>;
  /** The system folder dialog; null when the player cancels. */
  pickGamesFolder(): Promise<string | null>;
  /** Opens the log folder; answers its path. */
  openLogFolder(): Promise<string>;
  /** Every lineup on the LAN, ours first. */
  lineups(): Promise<Lineup[]>;
  /** Publish our lineup (organizers); an empty one withdraws it. */
  publishLineup(entries: LineupDraft[]): Promise<Lineup>;
  /** Queue every game of a lineup we lack; null: the first one shown. */
  getLineup(publisher: string | null): Promise<LineupFetch>;
  readyBoard(): Promise<ReadyBoard>;
  /** Ask everyone to get a lineup game ready (organizers). */
  readyCheck(versionId: string): Promise<void>;
  /** Games only we have complete while others fetch them. */
  lastCopies(): Promise<LastCopy[]>;
  gameMode(): Promise<GameMode>;
  /** Quit now, even while others fetch a last copy from us. */
  quit(): Promise<void>;
  /** The window was asked to close while others fetch a last copy from us. */
  onQuitRequested(handler: (request: QuitRequested) => void): Promise<() => void>;
  /** Every event but `runtimeFailed`, on `peer-event`. */
  onEvent(handler: (event: PeerEvent) => void): Promise<() => void>;
  /** A part of the runtime that cannot go on failed, on `peer-runtime-failed`. */
  onRuntimeFailed(handler: (event: RuntimeFailed) => void): Promise<() => void>;
}

/** The event the shell sends on its own channel, `peer-runtime-failed`. */
export type RuntimeFailed = Extract<PeerEvent, { type: "runtimeFailed" }>;

/** The bridge to the Rust side of the desktop app: the only file that knows Tauri. */
export const tauriBridge: PeerBridge = {
  health: () => invoke("health"),
  catalog: () => invoke("catalog"),
  peers: () => invoke("peers"),
  downloads: () => invoke("downloads"),
  download: (target) => invoke("download", { target }),
  cancelDownload: (versionId, remove) => invoke("cancel_download", { versionId, delete: remove }),
  addPeer: (address) => invoke("add_peer", { address }),
  diagnostics: () => invoke("diagnostics"),
  thumbnail: (hash) => invoke("thumbnail", { hash }),
  play: (gameId) => invoke("play", { gameId }),
  openGameFolder: (gameId) => invoke("open_game_folder", { gameId }),
  deleteGame: (gameId) => invoke("delete_game", { gameId }),
  settings: () => invoke("settings"),
  saveSettings: (settings) => invoke("save_settings", { settings }),
  pickGamesFolder: () => invoke("pick_games_folder"),
  openLogFolder: () => invoke("open_log_folder"),
  lineups: () => invoke("lineups"),
  publishLineup: (entries) => invoke("publish_lineup", { entries }),
  getLineup: (publisher) => invoke("get_lineup", { publisher }),
  readyBoard: () => invoke("ready_board"),
  readyCheck: (versionId) => invoke("ready_check", { versionId }),
  lastCopies: () => invoke("last_copies"),
  gameMode: () => invoke("game_mode"),
  quit: () => invoke("quit"),
  onQuitRequested: (handler) => listen<QuitRequested>("quit-requested", (e) => handler(e.payload)),
  onEvent: (handler) => listen<PeerEvent>("peer-event", (e) => handler(e.payload)),
  onRuntimeFailed: (handler) => listen<RuntimeFailed>("peer-runtime-failed", (e) => handler(e.payload)),
};
