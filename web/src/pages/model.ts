// One model: its metadata, preview, files and hashes, why it was classified so, what the hub
// says, its bindings, its link state in every app, and delete (with the refusal explained).
import { api } from "../api";
import { h, label, size } from "../dom";
import { errorBox } from "../errors";
import { BindingOrigin, ValidationState } from "../gen/pumas/common/v1/dependency_pb";
import { BaseModelRelation, ModelFormat, ModelState, ModelType, type ModelRecord } from "../gen/pumas/common/v1/model_pb";
import { LinkState } from "../gen/pumas/mapper/v1/mapper_pb";
import type { ModelView } from "../gen/pumas/gateway/v1/gateway_pb";

function rows(pairs: [string, string | Node | null | undefined][]): HTMLElement {
  return h(
    "dl",
    { class: "facts" },
    ...pairs.filter(([, v]) => v !== "" && v !== null && v !== undefined).flatMap(([k, v]) => [h("dt", {}, k), h("dd", {}, v as string | Node)]),
  );
}

function modelLink(id: string): HTMLElement {
  return h("a", { href: `#/model/${encodeURIComponent(id)}` }, id);
}

function preview(m: ModelRecord): HTMLElement | null {
  const side = m.sideFiles.find((s) => s.role === "preview" && s.data.length > 0);
  if (!side) return null;
  const url = URL.createObjectURL(new Blob([side.data as BlobPart], { type: side.mediaType }));
  return h("img", { class: "preview", src: url, alt: `preview of ${m.displayName}` });
}

function facts(m: ModelRecord): HTMLElement {
  const hub = m.source?.source.case === "hub" ? m.source.source.value : undefined;
  const e = m.embedded;
  return rows([
    ["Id", m.modelId],
    ["Type / family", `${label(ModelType, m.modelType)} / ${m.family}`],
    ["Architecture", m.architecture],
    ["Format", `${label(ModelFormat, m.format)}${m.unsafeFormat ? " (pickle: can run code when loaded)" : ""}`],
    ["Precision", [m.precision, m.quantization].filter(Boolean).join(" ")],
    ["Parameters", m.parameterCount !== undefined ? m.parameterCount.toLocaleString() : ""],
    ["Size", size(m.totalSizeBytes)],
    ["State", `${label(ModelState, m.state)}${m.stateReason ? ` (${m.stateReason})` : ""}`],
    ["License", m.license],
    ["Source", hub ? `${hub.repoId}@${hub.commitSha.slice(0, 12)} (${hub.revision})` : m.source?.source.case === "local" ? m.source.source.value.originalPath : ""],
    ["Context", e?.contextLength !== undefined ? e.contextLength.toLocaleString() : ""],
    ["Trigger words", e?.triggerWords.join(", ")],
    ["Base model", e?.baseModel],
    ["Tags", m.tags.join(", ")],
    ["Path", m.libraryPath],
    ["Your edits", m.overriddenFields.join(", ")],
  ]);
}

function hubSection(m: ModelRecord): HTMLElement | null {
  const hub = m.hub;
  if (!hub) return null;
  return h(
    "section",
    {},
    h("h2", {}, "On the hub"),
    rows([
      ["Pipeline", hub.pipelineTag],
      ["Library", hub.libraryName],
      ["Languages", hub.languages.join(", ")],
      ["Datasets", hub.datasets.join(", ")],
      ["Popularity", `${hub.downloads.toLocaleString()} downloads, ${hub.likes.toLocaleString()} likes`],
      ["Gated", hub.gated ? "yes" : ""],
    ]),
    hub.baseModels.length
      ? h(
          "ul",
          {},
          hub.baseModels.map((b) =>
            h("li", {}, `${label(BaseModelRelation, b.relation)} of ${b.repoId}`, b.modelIds.length ? [" — in the library: ", ...b.modelIds.map(modelLink)] : null),
          ),
        )
      : null,
    m.derivedModelIds.length ? h("p", {}, "Derived in the library: ", ...m.derivedModelIds.map(modelLink)) : null,
  );
}

