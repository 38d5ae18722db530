// Downloads, live: every active one is watched (WatchDownload) for bytes, speed, ETA and
// per-file state; pause, resume and cancel.
import { api } from "../api";
import { h, label, size } from "../dom";
import { errorBox } from "../errors";
import { type Download, DownloadState } from "../gen/pumas/fetch/v1/fetch_pb";
import { progressBar } from "../progress";

const ACTIVE = [DownloadState.QUEUED, DownloadState.RUNNING, DownloadState.PAUSED, DownloadState.COMMITTING];
const EVERY_MS = 3000;

function row(d: Download, act: (what: "pause" | "resume" | "cancel", id: string) => void, prioritize: (id: string, priority: number) => void): HTMLElement {
  const active = ACTIVE.includes(d.state);
  const button = (what: "pause" | "resume" | "cancel", text: string) =>
    h("button", { type: "button", onclick: () => act(what, d.downloadId) }, text);
  return h(
    "article",
    { class: "download", "data-id": d.downloadId, "data-state": label(DownloadState, d.state) },
    h("h3", {}, d.repoId, " ", h("span", { class: "muted" }, `@${d.commitSha.slice(0, 12)}`)),
    h("p", {}, h("span", { class: `dstate d${d.state}` }, label(DownloadState, d.state)), d.modelId ? [" → ", h("a", { href: `#/model/${encodeURIComponent(d.modelId)}` }, d.modelId)] : null),
    progressBar(d.bytesDone, d.bytesTotal, d.bytesPerSecond, d.etaSeconds),
    d.error ? h("p", { class: "error" }, d.error.reason, ": ", d.error.message) : null,
    h(
      "details",
      {},
      h("summary", {}, `${d.files.length} files`),
      h("ul", {}, d.files.map((f) => h("li", {}, `${f.path} — ${size(f.bytesDone)} of ${size(f.sizeBytes)}${f.verified ? " ✓ verified" : ""}`))),
    ),
    active
      ? h(
          "p",
          { class: "actions" },
          d.state === DownloadState.PAUSED ? button("resume", "Resume") : button("pause", "Pause"),
          button("cancel", "Cancel"),
          h("label", {}, "Priority ", h("input", { type: "number", value: String(d.priority), size: "3", "aria-label": "Priority (higher runs first)", onchange: (e: Event) => prioritize(d.downloadId, Number((e.target as HTMLInputElement).value)) })),
        )
      : d.state === DownloadState.FAILED
        ? h("p", { class: "actions" }, button("resume", "Retry"))
        : null,
  );
}

export function downloadsPage(root: HTMLElement): () => void {
  const list = h("div", { id: "downloads" });
  const errors = h("div", {});
  root.replaceChildren(h("h1", {}, "Downloads"), errors, list);
  const stop = new AbortController();
  const watched = new Set<string>();
  const show = (d: Download) => {
    const el = row(d, act, prioritize);
    const old = list.querySelector(`[data-id="${CSS.escape(d.downloadId)}"]`);
    if (old) old.replaceWith(el);
    else list.prepend(el);
  };
  const watch = async (id: string) => {
    if (watched.has(id)) return;
    watched.add(id);
    try {
      for await (const u of api.watchDownload({ downloadId: id }, { signal: stop.signal })) {
        if (u.download) show(u.download);
      }
    } catch (err) {
      if (!stop.signal.aborted) errors.replaceChildren(errorBox(err));
    } finally {
      watched.delete(id);
    }
  };
  async function act(what: "pause" | "resume" | "cancel", id: string) {
    try {
      const answer =
        what === "pause" ? await api.pauseDownload({ downloadId: id }) : what === "resume" ? await api.resumeDownload({ downloadId: id }) : await api.cancelDownload({ downloadId: id });
      if (answer.download) show(answer.download);
      void watch(id);
    } catch (err) {
      errors.replaceChildren(errorBox(err));
    }
  }
  async function prioritize(id: string, priority: number) {
    try {
      const answer = await api.setDownloadPriority({ downloadId: id, priority });
      if (answer.download) show(answer.download);
    } catch (err) {
      errors.replaceChildren(errorBox(err));
    }
  }
  const load = async () => {
    try {
      const answer = await api.listDownloads({ pageSize: 100 });
      if (!answer.downloads.length && !list.children.length) list.replaceChildren(h("p", { class: "muted" }, "No downloads yet: start one from the Hub page."));
      for (const d of [...answer.downloads].reverse()) {
        if (!list.querySelector(`[data-id="${CSS.escape(d.downloadId)}"]`)) show(d);
        if (ACTIVE.includes(d.state)) void watch(d.downloadId);
      }
      errors.replaceChildren();
    } catch (err) {
      errors.replaceChildren(errorBox(err, load));
    }
  };
  void load();
  const timer = window.setInterval(load, EVERY_MS);
  return () => {
    clearInterval(timer);
    stop.abort();
  };
}
