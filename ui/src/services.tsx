import { useEffect, useState } from "react";
import type { Diagnostics } from "./bindings";
import type { PeerBridge } from "./bridge";
import { errorText, type AppModel } from "./state";

export function Services({ model, bridge }: { model: AppModel; bridge: PeerBridge }) {
  const [report, setReport] = useState<Diagnostics | null>(null);
  const [logs, setLogs] = useState<string | null>(null);
  useEffect(() => {
    bridge.diagnostics().then(setReport, () => setReport(null));
  }, [bridge]);
  const openLogs = () =>
    bridge.openLogFolder().then(
      (dir) => setLogs(`Log folder: ${dir}`),
      (e) => setLogs(errorText(e)),
    );
  return (
    <section aria-labelledby="health-title">
      <div className="section-head">
        <h2 id="health-title">Services</h2>
        <button className="ghost" onClick={openLogs}>
          Open log folder
        </button>
      </div>
      {logs && <p className="meta">{logs}</p>}
      <table className="table">
        <thead>
          <tr>
            <th>Service</th>
            <th>State</th>
            <th>Restarts</th>
            <th>Last error</th>
          </tr>
        </thead>
        <tbody>
          {Object.values(model.health).map((h) => (
            <tr key={h.service}>
              <td>{h.service}</td>
              <td className={`state state-${h.state}`}>{h.state}</td>
              <td>{h.restarts}</td>
              <td>{h.lastError ?? "—"}</td>
            </tr>
          ))}
        </tbody>
      </table>
      {report && <DiagnosticsReport report={report} />}
    </section>
  );
}

const kib = (bytes: number) => Math.round(bytes / 1024);

/** "Why can't I see peers": what the runtime knows about the network. */
function DiagnosticsReport({ report }: { report: Diagnostics }) {
  return (
    <div className="diagnostics" aria-labelledby="diagnostics-title">
      <h2 id="diagnostics-title">Why can't I see peers?</h2>
      <ul className="hints">
        {report.hints.map((hint) => (
          <li key={hint}>{hint}</li>
        ))}
      </ul>
      <p className="meta">
        Peer id <code>{report.peerId}</code> · listening on {report.boundAddr} (UDP) · mDNS{" "}
        {report.mdnsEnabled ? (report.discovery?.state ?? "not running") : "off"} · UDP buffers{" "}
        {kib(report.udpBuffers.recv)} KiB receive, {kib(report.udpBuffers.send)} KiB send (asked{" "}
        {kib(report.udpBuffers.asked)} KiB)
      </p>
      {report.firewall && (
        <p className="meta">
          Windows networks:{" "}
          {report.firewall.networks.map((n) => `${n.interface} (${n.category})`).join(", ") ||
            "none"}{" "}
          · firewall rules for our port: {report.firewall.rules.join(", ") || "none"}
        </p>
      )}
      <table className="table">
        <thead>
          <tr>
            <th>Interface</th>
            <th>Address</th>
            <th>Discovery</th>
          </tr>
        </thead>
        <tbody>
          {report.interfaces.map((i) => (
            <tr key={`${i.name}-${i.addr}`}>
              <td>{i.name}</td>
              <td>{i.addr}</td>
              <td>{i.skippedBecause ? `skipped: ${i.skippedBecause}` : "used"}</td>
            </tr>
          ))}
        </tbody>
      </table>
      {report.addresses.some((a) => a.lastError) && (
        <ul className="hints">
          {report.addresses
            .filter((a) => a.lastError)
            .map((a) => (
              <li key={a.addr}>
                {a.addr}: {a.lastError}
              </li>
            ))}
        </ul>
      )}
    </div>
  );
}