function table(head: string[], body: (string | Node)[][]): HTMLElement {
  return h(
    "table",
    {},
    h("thead", {}, h("tr", {}, head.map((c) => h("th", {}, c)))),
    h("tbody", {}, body.map((r) => h("tr", {}, r.map((c) => h("td", {}, c))))),
  );
}

/** Platforms as `pumas resolve` names them: os-arch-accelerator. */
const PLATFORMS: [string, { os: string; arch: string; accelerator: string; acceleratorVersion: string }][] = [
  ["Linux x86-64, CUDA 12", { os: "linux", arch: "x86_64", accelerator: "cuda", acceleratorVersion: "12.4" }],
  ["Linux x86-64, CPU", { os: "linux", arch: "x86_64", accelerator: "cpu", acceleratorVersion: "" }],
  ["Linux x86-64, ROCm", { os: "linux", arch: "x86_64", accelerator: "rocm", acceleratorVersion: "7.1" }],
  ["macOS Apple silicon", { os: "macos", arch: "aarch64", accelerator: "mps", acceleratorVersion: "" }],
  ["Windows x86-64, CUDA 12", { os: "windows", arch: "x86_64", accelerator: "cuda", acceleratorVersion: "12.4" }],
];
const BACKENDS = ["torch-cuda", "torch-cpu", "torch-rocm", "torch-mps", "llama-cpp", "onnxruntime"];

