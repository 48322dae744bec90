#!/usr/bin/env python3
"""The rush's floor: an ideal piece swarm, for comparison with the simulator.

One seed and N-1 downloaders; each machine uploads at rate 1 (one piece per
time unit) shared alike among at most K pieces at once; downloads are not
limited. A downloader serves a piece only once it has it whole (as lanspread
does: pieces are verified whole). Every upload slot that frees is given at
once, with perfect knowledge, to a random downloader wanting a piece the
uploader has, and the rarest such piece (counting pieces on their way); the
seed sends only pieces no downloader has or is getting (super-seeding). No
headers, requests, acknowledgements or delays.

Prints the median and last finish in units of F/R (F = the pieces, R = one
machine's upload), and how busy the uploads were. Multiply by the wire's own
cost (a single QUIC transfer over the same shaped link) to compare with
`lanspread-sim rush`.

    scripts/swarm-model.py --peers 32 --pieces 256
"""

import argparse
import random


def rush(peers, pieces, slots, step, seed):
    rnd = random.Random(seed)
    have = [set(range(pieces))] + [set() for _ in range(peers - 1)]
    holders = [0] * pieces  # downloaders holding or getting each piece
    coming = [set() for _ in range(peers)]  # pieces on their way to each
    flows = []  # [uploader, downloader, piece, work left]
    finish = [None] * peers
    busy = 0.0
    t = 0.0
    while any(f is None for f in finish[1:]):
        order = list(range(peers))
        rnd.shuffle(order)
        for up in order:
            used = sum(1 for f in flows if f[0] == up)
            while used < slots:
                wants = []
                for down in range(1, peers):
                    if down == up or finish[down] is not None:
                        continue
                    if any(f[0] == up and f[1] == down for f in flows):
                        continue
                    w = [p for p in have[up] if p not in have[down] and p not in coming[down]]
                    if up == 0:
                        w = [p for p in w if holders[p] == 0]
                    if w:
                        wants.append((down, w))
                if not wants:
                    break
                down, w = rnd.choice(wants)
                piece = min(w, key=lambda p: (holders[p], rnd.random()))
                flows.append([up, down, piece, 1.0])
                coming[down].add(piece)
                holders[piece] += 1
                used += 1
        sharing = {}
        for f in flows:
            sharing[f[0]] = sharing.get(f[0], 0) + 1
        busy += len(sharing) / peers * step
        t += step
        for f in list(flows):
            f[3] -= step / sharing[f[0]]
            if f[3] <= 1e-9:
                flows.remove(f)
                _, down, piece, _ = f
                coming[down].discard(piece)
                have[down].add(piece)
                if len(have[down]) == pieces and finish[down] is None:
                    finish[down] = t
    done = sorted(finish[1:])
    return done[len(done) // 2] / pieces, done[-1] / pieces, busy / t


def main():
    args = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    args.add_argument("--peers", type=int, default=32)
    args.add_argument("--pieces", type=int, default=256)
    args.add_argument("--slots", type=int, default=2, help="pieces an upload sends at once")
    args.add_argument("--step", type=float, default=0.02, help="time step, in piece times")
    args.add_argument("--seed", type=int, default=1)
    a = args.parse_args()
    p50, last, busy = rush(a.peers, a.pieces, a.slots, a.step, a.seed)
    print(f"peers {a.peers}, pieces {a.pieces}, {a.slots} at once: "
          f"p50 {p50:.3f} x F/R, last {last:.3f} x F/R, uploads {busy * 100:.0f} % busy")


if __name__ == "__main__":
    main()
