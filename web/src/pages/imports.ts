// Import files or folders on the server into the library, with the job's live progress.
import { api } from "../api";
import { h, label } from "../dom";
import { errorBox } from "../errors";
import { ImportMode } from "../gen/pumas/common/v1/model_pb";
import { JobState } from "../gen/pumas/common/v1/job_pb";
import { ItemOutcome } from "../gen/pumas/index/v1/index_pb";
import { progressBar } from "../progress";

export function importPage(root: HTMLElement): void {
  const paths = h("textarea", { id: "import-paths", rows: "4", placeholder: "/path/on/the/server/model.safetensors\n/path/to/a/folder", "aria-label": "Paths on the server, one per line" });
  const mode = h(
    "select",
    { id: "import-mode", "aria-label": "Mode" },
    h("option", { value: String(ImportMode.COPY) }, "copy"),
    h("option", { value: String(ImportMode.MOVE) }, "move"),
    h("option", { value: String(ImportMode.HARDLINK) }, "hardlink"),
    h("option", { value: String(ImportMode.REFLINK) }, "reflink"),
  );
  const out = h("div", { id: "import-job" });
  const run = async () => {
    out.replaceChildren();
    try {
      const list = paths.value.split("\n").map((p) => p.trim()).filter(Boolean);
      const started = await api.importModels({ paths: list, mode: Number(mode.value) as ImportMode });
      const id = started.job?.status?.jobId ?? "";
      for await (const u of api.watchImportJob({ jobId: id })) {
        const job = u.job;
        const p = job?.status?.progress;
        out.replaceChildren(
          h("p", {}, `Job ${id}: `, h("strong", { class: "job-state" }, label(JobState, job?.status?.state ?? 0)), p?.currentItem ? ` — ${p.currentItem}` : ""),
          p ? progressBar(p.bytesDone, p.bytesTotal, p.bytesPerSecond, p.etaSeconds) : "",
          h(
            "ul",
            {},
            (job?.results ?? []).map((r) =>
              h("li", {}, `${label(ItemOutcome, r.outcome)}: `, r.modelId ? h("a", { href: `#/model/${encodeURIComponent(r.modelId)}` }, r.modelId) : r.source, r.error ? h("span", { class: "error-inline" }, ` ${r.error.message}`) : null),
            ),
          ),
          job?.status?.error ? h("p", { class: "error" }, job.status.error.message) : "",
        );
      }
    } catch (err) {
      out.replaceChildren(errorBox(err, run));
    }
  };
  root.replaceChildren(
    h("h1", {}, "Import"),
    h("p", { class: "muted" }, "Paths are on the machine the index runs on."),
    paths,
    h("p", { class: "actions" }, mode, h("button", { type: "button", id: "import-start", onclick: () => void run() }, "Import")),
    out,
  );
}
