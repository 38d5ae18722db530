// The web UI in a real browser (Debian's Chromium through playwright-core) against a real
// `pumas up`: search as you type, a model's page with its preview, the live status page, and an
// API error shown as the server sent it. Figures are printed, not asserted (speed goals are
// benchmarks' business); SCREENSHOTS=dir saves the main pages.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { spawn, execFileSync } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { chromium } from "playwright-core";

const bin = process.env.PUMAS_BIN ?? new URL("../../target/debug/pumas", import.meta.url).pathname;
// The test tree's hub emulator as a process (built with the workspace).
const hubBin = process.env.PUMAS_HUB_EMULATOR ?? new URL("hub-emulator", `file://${bin}`).pathname;
const browserPath = [process.env.PUMAS_CHROMIUM, "/usr/bin/chromium-headless-shell", "/usr/bin/chromium"].find(
  (p) => p && existsSync(p),
);
// A 2x2 PNG, so the preview has pixels to show.
const PNG = Buffer.from(
  "iVBORw0KGgoAAAANSUhEUgAAAAIAAAACCAIAAAD91JpzAAAAFklEQVR4nGP8z8DAwMDAxMDAwMDAAAANHQEDasKb6QAAAABJRU5ErkJggg==",
  "base64",
);

/** A tiny SDXL LoRA: realistic tensor names, zeroed data. */
function writeLora(path, seed) {
  const header = {
    "lora_te2_text_model_encoder_layers_0_self_attn_q_proj.lora_down.weight": { dtype: "F16", shape: [4, 1280], data_offsets: [0, 10240] },
    "lora_unet_input_blocks_4_1_transformer_blocks_0_attn2_to_k.lora_up.weight": { dtype: "F16", shape: [640, 4], data_offsets: [10240, 15360] },
    __metadata__: { seed: String(seed) },
  };
  let raw = Buffer.from(JSON.stringify(header));
  raw = Buffer.concat([raw, Buffer.alloc((8 - ((8 + raw.length) % 8)) % 8, 0x20)]);
  const size = Buffer.alloc(8);
  size.writeBigUInt64LE(BigInt(raw.length));
  const data = Buffer.alloc(15360);
  data[0] = seed;
  writeFileSync(path, Buffer.concat([size, raw, data]));
}

let suite;
let hub;
let browser;
let gateway;
const dir = mkdtempSync(join(tmpdir(), "pumas-ui-"));

before(async () => {
  if (!browserPath) return;
  hub = spawn(hubBin, [], { stdio: ["ignore", "pipe", "ignore"] });
  let hubUrl;
  for await (const line of createInterface({ input: hub.stdout })) {
    hubUrl = /hub=(\S+)/.exec(line)?.[1];
    if (hubUrl) break;
  }
  assert.ok(hubUrl, "the hub emulator printed its address");
  suite = spawn(bin, ["up", "--data-root", join(dir, "root"), "--gateway-port", "0", "--index-port", "0", "--fetch-port", "0", "--mapper-port", "0", "--backend-check-ms", "100", "--hub-endpoint", hubUrl], {
    stdio: ["ignore", "pipe", "ignore"],
    env: { ...process.env, NO_COLOR: "1" },
  });
  for await (const line of createInterface({ input: suite.stdout })) {
    const [role, address] = line.trim().split(/\s+/);
    if (role === "gateway") gateway = address;
    if (line.startsWith("Stop with Ctrl-C")) break;
  }
  assert.ok(gateway, "pumas up printed the gateway's address");
  const inbox = join(dir, "inbox");
  mkdirSync(inbox);
  writeLora(join(inbox, "Detail Tweaker XL.safetensors"), 1);
  writeFileSync(join(inbox, "Detail Tweaker XL.preview.png"), PNG);
  writeLora(join(inbox, "Film Grain.safetensors"), 2);
  writeLora(join(inbox, "Anime Lineart.safetensors"), 3);
  execFileSync(bin, ["import", "--gateway", gateway, inbox], { stdio: "ignore", env: { ...process.env, NO_COLOR: "1" } });
  browser = await chromium.launch({ executablePath: browserPath, args: ["--no-sandbox"] });
});

after(async () => {
  await browser?.close();
  suite?.kill("SIGTERM");
  hub?.kill("SIGTERM");
  rmSync(dir, { recursive: true, force: true });
});

function shot(page, name) {
  if (!process.env.SCREENSHOTS) return Promise.resolve();
  mkdirSync(process.env.SCREENSHOTS, { recursive: true });
  return page.screenshot({ path: join(process.env.SCREENSHOTS, `${name}.png`), fullPage: true });
}

const rows = (page) => page.locator("table.models tbody tr");

