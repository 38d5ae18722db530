// The hub: search (cached by the fetch service), what the library already holds of each result
// (per selection), and a download of the whole repository or one GGUF quant.
import { api } from "../api";
import { h, size } from "../dom";
import { errorBox } from "../errors";
import type { HubSearchResult } from "../gen/pumas/gateway/v1/gateway_pb";

/** Files or a quant of one repository, with sizes (GetHubModel), for a download of just that. */
async function chooser(repoId: string, start: (repo: string, quant: string, files: string[]) => void): Promise<HTMLElement> {
  const info = (await api.getHubModel({ repoId })).model;
  const files = info?.files ?? [];
  const total = h("span", { class: "muted" });
  const boxes = files.map((f) => h("input", { type: "checkbox", checked: true, value: f.path, "aria-label": f.path }));
  const recount = () => {
    const bytes = files.filter((_, i) => boxes[i].checked).reduce((sum, f) => sum + Number(f.sizeBytes), 0);
    total.textContent = `${boxes.filter((b) => b.checked).length} files, ${size(bytes)}`;
  };
  boxes.forEach((b) => b.addEventListener("change", recount));
  recount();
  const quantSize = (q: string) =>
    files.filter((f) => !f.path.toLowerCase().endsWith(".gguf") || f.path.toLowerCase().includes("mmproj") || f.path.toUpperCase().includes(q.toUpperCase())).reduce((sum, f) => sum + Number(f.sizeBytes), 0);
  const quants = (info?.ggufQuantizations ?? []).map((q) =>
    h("button", { type: "button", "data-quant": q, onclick: () => start(repoId, q, []) }, `${q} (${size(quantSize(q))})`),
  );
  return h(
    "div",
    { class: "chooser" },
    quants.length ? h("p", { class: "actions" }, "One quantization: ", ...quants) : null,
    h(
      "details",
      {},
      h("summary", {}, "Choose files"),
      h("ul", { class: "files" }, files.map((f, i) => h("li", {}, h("label", {}, boxes[i], ` ${f.path} `, h("span", { class: "muted" }, size(f.sizeBytes)))))),
      h("p", { class: "actions" }, total, h("button", { type: "button", onclick: () => start(repoId, "", files.filter((_, i) => boxes[i].checked).map((f) => f.path)) }, "Download these")),
    ),
  );
}

function result(r: HubSearchResult, start: (repo: string, quant: string, files?: string[]) => void): HTMLElement {
  const s = r.summary;
  if (!s) return h("div", {});
  const quant = h("input", { type: "text", placeholder: "quant, e.g. Q4_K_M (GGUF)", "aria-label": `quantization of ${s.repoId}`, size: "14" });
  const held = r.librarySelections.map((sel) =>
    h("li", {}, h("a", { href: `#/model/${encodeURIComponent(sel.modelId)}` }, sel.modelId), ` (${sel.wholeRepository ? "whole repository" : sel.selectionLabel || "a subset"}${sel.atHubCommit ? "" : ", older commit"})`),
  );
  return h(
    "article",
    { class: "hub-result", "data-repo": s.repoId },
    h("h3", {}, s.repoId, s.gated ? h("span", { class: "warn" }, " · gated") : null),
    h("p", { class: "muted" }, [s.pipelineTag, s.library, `${s.downloads.toLocaleString()} downloads`, `${s.likes.toLocaleString()} likes`].filter(Boolean).join(" · ")),
    held.length ? h("div", {}, "In the library: ", h("ul", {}, held)) : null,
    r.downloading && r.download ? h("p", {}, h("a", { href: "#/downloads" }, "Downloading…")) : null,
    h(
      "form",
      {
        class: "actions",
        onsubmit: (e: Event) => {
          e.preventDefault();
          start(s.repoId, quant.value.trim());
        },
      },
      quant,
      h("button", { type: "submit" }, "Download"),
      h(
        "button",
        {
          type: "button",
          class: "choose",
          onclick: async (e: Event) => {
            const button = e.currentTarget as HTMLButtonElement;
            button.disabled = true;
            try {
              button.closest("article")?.append(await chooser(s.repoId, start));
            } catch (err) {
              button.closest("article")?.append(errorBox(err));
            }
          },
        },
        "Files and sizes…",
      ),
    ),
  );
}

export function hubPage(root: HTMLElement): void {
  const query = h("input", { type: "search", id: "hub-search", placeholder: "Search the Hugging Face Hub", "aria-label": "Search the hub", autofocus: true });
  const results = h("div", { id: "hub-results" });
  const status = h("div", {});
  const start = async (repoId: string, quant: string, files: string[] = []) => {
    try {
      await api.startDownload({ repoId, selection: quant || files.length ? { ggufQuantization: quant, allowPatterns: files } : undefined });
      location.hash = "#/downloads";
    } catch (err) {
      status.replaceChildren(errorBox(err));
    }
  };
  const search = async () => {
    try {
      const answer = await api.searchHub({ search: { query: query.value.trim(), pageSize: 20 } });
      status.replaceChildren(answer.stale ? h("p", { class: "warn" }, "The hub did not answer; these results are from the cache.") : "");
      results.replaceChildren(...answer.results.map((r) => result(r, start)));
      if (!answer.results.length) results.replaceChildren(h("p", { class: "muted" }, "Nothing on the hub matches."));
    } catch (err) {
      status.replaceChildren(errorBox(err, search));
    }
  };
  root.replaceChildren(
    h("h1", {}, "Hub"),
    h("form", { class: "filters", onsubmit: (e: Event) => { e.preventDefault(); void search(); } }, query, h("button", { type: "submit" }, "Search")),
    status,
    results,
  );
}
