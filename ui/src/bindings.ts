// Generated from the Rust types by src-tauri/src/bindings.rs; do not edit.

/**
 * Everything the runtime tells the outside world.
 */
export type PeerEvent = { "type": "runtimeFailed", component: string, error: string, } | { "type": "healthChanged", health: ServiceHealth, } | { "type": "indexingProgress", game: string, bytesDone: number, bytesTotal: number, } | { "type": "libraryChanged", added: Array<string>, updated: Array<string>, removed: Array<string>, } | { "type": "peerDiscovered", peer: PeerInfo, } | { "type": "peerLost", peerId: string, reason: string, } | { "type": "catalogChanged", catalog: Array<CatalogEntry>, } | { "type": "downloadQueued", versionId: string, gameId: string, title: string, } | { "type": "downloadStarted", versionId: string, gameId: string, title: string, bytesTotal: number, } | { "type": "downloadProgress", versionId: string, gameId: string, bytesDone: number, bytesTotal: number, bytesPerSec: number, etaSecs: number | null, sources: Array<SourceRate>, } | { "type": "downloadCompleted", versionId: string, gameId: string, } | { "type": "downloadFailed", versionId: string, gameId: string, code: FailureCode, message: string, } | { "type": "downloadCancelled", versionId: string, gameId: string, } | { "type": "downloadWaiting", versionId: string, gameId: string, message: string, } | { "type": "downloadPeersGone", versionId: string, gameId: string, } | { "type": "lineupChanged", lineups: Array<Lineup>, } | { "type": "readyBoardChanged", board: ReadyBoard, } | { "type": "readyCheck", check: ReadyCheck, } | { "type": "gameModeChanged", gameMode: GameMode, } | { "type": "sourceBanned", versionId: string, peerId: string, reason: string, };

/**
 * Lifecycle state of one supervised service.
 */
export type ServiceState = "starting" | "running" | "backingOff" | "failed" | "stopped";

/**
 * What the supervisor knows about one service.
 */
export type ServiceHealth = { service: string, 
/**
 * `required`, `restart` or `bestEffort`.
 */
policy: string, state: ServiceState, 
/**
 * How many times the supervisor restarted it after a failure.
 */
restarts: number, lastError: string | null, 
/**
 * Unix milliseconds of the last sign of life (start or explicit heartbeat).
 */
lastHeartbeatMs: number | null, };

/**
 * One game version on the LAN.
 */
export type CatalogEntry = { 
/**
 * The folder name.
 */
gameId: string, versionId: string, title: string, description: string | null, genre: string | null, minPlayers: number | null, maxPlayers: number | null, versionLabel: string | null, totalSize: number, 
/**
 * The picture's hash (hex), to fetch with the thumbnail command.
 */
thumbnail: string | null, 
/**
 * Peers that serve this version.
 */
sources: Array<string>, 
/**
 * Peers still downloading it that serve the pieces they have.
 */
partialSources: Array<string>, 
/**
 * This exact version is in our games folder.
 */
installed: boolean, 
/**
 * On the entry of an installed version: the version id of a newer one
 * on the LAN (same game id).
 */
updateTo: string | null, 
/**
 * The peers that list this version disagree on its game id or title:
 * every name seen. Shown, never silently merged.
 */
conflict: NameConflict | null, 
/**
 * Why this version cannot be downloaded as listed (e.g. "game id
 * `../x` is not a plain folder name"); `None` when it can.
 */
refused: string | null, 
/**
 * What was cut to fit a limit, in words (e.g. "description cut to
 * 8192 bytes").
 */
notes: Array<string>, };

/**
 * The names the sources of one version gave it, when they disagree.
 */
export type NameConflict = { 
/**
 * Sorted, unique; more than one when the game ids disagree.
 */
gameIds: Array<string>, 
/**
 * Sorted, unique; more than one when the titles disagree.
 */
titles: Array<string>, };

/**
 * What the UI and CLI show of a peer.
 */
export type PeerInfo = { peerId: string, displayName: string, addr: string | null, state: PeerState, rttMs: number | null, games: number, source: Source, lastError: string | null, };

export type PeerState = "connected" | "lost" | "incompatible";