test("the library lists, searches as you type and opens a model", { skip: !browserPath && "no Chromium (install chromium-headless-shell)" }, async () => {
  const page = await browser.newPage();
  const started = Date.now();
  await page.goto(`http://${gateway}/`);
  await page.waitForFunction(() => document.querySelectorAll("table.models tbody tr").length === 3);
  console.log(`first paint with results: ${Date.now() - started} ms`);
  await shot(page, "library");
  const typed = Date.now();
  await page.locator("#search").pressSequentially("detail");
  await page.waitForFunction(() => document.querySelectorAll("table.models tbody tr").length === 1);
  console.log(`typing "detail" to one result: ${Date.now() - typed} ms (debounce included)`);
  assert.match(await rows(page).first().innerText(), /Detail Tweaker XL/);
  assert.match(await page.locator("#summary").innerText(), /^1 model/);
  // Filters narrow the same search: no GGUF matches, and nothing is over 1 MiB.
  await page.getByLabel("Format").selectOption({ label: "gguf" });
  await page.locator("#summary", { hasText: /^0 models/ }).waitFor();
  await page.getByLabel("Format").selectOption({ label: "any format" });
  await page.locator("#summary", { hasText: /^1 model/ }).waitFor();
  await page.locator("#min-size").fill("1");
  await page.locator("#summary", { hasText: /^0 models/ }).waitFor();
  await page.locator("#min-size").fill("");
  await page.locator("#summary", { hasText: /^1 model/ }).waitFor();
  await rows(page).first().locator("a").click();
  await page.locator("h1", { hasText: "Detail Tweaker XL" }).waitFor();
  assert.ok(await page.getByText("Why it was classified so").isVisible());
  assert.match(await page.locator("table").first().innerText(), /sha256:[0-9a-f]{64}/);
  const preview = page.locator("img.preview");
  await preview.waitFor();
  assert.ok(await preview.evaluate((img) => img.complete && img.naturalWidth === 2), "the preview shows");
  await shot(page, "model");
  await page.close();
});

test("the status page shows every backend serving", { skip: !browserPath && "no Chromium" }, async () => {
  const page = await browser.newPage();
  await page.goto(`http://${gateway}/#/status`);
  for (const role of ["index", "fetch", "mapper"]) {
    await page.locator(`#backends tr[data-role="${role}"]`, { hasText: "serving" }).waitFor();
  }
  await shot(page, "status");
  await page.close();
});

test("an API error is shown with the server's code and message", { skip: !browserPath && "no Chromium" }, async () => {
  const page = await browser.newPage();
  await page.goto(`http://${gateway}/#/model/not-an-id`);
  const error = page.locator(".error");
  await error.waitFor();
  const text = await error.innerText();
  assert.match(text, /InvalidArgument/);
  assert.match(text, /model id/);
  // The rich details, read: the field that was wrong and the reason.
  assert.match(text, /model_id: /);
  assert.match(text, /reason INVALID_ARGUMENT \(pumas\)/);
  await page.close();
});

test("an import from the browser runs with live progress", { skip: !browserPath && "no Chromium" }, async () => {
  const page = await browser.newPage();
  const file = join(dir, "inbox2", "Browser Import.safetensors");
  mkdirSync(join(dir, "inbox2"), { recursive: true });
  writeLora(file, 9);
  await page.goto(`http://${gateway}/#/import`);
  await page.locator("#import-paths").fill(file);
  await page.locator("#import-start").click();
  await page.locator("#import-job .job-state", { hasText: "succeeded" }).waitFor();
  assert.match(await page.locator("#import-job").innerText(), /lora\/sdxl\/browser-import/);
  await page.close();
});

test("an app's mapping is previewed as a diff and applied from the browser", { skip: !browserPath && "no Chromium" }, async () => {
  const app = join(dir, "Fooocus");
  writeFileSync(join(dir, "root", "launcher-data", "mapping-configs", "fooocus.toml"), `kind = "fooocus"\nroot = "${app}"\nstrategy = "symlink"\n`);
  const page = await browser.newPage();
  await page.goto(`http://${gateway}/#/apps`);
  const card = page.locator('article.app[data-app="fooocus"]');
  await card.locator('button[data-action="preview"]').click();
  await card.locator(".plan", { hasText: "to create" }).waitFor();
  assert.match(await card.locator(".plan").innerText(), /create\s+\S*models\/loras\/Detail Tweaker XL\.safetensors/);
  await shot(page, "apps");
  await card.locator('button[data-action="apply"]').click();
  await card.locator(".job-state", { hasText: "succeeded" }).waitFor();
  assert.ok(existsSync(join(app, "models", "loras", "Detail Tweaker XL.safetensors")), "the link is in the app");
  await page.close();
});

