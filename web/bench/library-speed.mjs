// Browser speed on a large library (not part of `npm test`): first paint of the library page
// and keystroke-to-results while typing, measured in Chromium against `pumas up` on an existing
// data root (e.g. the search bench's 100,000-model catalog):
//   PUMAS_BIN=target/release/pumas node bench/library-speed.mjs /tmp/catalog100k
import { spawn } from "node:child_process";
import { existsSync } from "node:fs";
import { createInterface } from "node:readline";
import { chromium } from "playwright-core";

const root = process.argv[2];
const bin = process.env.PUMAS_BIN ?? new URL("../../target/release/pumas", import.meta.url).pathname;
const browserPath = ["/usr/bin/chromium-headless-shell", "/usr/bin/chromium"].find((p) => existsSync(p));
if (!root || !browserPath) throw new Error("usage: node bench/library-speed.mjs DATA_ROOT (and Chromium installed)");

const up = spawn(bin, ["up", "--data-root", root, "--gateway-port", "0", "--index-port", "0", "--fetch-port", "0", "--mapper-port", "0"], { stdio: ["ignore", "pipe", "ignore"] });
let gateway;
for await (const line of createInterface({ input: up.stdout })) {
  const [role, address] = line.trim().split(/\s+/);
  if (role === "gateway") gateway = address;
  if (line.startsWith("Stop with Ctrl-C")) break;
}
const browser = await chromium.launch({ executablePath: browserPath, args: ["--no-sandbox"] });
const page = await browser.newPage();
// Wait until the index answers (it may be rebuilding models.db).
for (;;) {
  await page.goto(`http://${gateway}/`);
  try {
    await page.waitForFunction(() => document.querySelectorAll("table.models tbody tr").length > 0, null, { timeout: 5000 });
    break;
  } catch {}
}
const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const paints = [];
for (let i = 0; i < 5; i++) {
  const page2 = await browser.newPage();
  const t0 = Date.now();
  await page2.goto(`http://${gateway}/`);
  await page2.waitForFunction(() => document.querySelectorAll("table.models tbody tr").length > 0);
  paints.push(Date.now() - t0);
  await page2.close();
}
const keys = [];
for (const query of ["mistral instruct", "qwen 7b q4", "llama-code"]) {
  await page.goto(`http://${gateway}/`);
  await page.waitForFunction(() => document.querySelectorAll("table.models tbody tr").length > 0);
  for (const ch of query) {
    const before = await page.locator("#summary").getAttribute("data-renders");
    const t0 = Date.now();
    await page.locator("#search").press(ch === " " ? "Space" : ch);
    await page.waitForFunction((b) => document.querySelector("#summary")?.dataset.renders !== b, before, { timeout: 10000 });
    keys.push(Date.now() - t0);
    await page.waitForTimeout(120);
  }
}
console.log(JSON.stringify({ first_paint_ms: { median: median(paints), all: paints }, keystroke_to_results_ms: { median: median(keys), max: Math.max(...keys), n: keys.length } }));
await browser.close();
up.kill("SIGTERM");
