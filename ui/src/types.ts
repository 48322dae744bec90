// Mirrors of the Rust event types (lanspread_peer::events / health).

export type ServiceState = "starting" | "running" | "backingOff" | "failed" | "stopped";

export interface ServiceHealth {
  service: string;
  policy: "required" | "restart" | "bestEffort";
  state: ServiceState;
  restarts: number;
  lastError: string | null;
  lastHeartbeatMs: number | null;
}

export type PeerEvent =
  | { type: "runtimeFailed"; component: string; error: string }
  | { type: "healthChanged"; health: ServiceHealth };