test("a hub search starts a download that is watched to completion", { skip: !browserPath && "no Chromium" }, async () => {
  const page = await browser.newPage();
  await page.goto(`http://${gateway}/#/downloads`);
  await page.getByText("No downloads yet").waitFor();
  await page.goto(`http://${gateway}/#/hub`);
  await page.locator("#hub-search").fill("tiny");
  await page.locator("#hub-search").press("Enter");
  const result = page.locator('article.hub-result[data-repo="acme/tiny-gguf"]');
  await result.waitFor();
  // The repository's quantizations come with their sizes; one is picked.
  await result.getByRole("button", { name: "Files and sizes…" }).click();
  const quant = result.locator('button[data-quant="Q4_K_M"]');
  await quant.waitFor();
  assert.match(await quant.innerText(), /Q4_K_M \(\d+(\.\d)? KiB\)/);
  assert.match(await result.locator(".chooser").textContent(), /tiny-Q8_0\.gguf/);
  await quant.click();
  await page.waitForURL(/#\/downloads/);
  const download = page.locator('article.download', { hasText: "acme/tiny-gguf" });
  await download.and(page.locator('[data-state="completed"]')).waitFor({ timeout: 60000 });
  assert.match(await download.innerText(), /llm\/llama\/tiny-gguf-q4-k-m/);
  await shot(page, "downloads");
  // The hub result now says which selection the library holds.
  await page.goto(`http://${gateway}/#/hub`);
  await page.locator("#hub-search").fill("tiny");
  await page.locator("#hub-search").press("Enter");
  await result.getByText("In the library").waitFor();
  assert.match(await result.innerText(), /tiny-gguf-q4-k-m \(Q4_K_M\)/);
  await page.close();
});

test("a model's overrides are edited and its dependencies resolved in the browser", { skip: !browserPath && "no Chromium" }, async () => {
  const page = await browser.newPage();
  await page.goto(`http://${gateway}/#/model/lora%2Fsdxl%2Ffilm-grain`);
  await page.locator("h1", { hasText: "Film Grain" }).waitFor();
  await page.getByText("Edit").click();
  await page.locator("#edit-name").fill("Film Grain v2");
  await page.locator("#edit-save").click();
  await page.locator("h1", { hasText: "Film Grain v2" }).waitFor();
  assert.match(await page.locator("dl.facts").innerText(), /Your edits\s+display_name/);
  await page.locator("#resolve").click();
  const resolved = page.locator(".resolution");
  await resolved.locator(".validation").waitFor();
  const text = await resolved.innerText();
  assert.match(text, /resolved/);
  assert.match(text, /torch==/);
  await page.close();
});

/** A port nobody listens on yet. */
async function freePort() {
  const { createServer } = await import("node:net");
  return new Promise((resolve) => {
    const server = createServer();
    server.listen(0, "127.0.0.1", () => {
      const { port } = server.address();
      server.close(() => resolve(port));
    });
  });
}

/** `pumas serve mapper` for a second host, once it listens. */
async function serveMapper(port, index, root, token) {
  const mapper = spawn(bin, ["serve", "mapper", "--listen", `127.0.0.1:${port}`, "--index", index, "--data-root", root, "--service-token-file", token, "--host", "studio"], {
    stdio: ["ignore", "ignore", "pipe"],
    env: { ...process.env, NO_COLOR: "1" },
  });
  for await (const line of createInterface({ input: mapper.stderr })) {
    if (line.includes("listening")) break;
  }
  return mapper;
}

test("a backend that goes down shows as such while the rest works, and comes back", { skip: !browserPath && "no Chromium" }, async () => {
  const port = await freePort();
  const root = join(dir, "second");
  const up = spawn(bin, ["up", "--data-root", join(root, "up"), "--gateway-port", "0", "--index-port", "0", "--fetch-port", "0", "--mapper-port", "0", "--backend-check-ms", "100", "--mapper", `studio=127.0.0.1:${port}`], {
    stdio: ["ignore", "pipe", "ignore"],
    env: { ...process.env, NO_COLOR: "1" },
  });
  let gw;
  let index;
  for await (const line of createInterface({ input: up.stdout })) {
    const [role, address] = line.trim().split(/\s+/);
    if (role === "gateway") gw = address;
    if (role === "index") index = address;
    if (line.startsWith("Stop with Ctrl-C")) break;
  }
  const token = join(root, "up", "launcher-data", "secrets", "service-token");
  let mapper = await serveMapper(port, index, join(root, "studio"), token);
  const page = await browser.newPage();
  try {
    await page.goto(`http://${gw}/#/status`);
    const studio = page.locator('#backends tr[data-name="studio"]');
    await studio.filter({ hasText: "serving" }).waitFor();
    mapper.kill("SIGKILL");
    await studio.filter({ hasText: "unreachable" }).waitFor();
    // The rest keeps working: the library answers.
    await page.goto(`http://${gw}/#/`);
    await page.locator("#summary", { hasText: "0 models" }).waitFor();
    mapper = await serveMapper(port, index, join(root, "studio"), token);
    await page.goto(`http://${gw}/#/status`);
    await studio.filter({ hasText: "serving" }).waitFor();
  } finally {
    await page.close();
    mapper.kill("SIGTERM");
    up.kill("SIGTERM");
  }
});
