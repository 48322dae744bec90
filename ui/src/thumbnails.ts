import { useEffect, useState } from "react";
import type { PeerBridge } from "./bridge";

// Pictures are addressed by the hash of their bytes, so one fetch per hash
// serves every card and detail view for the app's lifetime.
const cache = new WeakMap<PeerBridge, Map<string, Promise<string | null>>>();

function load(bridge: PeerBridge, hash: string): Promise<string | null> {
  let byHash = cache.get(bridge);
  if (!byHash) {
    byHash = new Map();
    cache.set(bridge, byHash);
  }
  let url = byHash.get(hash);
  if (!url) {
    url = bridge.thumbnail(hash).then(
      (bytes) => URL.createObjectURL(new Blob([bytes])),
      () => {
        // Nobody had it this time; a later render may find a peer that does.
        byHash.delete(hash);
        return null;
      },
    );
    byHash.set(hash, url);
  }
  return url;
}

/** An object URL of the picture with `hash`, once it has arrived. */
export function useThumbnail(bridge: PeerBridge, hash: string | null): string | null {
  const [url, setUrl] = useState<string | null>(null);
  useEffect(() => {
    setUrl(null);
    if (!hash) return;
    let live = true;
    load(bridge, hash).then((u) => live && setUrl(u));
    return () => {
      live = false;
    };
  }, [bridge, hash]);
  return url;
}
