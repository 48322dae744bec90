// End to end: the real desktop app (driven over WebDriver by tauri-driver)
// sees the games shared by a real headless peer with their covers, opens one,
// downloads it, the files land on disk byte for byte, Play starts it, and a
// settings change restarts the peer, which comes back with its games. Then
// the party: the host's lineup shows above the library, "Get the lineup"
// queues what is missing, and the ready board shows us ready for every
// lineup game. Screenshots go to out/e2e/.
//
// Needs: tauri-driver on :4444 (under Xvfb), LANSPREAD_APP (the app binary),
// E2E_SOURCE_GAME and E2E_TARGET_GAME (source and expected install folders),
// E2E_PLAYED (the file the game's program writes when Play starts it).
import { existsSync, mkdirSync, readFileSync, readdirSync, statSync, writeFileSync } from "node:fs";
import { join, relative } from "node:path";

const DRIVER = "http://127.0.0.1:4444";
const ELEMENT = "element-6066-11e4-a52f-4ca6c4f3e4a3";
const OUT = "out/e2e";
const { LANSPREAD_APP, LANSPREAD_DATA_DIR: E2E_DATA_DIR, E2E_SOURCE_GAME, E2E_TARGET_GAME, E2E_PLAYED } = process.env;

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
  const findX = async (xpath) => {
    const found = await call("POST", `/session/${sid}/element`, { using: "xpath", value: xpath });
    return found[ELEMENT] ?? found.ELEMENT ?? Object.values(found)[0];
  };
  const count = async (css) =>
    (await call("POST", `/session/${sid}/elements`, { using: "css selector", value: css })).length;
  const text = async (css) => call("GET", `/session/${sid}/element/${await find(css)}/text`);
  const click = async (css) => call("POST", `/session/${sid}/element/${await find(css)}/click`, {});
  const clickButton = async (label) =>
    call("POST", `/session/${sid}/element/${await findX(`//button[normalize-space()='${label}']`)}/click`, {});
  // A tab's label may carry a count ("Downloads (1)").
  const clickTab = async (label) =>
    call("POST", `/session/${sid}/element/${await findX(`//nav//button[starts-with(normalize-space(), '${label}')]`)}/click`, {});
  const shot = async (name) => {
    const png = await call("GET", `/session/${sid}/screenshot`);
    writeFileSync(join(OUT, name), Buffer.from(png, "base64"));
  };
  try {
    const card = 'button[aria-label^="E2E Arena"]';
    await until("the shared games appear in the library", 30, () => text(card));
    await until("every game shows its cover", 20, async () => (await count("img.cover")) >= 3);
    console.log("e2e: the game appeared:", (await text(card)).replace(/\n/g, " | "));
    await shot("library.png");
    const banner = await until("the host's lineup shows above the library", 20, () => text(".lineups"));
    for (const fact of ["E2E Arena · 20:00", "Neon Racer · 21:30", "Castle Siege", "by e2e host (organizer)", "Get the lineup"]) {
      if (!banner.includes(fact)) throw new Error(`the lineup banner lacks "${fact}": ${banner}`);
    }
    console.log("e2e: the lineup shows:", banner.replace(/\n/g, " | "));

    await click(card);
    const dialog = await until("the game's page opens", 10, () => text('[role="dialog"]'));
    for (const fact of ["A test arena", "Test", "2–8 players", "1.0", "e2e host"]) {
      if (!dialog.includes(fact)) throw new Error(`the game's page lacks "${fact}": ${dialog}`);
    }
    await shot("game-detail.png");
    await clickButton("Download");
    await click('[role="dialog"] button[aria-label="Close"]');
    await until("the card shows progress", 20, async () => /downloading[\s\S]*\d+% · /i.test(await text(card)));
    await new Promise((r) => setTimeout(r, 1500));
    await shot("library-downloading.png");
    await until("the download completes", 120, async () => /installed/i.test(await text(card)));
    console.log("e2e: installed:", (await text(card)).replace(/\n/g, " | "));
    compareTrees(E2E_SOURCE_GAME, E2E_TARGET_GAME);

    await click(card);
    await clickButton("Play");
    await until("Play starts the game", 15, () => existsSync(E2E_PLAYED));
    await click('[role="dialog"] button[aria-label="Close"]');
    console.log("e2e: Play started the game");

    await clickTab("Downloads");
    await until("the downloads page shows it", 10, async () => /installed/i.test(await text(".downloads")));
    await shot("download-finished.png");

    // A settings change the running peer cannot take restarts it; the app
    // comes back with the new name, its games and its peer.
    await clickTab("Settings");
    const name = await until("the settings page opens", 10, () => find("#display-name"));
    await call("POST", `/session/${sid}/element/${name}/clear`, {});
    await call("POST", `/session/${sid}/element/${name}/value`, { text: "E2E Player" });
    await clickButton("Save");
    await until("the settings are saved", 20, async () => /Saved\./.test(await text(".settings")));
    const saved = readFileSync(join(E2E_DATA_DIR, "settings.toml"), "utf8");
    if (!saved.includes('displayName = "E2E Player"')) throw new Error(`settings.toml: ${saved}`);
    await clickTab("Library");
    const neon = 'button[aria-label^="Neon Racer"]';
    await until("the restarted peer finds its peer again", 30, async () => /1 source/.test(await text(neon)));
    const restarted = Date.now();
    await until("the restarted peer offers the installed game again", 30, async () => /installed/i.test(await text(card)));
    console.log(`e2e: the installed game was back ${Date.now() - restarted} ms after its peer`);
    console.log("e2e: settings saved, the peer restarted and reconnected");

    // The party: get the lineup (E2E Arena is installed; the other two are
    // queued), then the ready board shows our row ready for every game.
    await until("the lineup is back after the restart", 20, () => text(".lineups"));
    await clickButton("Get the lineup");
    const got = await until("Get the lineup says what it queued", 20, async () => {
      const said = await text('.lineup [role="status"]');
      return /Queued 2 games/.test(said) && said;
    });
    console.log("e2e: get the lineup:", got);
    await until("a lineup game downloads", 20, async () => /downloading/i.test(await text(".lineups")));
    await shot("lineup.png");
    await clickTab("Party");
    const board = ".board";
    await until("the ready board shows every lineup game", 20, async () => (await count(`${board} > li`)) === 3);
    await until("the ready board shows us ready for every lineup game", 120, async () => {
      const rows = await call("POST", `/session/${sid}/elements`, { using: "xpath", value: "//ul[@class='board']/li//tr[contains(., '(you)')]" });
      if (rows.length !== 3) return false;
      for (const row of rows) {
        const id = row[ELEMENT] ?? row.ELEMENT ?? Object.values(row)[0];
        if (!/ready/i.test(await call("GET", `/session/${sid}/element/${id}/text`))) return false;
      }
      return true;
    });
    console.log("e2e: ready board:", (await text(board)).replace(/\n/g, " | "));
    await shot("ready-board.png");
  } catch (e) {
    await shot("failure.png").catch(() => {});
    const source = await call("GET", `/session/${sid}/source`).catch(() => "");
    writeFileSync(join(OUT, "failure.html"), String(source));
    throw e;
  } finally {
    await call("DELETE", `/session/${sid}`).catch(() => {});
  }
  console.log("e2e: 1 passed, 0 failed");
}

/** The installed tree must equal the source byte for byte. */
function compareTrees(source, target) {
  const expected = files(source);
  const got = files(target);
  if (JSON.stringify(expected) !== JSON.stringify(got)) {
    throw new Error(`installed files differ: ${JSON.stringify(got)} vs ${JSON.stringify(expected)}`);
  }
  for (const file of expected.filter((f) => !f.endsWith("/"))) {
    if (!readFileSync(join(source, file)).equals(readFileSync(join(target, file)))) {
      throw new Error(`${file} differs`);
    }
  }
  console.log(`e2e: ${expected.length} files and folders identical`);
}

main().catch((e) => {
  console.error(`e2e: FAILED: ${e.message}`);
  process.exit(1);
});
