// Writes a 480x270 PNG cover for a generated test game: a two-colour
// gradient with a sun and a horizon, tinted by the given hue.
// Usage: node e2e/cover.mjs <out.png> <hue 0-360>
import { writeFileSync } from "node:fs";
import { deflateSync } from "node:zlib";

const [out, hueArg] = process.argv.slice(2);
const hue = Number(hueArg ?? 200);
const W = 480;
const H = 270;

function hsl(h, s, l) {
  const a = s * Math.min(l, 1 - l);
  const f = (n) => {
    const k = (n + h / 30) % 12;
    return Math.round(255 * (l - a * Math.max(-1, Math.min(k - 3, 9 - k, 1))));
  };
  return [f(0), f(8), f(4)];
}

const rows = [];
for (let y = 0; y < H; y++) {
  const row = Buffer.alloc(1 + W * 3); // filter byte 0, then RGB
  for (let x = 0; x < W; x++) {
    const t = y / H;
    let [r, g, b] = hsl(hue + 40 * t, 0.6, 0.18 + 0.3 * t);
    const dx = x - W * 0.68;
    const dy = y - H * 0.42;
    if (dx * dx + dy * dy < 48 * 48) [r, g, b] = hsl(hue + 180, 0.85, 0.62);
    if (y > H * 0.7) [r, g, b] = hsl(hue - 20, 0.5, 0.1 + 0.04 * Math.sin(x / 9 + y / 3));
    row.set([r, g, b], 1 + x * 3);
  }
  rows.push(row);
}

const crcTable = Array.from({ length: 256 }, (_, n) => {
  let c = n;
  for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
  return c >>> 0;
});
function crc32(buf) {
  let c = 0xffffffff;
  for (const byte of buf) c = crcTable[(c ^ byte) & 0xff] ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}
function chunk(type, data) {
  const len = Buffer.alloc(4);
  len.writeUInt32BE(data.length);
  const body = Buffer.concat([Buffer.from(type, "ascii"), data]);
  const crc = Buffer.alloc(4);
  crc.writeUInt32BE(crc32(body));
  return Buffer.concat([len, body, crc]);
}

const header = Buffer.alloc(13);
header.writeUInt32BE(W, 0);
header.writeUInt32BE(H, 4);
header.set([8, 2, 0, 0, 0], 8); // 8-bit RGB, no interlace
writeFileSync(
  out,
  Buffer.concat([
    Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]),
    chunk("IHDR", header),
    chunk("IDAT", deflateSync(Buffer.concat(rows))),
    chunk("IEND", Buffer.alloc(0)),
  ]),
);
