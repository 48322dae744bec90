import { useState, type FormEvent } from "react";
import { errorText, type AppModel } from "./state";

export function Peers({
  model,
  onAdd,
}: {
  model: AppModel;
  onAdd: (address: string) => Promise<void>;
}) {
  const [address, setAddress] = useState("");
  const [error, setError] = useState<string | null>(null);
  const peers = Object.values(model.peers).sort((a, b) => a.displayName.localeCompare(b.displayName));
  const submit = (e: FormEvent) => {
    e.preventDefault();
    onAdd(address.trim()).then(
      () => {
        setAddress("");
        setError(null);
      },
      (err) => setError(errorText(err)),
    );
  };
  return (
    <section aria-labelledby="peers-title">
      <h2 id="peers-title">Peers</h2>
      <form className="add-peer" onSubmit={submit}>
        <label htmlFor="peer-address">Add peer by address</label>
        <input
          id="peer-address"
          placeholder="192.168.1.20:27600"
          value={address}
          onChange={(e) => setAddress(e.target.value)}
        />
        <button type="submit" disabled={!address.trim()}>
          Add
        </button>
        {error && <span role="alert">{error}</span>}
      </form>
      {peers.length === 0 ? (
        <p className="empty">
          No peers yet — are you on the party network? Add one by address; it finds the rest.
        </p>
      ) : (
        <table className="table">
          <thead>
            <tr>
              <th>Name</th>
              <th>Address</th>
              <th>RTT</th>
              <th>Games</th>
              <th>State</th>
            </tr>
          </thead>
          <tbody>
            {peers.map((p) => (
              <tr key={p.peerId}>
                <td title={p.peerId}>{p.displayName || p.peerId.slice(0, 8)}</td>
                <td>{p.addr ?? "—"}</td>
                <td>{p.rttMs != null ? `${p.rttMs.toFixed(1)} ms` : "—"}</td>
                <td>{p.games}</td>
                <td className={`state state-${p.state}`} title={p.lastError ?? undefined}>
                  {p.state}
                </td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
    </section>
  );
}

