// The library: search as you type (debounced), filters, sort, keyset paging, counts.
import { create } from "@bufbuild/protobuf";
import { api } from "../api";
import { h, label, size } from "../dom";
import { errorBox } from "../errors";
import { ModelFilterSchema, ModelFormat, ModelOrder, ModelState, ModelType } from "../gen/pumas/common/v1/model_pb";
import type { SearchModelsResponse } from "../gen/pumas/gateway/v1/gateway_pb";

// Short: the index answers a page in milliseconds; a stale answer is dropped, not shown.
const DEBOUNCE_MS = 20;
const PAGE = 50;

function options<E extends Record<string, string | number>>(e: E, none: string): HTMLOptionElement[] {
  return [
    h("option", { value: "0" }, none),
    ...Object.entries(e)
      .filter(([k, v]) => typeof v === "number" && v > 0 && k !== "UNKNOWN")
      .map(([k, v]) => h("option", { value: String(v) }, k.toLowerCase().replace(/_/g, " "))),
  ];
}

export function libraryPage(root: HTMLElement): void {
  const params = new URLSearchParams(location.hash.split("?")[1] ?? "");
  const query = h("input", {
    type: "search",
    id: "search",
    placeholder: "Search the library: name, family, tags, trigger words…",
    "aria-label": "Search the library",
    value: params.get("q") ?? "",
    autofocus: true,
  });
  const type = h("select", { "aria-label": "Type" }, ...options(ModelType, "any type"));
  const format = h("select", { "aria-label": "Format" }, ...options(ModelFormat, "any format"));
  const state = h("select", { "aria-label": "State" }, ...options(ModelState, "any state"));
  const family = h("input", { type: "text", placeholder: "family", "aria-label": "Family", size: "8" });
  const tag = h("input", { type: "text", placeholder: "tag", "aria-label": "Tag", size: "8" });
  // Sizes in MiB: what a person compares models by.
  const minSize = h("input", { type: "number", min: "0", placeholder: "min MiB", "aria-label": "Smallest size in MiB", id: "min-size", size: "6" });
  const maxSize = h("input", { type: "number", min: "0", placeholder: "max MiB", "aria-label": "Largest size in MiB", id: "max-size", size: "6" });
  const mib = (input: HTMLInputElement) => (input.value.trim() === "" ? undefined : BigInt(Math.round(Number(input.value) * 1024 * 1024)));
  const order = h(
    "select",
    { "aria-label": "Sort" },
    h("option", { value: String(ModelOrder.UNSPECIFIED) }, "best match"),
    h("option", { value: String(ModelOrder.NAME) }, "name"),
    h("option", { value: String(ModelOrder.SIZE_DESC) }, "largest"),
    h("option", { value: String(ModelOrder.ADDED_TIME_DESC) }, "newest"),
  );
  const summary = h("p", { class: "muted", id: "summary", "aria-live": "polite" });
  const body = h("tbody", {});
  const more = h("button", { type: "button", hidden: true }, "More");
  const errors = h("div", {});
  root.replaceChildren(
    h("div", { class: "filters" }, query, type, format, state, family, tag, minSize, maxSize, order),
    summary,
    errors,
    h(
      "table",
      { class: "models" },
      h("thead", {}, h("tr", {}, h("th", {}, "Name"), h("th", {}, "Type"), h("th", {}, "Format"), h("th", { class: "num" }, "Size"), h("th", {}, "State"))),
      body,
    ),
    more,
  );

  let seq = 0;
  let renders = 0;
  let next = "";
  const request = (pageToken: string) => ({
    query: query.value.trim(),
    pageSize: PAGE,
    pageToken,
    orderBy: Number(order.value) as ModelOrder,
    filters: create(ModelFilterSchema, {
      modelTypes: type.value !== "0" ? [Number(type.value)] : [],
      formats: format.value !== "0" ? [Number(format.value)] : [],
      states: state.value !== "0" ? [Number(state.value)] : [],
      families: family.value.trim() ? [family.value.trim().toLowerCase()] : [],
      tags: tag.value.trim() ? [tag.value.trim()] : [],
      minSizeBytes: mib(minSize),
      maxSizeBytes: mib(maxSize),
    }),
  });
  const show = (answer: SearchModelsResponse, append: boolean, ms: number) => {
    const rows = answer.results.flatMap((r) => {
      if (r.result.case !== "local" || !r.result.value.model) return [];
      const m = r.result.value.model;
      return [
        h(
          "tr",
          {},
          h("td", {}, h("a", { href: `#/model/${encodeURIComponent(m.modelId)}` }, m.displayName || m.modelId), h("div", { class: "muted id" }, m.modelId)),
          h("td", {}, `${label(ModelType, m.modelType)} / ${m.family}`),
          h("td", {}, label(ModelFormat, m.format), m.quantization ? ` ${m.quantization}` : ""),
          h("td", { class: "num" }, size(m.totalSizeBytes)),
          h("td", {}, h("span", { class: `state s${m.state}` }, label(ModelState, m.state))),
        ),
      ];
    });
    if (append) body.append(...rows);
    else body.replaceChildren(...rows);
    next = answer.nextPageToken;
    more.hidden = !next;
    const total = Number(answer.localTotalSize);
    summary.textContent = `${total > 500 ? "more than 500" : total} model${total === 1 ? "" : "s"} · ${ms.toFixed(0)} ms`;
    // Counts renders, so a test can tell an answer came even when it shows the same models.
    summary.dataset.renders = String(++renders);
  };
  const run = async (append: boolean) => {
    const mine = ++seq;
    const started = performance.now();
    try {
      const answer = await api.searchModels(request(append ? next : ""));
      if (mine !== seq) return; // a newer keystroke won
      errors.replaceChildren();
      show(answer, append, performance.now() - started);
    } catch (err) {
      if (mine === seq) errors.replaceChildren(errorBox(err, () => run(false)));
    }
  };
  let timer = 0;
  const soon = () => {
    clearTimeout(timer);
    timer = window.setTimeout(() => {
      history.replaceState(null, "", `#/?q=${encodeURIComponent(query.value)}`);
      void run(false);
    }, DEBOUNCE_MS);
  };
  query.addEventListener("input", soon);
  for (const el of [type, format, state, order]) el.addEventListener("change", () => void run(false));
  for (const el of [family, tag, minSize, maxSize]) el.addEventListener("input", soon);
  more.addEventListener("click", () => void run(true));
  void run(false);
}
