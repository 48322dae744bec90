// End to end: the real desktop app (driven over WebDriver by tauri-driver)
// sees a game shared by a real headless peer, downloads it, and the files
// land on disk byte for byte. Screenshots go to out/e2e/.
//
// Needs: tauri-driver on :4444 (under Xvfb), LANSPREAD_APP (the app binary),
// E2E_SOURCE_GAME and E2E_TARGET_GAME (source and expected install folders).
import { mkdirSync, readFileSync, readdirSync, statSync, writeFileSync } from "node:fs";
import { join, relative } from "node:path";

const DRIVER = "http://127.0.0.1:4444";
const ELEMENT = "element-6066-11e4-a52f-4ca6c4f3e4a3";
const OUT = "out/e2e";
const { LANSPREAD_APP, E2E_SOURCE_GAME, E2E_TARGET_GAME } = process.env;

async function call(method, path, body) {
  const response = await fetch(DRIVER + path, {
    method,
    headers: { "content-type": "application/json" },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const json = await response.json();
  if (!response.ok) throw new Error(`${method} ${path}: ${JSON.stringify(json.value)}`);
  return json.value;
}

async function until(what, seconds, probe) {
  const deadline = Date.now() + seconds * 1000;
  for (;;) {
    try {
      const value = await probe();
      if (value) return value;
    } catch {
      // Not there yet.
    }
    if (Date.now() > deadline) throw new Error(`${what}: not within ${seconds} s`);
    await new Promise((r) => setTimeout(r, 250));
  }
}

function files(root) {
  const out = [];
  const walk = (dir) => {
    for (const name of readdirSync(dir)) {
      const path = join(dir, name);
      if (statSync(path).isDirectory()) {
        out.push(relative(root, path) + "/");
        walk(path);
      } else out.push(relative(root, path));
    }
  };
  walk(root);
  return out.sort();
}

async function main() {
  mkdirSync(OUT, { recursive: true });
  const session = await call("POST", "/session", {
    capabilities: { alwaysMatch: { "tauri:options": { application: LANSPREAD_APP } } },
  });
  const sid = session.sessionId;
  const find = async (css) => {
    const found = await call("POST", `/session/${sid}/element`, { using: "css selector", value: css });
    // W3C reference, or the older JSON-wire key some drivers still send.
    return found[ELEMENT] ?? found.ELEMENT ?? Object.values(found)[0];
  };
  const text = async (css) => call("GET", `/session/${sid}/element/${await find(css)}/text`);
  const click = async (css) => call("POST", `/session/${sid}/element/${await find(css)}/click`, {});
  const shot = async (name) => {
    const png = await call("GET", `/session/${sid}/screenshot`);
    writeFileSync(join(OUT, name), Buffer.from(png, "base64"));
  };
  try {
    const card = 'li[aria-label="E2E Arena"]';
    await until("the shared game appears in the library", 30, () => text(card));
    console.log("e2e: the game appeared:", (await text(card)).replace(/\n/g, " | "));
    await shot("library.png");
    await click(`${card} button`);
    await until("the download completes", 120, async () => /installed/i.test(await text(card)));
    console.log("e2e: installed:", (await text(card)).replace(/\n/g, " | "));
    await click('nav button:nth-child(2)');
    await until("the downloads page shows it", 10, async () => /completed/i.test(await text(".downloads")));
    await shot("download-finished.png");
  } catch (e) {
    await shot("failure.png").catch(() => {});
    const source = await call("GET", `/session/${sid}/source`).catch(() => "");
    writeFileSync(join(OUT, "failure.html"), String(source));
    throw e;
  } finally {
    await call("DELETE", `/session/${sid}`).catch(() => {});
  }
  const expected = files(E2E_SOURCE_GAME);
  const got = files(E2E_TARGET_GAME);
  if (JSON.stringify(expected) !== JSON.stringify(got)) {
    throw new Error(`installed files differ: ${JSON.stringify(got)} vs ${JSON.stringify(expected)}`);
  }
  for (const file of expected.filter((f) => !f.endsWith("/"))) {
    if (!readFileSync(join(E2E_SOURCE_GAME, file)).equals(readFileSync(join(E2E_TARGET_GAME, file)))) {
      throw new Error(`${file} differs`);
    }
  }
  console.log(`e2e: ${expected.length} files and folders identical`);
  console.log("e2e: 1 passed, 0 failed");
}

main().catch((e) => {
  console.error(`e2e: FAILED: ${e.message}`);
  process.exit(1);
});