/**
 * How a peer's address became known.
 */
export type Source = "manual" | "mdns" | "exchange" | "incoming";

/**
 * One source's share of a download's progress.
 */
export type SourceRate = { peerId: string, bytesPerSec: number, };

/**
 * One code scheme for every failure a front end sees: `DownloadFailed`
 * events and every command's error. The UI branches on these, never on
 * message text.
 */
export type FailureCode = "notFound" | "alreadyInstalled" | "noSpace" | "permissionDenied" | "gamesDirMissing" | "destinationExists" | "badManifest" | "io" | "runtimeStopped" | "notInstalled" | "noExecutable" | "launch" | "delete" | "badPeerId" | "unresolved" | "invalidSettings" | "badVersionId" | "dialog" | "open" | "refused" | "nameConflict" | "gameInUse" | "notOrganizer" | "badLineup";

/**
 * A download as the UI lists it.
 */
export type DownloadInfo = { versionId: string, gameId: string, title: string, state: DownloadState, };

/**
 * Whether a listed download runs or waits for a free slot.
 */
export type DownloadState = "queued" | "running";

/**
 * The "why can't I see peers" report.
 */
export type Diagnostics = { peerId: string, boundAddr: string, mdnsEnabled: boolean, 
/**
 * The discovery service's health (multicast status).
 */
discovery: ServiceHealth | null, interfaces: Array<InterfaceReport>, peers: Array<PeerInfo>, 
/**
 * Addresses we know of and what went wrong dialling them.
 */
addresses: Array<AddressReport>, 
/**
 * The QUIC socket's buffers as the OS granted them.
 */
udpBuffers: UdpBuffers, 
/**
 * Windows only: network categories and firewall rules (`None`
 * elsewhere, and until the first check has finished).
 */
firewall: FirewallReport | null, hints: Array<string>, };

/**
 * A network interface, and whether discovery uses it.
 */
export type InterfaceReport = { name: string, addr: string, usedForDiscovery: boolean, 
/**
 * Why discovery skips it (a virtual adapter, not configured).
 */
skippedBecause: string | null, };

/**
 * An address we know of, and what went wrong dialling it.
 */
export type AddressReport = { addr: string, expectedPeerId: string | null, source: Source, lastError: string | null, };

/**
 * UDP socket buffer sizes: asked of the OS, and granted as it reports them
 * (Linux reports twice what it accounts for; Windows defaults to 64 KiB).
 */
export type UdpBuffers = { asked: number, recv: number, send: number, };

/**
 * A network Windows knows the machine is on, and its category.
 */
export type NetworkProfile = { name: string, interface: string, 
/**
 * `Public`, `Private` or `DomainAuthenticated`.
 */
category: string, };

/**
 * What the Windows firewall check found.
 */
export type FirewallReport = { networks: Array<NetworkProfile>, 
/**
 * Firewall profiles (`Domain`, `Private`, `Public`) that are switched on.
 */
enabledProfiles: Array<string>, 
/**
 * Enabled inbound rules that allow our UDP port, with the profiles
 * they apply to, e.g. `lanspread (Private, Domain)`.
 */
rules: Array<string>, 
/**
 * Why the check could not run, when it could not.
 */
error: string | null, };

/**
 * Tonight's lineup as one peer published it.
 */
export type Lineup = { publisher: string, publisherName: string, 
/**
 * Published by this peer.
 */
ours: boolean, 
/**
 * The publisher was started as an organizer.
 */
organizer: boolean, 
/**
 * The publisher is present now (a lineup stays shown after it left).
 */
present: boolean, 
/**
 * The lineup's version (the publisher's clock in milliseconds when it
 * published): a newer one from the same publisher replaces the older.
 */
version: number, entries: Array<LineupEntry>, };

/**
 * One game of a lineup.
 */
export type LineupEntry = { versionId: string, gameId: string, 
/**
 * From the catalog; the game id while no peer lists the version.
 */
title: string, 
/**
 * When it is played, as the organizer wrote it ("21:00").
 */
at: string | null, 
/**
 * Bytes; 0 while no peer lists the version.
 */
totalSize: number, 
/**
 * Our own state for it.
 */
state: ReadyState, };

