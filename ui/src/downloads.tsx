import { Progress } from "./library";
import { downloadTitle, formatBytes, type AppModel, type DownloadPhase, type DownloadView } from "./state";

const PHASE_LABEL: Record<DownloadPhase, string> = {
  queued: "Queued",
  running: "Downloading",
  completed: "Installed",
  failed: "Failed",
  cancelled: "Paused",
  peersGone: "Sources gone",
};

const ORDER: DownloadPhase[] = ["running", "queued", "peersGone", "failed", "cancelled", "completed"];

export function Downloads({
  model,
  onCancel,
  onResume,
  onClear,
}: {
  model: AppModel;
  onCancel: (d: DownloadView) => void;
  onResume: (d: DownloadView) => void;
  onClear: (d: DownloadView) => void;
}) {
  const list = Object.values(model.downloads)
    .map((d) => ({ ...d, title: downloadTitle(model, d) }))
    .sort((a, b) => ORDER.indexOf(a.phase) - ORDER.indexOf(b.phase) || a.title.localeCompare(b.title));
  return (
    <section aria-labelledby="downloads-title">
      <h2 id="downloads-title">Downloads</h2>
      {list.length === 0 ? (
        <p className="empty">Nothing downloading. Open a game in the Library and click Download.</p>
      ) : (
        <ul className="downloads">
          {list.map((d) => (
            <li key={d.versionId} aria-label={d.title}>
              <div className="download-head">
                <strong>{d.title}</strong>
                <span className={`phase phase-${d.phase}`}>{PHASE_LABEL[d.phase]}</span>
              </div>
              {d.phase === "queued" ? (
                <p className="meta">Waits for a free slot; the parallel download limit is in Settings.</p>
              ) : (
                <Progress download={d} />
              )}
              {d.sources.length > 0 && (
                <ul className="sources" aria-label={`${d.title} sources`}>
                  {d.sources.map((s) => (
                    <li key={s.peerId}>
                      {model.peers[s.peerId]?.displayName || s.peerId.slice(0, 8)}:{" "}
                      {formatBytes(s.bytesPerSec)}/s
                    </li>
                  ))}
                </ul>
              )}
              {d.message && <p className="message">{d.message}</p>}
              <div className="actions">
                {(d.phase === "running" || d.phase === "queued") && (
                  <button className="ghost" onClick={() => onCancel(d)}>
                    Cancel
                  </button>
                )}
                {(d.phase === "cancelled" || d.phase === "peersGone" || d.phase === "failed") && (
                  <button onClick={() => onResume(d)}>Resume</button>
                )}
                {d.phase === "completed" && (
                  <button className="ghost" onClick={() => onClear(d)}>
                    Clear
                  </button>
                )}
              </div>
            </li>
          ))}
        </ul>
      )}
    </section>
  );
}