/** What the model needs on a platform with a backend (ResolveModelDependencyRequirements). */
function resolution(m: ModelRecord): HTMLElement {
  const platform = h("select", { "aria-label": "Platform" }, PLATFORMS.map(([name], i) => h("option", { value: String(i) }, name)));
  const backends = [...new Set([...m.dependencyBindings.map((b) => b.backendKey), ...BACKENDS])];
  const backend = h("select", { "aria-label": "Backend" }, backends.map((b) => h("option", { value: b }, b)));
  const out = h("div", { class: "resolution" });
  const run = async () => {
    try {
      const answer = await api.resolveModelDependencyRequirements({
        modelId: m.modelId,
        backendKey: backend.value,
        platformContext: PLATFORMS[Number(platform.value)][1],
      });
      const r = answer.requirements;
      if (!r) return;
      out.replaceChildren(
        h("p", {}, h("strong", { class: "validation" }, label(ValidationState, r.validationState)), r.platformKey ? ` on ${r.platformKey}` : ""),
        r.validationErrors.length ? h("ul", { class: "warn" }, r.validationErrors.map((e) => h("li", {}, `${e.code}: ${e.message}`))) : "",
        ...r.groups.map((g) =>
          h("div", {}, h("p", {}, `${g.profileId}@${g.profileVersion} (${g.environmentKind})`), h("pre", {}, g.requirements.map((q) => `${q.name}${q.exactPin}${q.indexUrl ? `  # ${q.indexUrl}` : ""}`).join("\n"))),
        ),
      );
    } catch (err) {
      out.replaceChildren(errorBox(err, run));
    }
  };
  return h("div", {}, h("p", { class: "actions" }, platform, backend, h("button", { type: "button", id: "resolve", onclick: () => void run() }, "Resolve")), out);
}

/** The user's edits (overrides.json): name, tags, description, license. */
function editor(m: ModelRecord, reload: () => void): HTMLElement {
  const name = h("input", { type: "text", value: m.displayName, "aria-label": "Name", id: "edit-name" });
  const tags = h("input", { type: "text", value: m.tags.join(", "), "aria-label": "Tags, comma-separated" });
  const license = h("input", { type: "text", value: m.license, "aria-label": "License" });
  const description = h("textarea", { rows: "3", "aria-label": "Description" }, m.description);
  const out = h("div", {});
  const save = async (e: Event) => {
    e.preventDefault();
    try {
      await api.updateModelMetadata({
        update: {
          modelId: m.modelId,
          overrides: {
            displayName: name.value.trim(),
            tags: tags.value.split(",").map((t) => t.trim()).filter(Boolean),
            description: description.value,
            license: license.value.trim(),
          },
          updateMask: { paths: ["display_name", "tags", "description", "license"] },
        },
      });
      reload();
    } catch (err) {
      out.replaceChildren(errorBox(err));
    }
  };
  return h(
    "details",
    {},
    h("summary", {}, "Edit"),
    h("form", { class: "edit", onsubmit: save }, h("label", {}, "Name ", name), h("label", {}, "Tags ", tags), h("label", {}, "License ", license), h("label", {}, "Description ", description), h("button", { type: "submit", id: "edit-save" }, "Save"), out),
  );
}

function render(root: HTMLElement, view: ModelView, reload: () => void): void {
  const m = view.model;
  if (!m) return;
  const status = h("div", {});
  const remove = h("button", { type: "button", class: "danger" }, "Delete…");
  remove.addEventListener("click", async () => {
    if (!confirm(`Delete ${m.modelId} and its files from the library?`)) return;
    try {
      await api.deleteModel({ modelId: m.modelId });
      location.hash = "#/";
    } catch (err) {
      status.replaceChildren(errorBox(err, reload));
    }
  });
  const d = m.detection;
  const parts: (HTMLElement | null)[] = [
    h("p", {}, h("a", { href: "#/" }, "← Library")),
    h("h1", {}, m.displayName || m.modelId),
    preview(m),
    m.description ? h("p", { class: "description" }, m.description) : null,
    facts(m),
    editor(m, reload),
    hubSection(m),
    h("section", {}, h("h2", {}, "Files"), table(["Path", "Size", "SHA-256"], m.files.map((f) => [f.path, size(f.sizeBytes), h("code", {}, f.sha256)]))),
    d
      ? h(
          "section",
          {},
          h("h2", {}, "Why it was classified so"),
          h("p", {}, `Confidence ${d.confidence.toFixed(2)}`, d.runnerUp ? `, runner-up ${d.runnerUp} (${d.runnerUpConfidence.toFixed(2)})` : ""),
          table(["Looked at", "Key", "Value", "Supports"], d.evidence.map((e) => [e.kind, e.key, e.value, e.supports])),
        )
      : null,
    h(
      "section",
      {},
      h("h2", {}, "Dependencies"),
      m.dependencyBindings.length
        ? table(
            ["Profile", "Backend", "Platform", "Bound by"],
            m.dependencyBindings.map((b) => [`${b.profileId}@${b.profileVersion}`, b.backendKey, b.platformSelector, b.origin === BindingOrigin.CATALOG ? "the catalog" : "you"]),
          )
        : h("p", { class: "muted" }, m.declaresNoDependencies ? "Needs nothing (declared)." : "No bindings."),
      resolution(m),
    ),
    h(
      "section",
      {},
      h("h2", {}, "In your apps"),
      view.linkStates.length
        ? table(["Host", "App", "State", "Where"], view.linkStates.map((l) => [l.mapper, l.app, label(LinkState, l.state), l.targetPaths.join("\n")]))
        : h("p", { class: "muted" }, "No app is configured."),
      view.unavailableMappers.length ? h("p", { class: "warn" }, `Not answering: ${view.unavailableMappers.join(", ")}`) : null,
    ),
    h("section", {}, remove, status),
  ];
  root.replaceChildren(...parts.filter((p): p is HTMLElement => p !== null));
}

export function modelPage(root: HTMLElement, id: string): void {
  const load = async () => {
    try {
      const answer = await api.getModel({ modelId: id, includePreview: true });
      if (answer.model) render(root, answer.model, load);
    } catch (err) {
      root.replaceChildren(h("p", {}, h("a", { href: "#/" }, "← Library")), errorBox(err, load));
    }
  };
  root.replaceChildren(h("p", { class: "muted" }, "Loading…"));
  void load();
}
