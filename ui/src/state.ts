import type { PeerEvent, ServiceHealth } from "./types";

export interface RuntimeFailure {
  component: string;
  error: string;
}

export interface AppModel {
  health: Record<string, ServiceHealth>;
  failure: RuntimeFailure | null;
}

export const initialModel: AppModel = { health: {}, failure: null };

export type Action =
  | { kind: "event"; event: PeerEvent }
  | { kind: "healthSnapshot"; health: ServiceHealth[] };

/** Folds peer events into what the UI shows. Pure: tested without a window. */
export function reduce(model: AppModel, action: Action): AppModel {
  switch (action.kind) {
    case "healthSnapshot":
      return {
        ...model,
        health: Object.fromEntries(action.health.map((h) => [h.service, h])),
      };
    case "event":
      return reduceEvent(model, action.event);
  }
}

function reduceEvent(model: AppModel, event: PeerEvent): AppModel {
  switch (event.type) {
    case "runtimeFailed":
      return { ...model, failure: { component: event.component, error: event.error } };
    case "healthChanged":
      return { ...model, health: { ...model.health, [event.health.service]: event.health } };
  }
}

/** Services that are waiting to be restarted: the UI shows "reconnecting". */
export function reconnecting(model: AppModel): string[] {
  return Object.values(model.health)
    .filter((h) => h.state === "backingOff")
    .map((h) => h.service);
}