/**
 * Where one peer stands with one lineup game.
 */
export type ReadyState = "ready" | "downloading" | "outdated" | "missing" | "playing";

/**
 * Every lineup game with every peer's state: the data of the ready board.
 */
export type ReadyBoard = { 
/**
 * Whose lineup the board follows (none: no lineup).
 */
publisher: string | null, games: Array<BoardGame>, };

/**
 * One lineup game on the ready board.
 */
export type BoardGame = { versionId: string, gameId: string, title: string, at: string | null, 
/**
 * Peers ready for it (playing counts as ready), of `peers.len()`.
 */
ready: number, peers: Array<BoardPeer>, };

/**
 * One peer's row for one lineup game.
 */
export type BoardPeer = { peerId: string, name: string, 
/**
 * This row is us.
 */
us: boolean, state: ReadyState, 
/**
 * While downloading: how far, 0-100.
 */
percent: number | null, 
/**
 * While downloading: seconds left, when known.
 */
etaSecs: number | null, };

/**
 * "Get ready for Quake 3: 1.2 GB, about 40 s".
 */
export type ReadyCheck = { publisher: string, publisherName: string, versionId: string, gameId: string, title: string, 
/**
 * What this peer still has to fetch (0: ready).
 */
bytesNeeded: number, 
/**
 * About how long that takes, at this peer's recent download rate or a
 * LAN's typical one.
 */
etaSecs: number, state: ReadyState, };

/**
 * Whether a game started from lanspread runs here, capping our seeding.
 */
export type GameMode = { active: boolean, 
/**
 * Game ids running now.
 */
games: Array<string>, 
/**
 * The upload limit while active, bytes per second.
 */
uploadCap: number, };

/**
 * A game only this peer has complete while others still fetch it.
 */
export type LastCopy = { versionId: string, gameId: string, title: string, 
/**
 * Peers fetching it now.
 */
fetching: number, };

/**
 * What "Get the lineup" did.
 */
export type LineupFetch = { 
/**
 * Versions queued now.
 */
queued: Array<string>, 
/**
 * Entries already installed or downloading.
 */
already: number, 
/**
 * Game ids no peer lists yet (queued once one does, with "keep me
 * ready").
 */
unavailable: Array<string>, 
/**
 * Entries that could not be queued, each "title: why".
 */
failed: Array<string>, };

/**
 * One game of the lineup an organizer publishes, in its order.
 */
export type LineupDraft = { versionId: string, 
/**
 * When it is played, free text ("21:00"); at most 32 bytes.
 */
at: string | null, };

/**
 * Sent on `quit-requested`: the games others would lose their only
 * complete source of if the app quit now.
 */
export type QuitRequested = { lastCopies: Array<LastCopy>, };

/**
 * What the player chose. Absent keys take their defaults, so a file
 * written by an older version still loads.
 */
export type Settings = { 
/**
 * The folder games are shared from and installed into. `None` until the
 * player picked one: the app asks on first run.
 */
gamesDir: string | null, 
/**
 * The name other peers show; empty: the computer's name.
 */
displayName: string, 
/**
 * Upload limit in bytes per second; 0: none.
 */
uploadLimit: number, 
/**
 * Only peers with the same key connect; empty: any peer.
 */
partyKey: string, parallelDownloads: number, 
/**
 * This peer publishes the party's lineup and calls ready checks; under
 * a party key only an organizer may.
 */
organizer: boolean, 
/**
 * Queue the games of the lineup by themselves as they are added.
 */
keepReady: boolean, 
/**
 * Seeding while a game started from lanspread runs, in percent of the
 * upload limit (of 100 MB/s when there is none).
 */
gameModeUploadPercent: number, };

/**
 * What the settings screen shows.
 */
export type SettingsView = { settings: Settings, 
/**
 * No usable games folder chosen yet: the UI asks for one.
 */
firstRun: boolean, 
/**
 * The folder the running peer shares.
 */
gamesDir: string, 
/**
 * Why the saved settings could not be used, if so.
 */
problem: string | null, };

/**
 * What a failed command gives the UI: it branches on `code`.
 */
export type CommandError = { code: FailureCode, message: string, };
