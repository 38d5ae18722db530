// A live progress line for jobs and downloads: a bar, bytes, speed and ETA.
import { h, size } from "./dom";

export function progressBar(done: bigint | number, total: bigint | number, bytesPerSecond = 0, eta?: number): HTMLElement {
  const d = Number(done);
  const t = Number(total);
  const pct = t > 0 ? Math.min(100, (d / t) * 100) : 0;
  const parts = [t > 0 ? `${size(d)} of ${size(t)}` : "", bytesPerSecond > 0 ? `${size(bytesPerSecond)}/s` : "", eta !== undefined && eta > 0 ? `ETA ${Math.ceil(eta)} s` : ""].filter(Boolean);
  return h("div", { class: "progress" }, h("progress", { max: "100", value: pct.toFixed(1), "aria-label": `${pct.toFixed(0)} percent` }), h("span", { class: "muted" }, parts.join(" · ")));
}
