// Apps on every mapper host with their link state; preview a mapping as a diff (create,
// replace, conflict, what the app would not see), apply, repair and unmap with live progress.
import { api } from "../api";
import { h, label } from "../dom";
import { errorBox } from "../errors";
import { JobState } from "../gen/pumas/common/v1/job_pb";
import { LinkActionKind, type MappingJob, type MappingPlan } from "../gen/pumas/mapper/v1/mapper_pb";
import { progressBar } from "../progress";

function planView(plan: MappingPlan): HTMLElement {
  return h(
    "div",
    { class: "plan" },
    h("p", {}, `${plan.createCount} to create, ${plan.replaceCount} to replace, ${plan.removeCount} to remove, ${plan.conflictCount} conflicts, ${plan.keepCount} unchanged`),
    plan.actions.length
      ? h("table", {}, h("tbody", {}, plan.actions.map((a) => h("tr", { class: `k${a.kind}` }, h("td", {}, label(LinkActionKind, a.kind)), h("td", {}, a.targetPath), h("td", { class: "muted" }, a.reason)))))
      : null,
    plan.warnings.length ? h("ul", { class: "warn" }, plan.warnings.map((w) => h("li", {}, `${w.code}: ${w.message}`))) : null,
  );
}

function jobView(job: MappingJob): HTMLElement {
  const p = job.status?.progress;
  return h(
    "div",
    {},
    h("p", {}, "Job: ", h("strong", { class: "job-state" }, label(JobState, job.status?.state ?? 0))),
    p ? progressBar(p.bytesDone, p.bytesTotal) : null,
    job.plan ? planView(job.plan) : null,
    job.status?.error ? h("p", { class: "error" }, job.status.error.message) : null,
  );
}

export function appsPage(root: HTMLElement): void {
  const body = h("div", {});
  root.replaceChildren(h("h1", {}, "Apps"), body);
  // Each app's output (a plan, a job) survives the refresh of the counts after a job.
  const outs = new Map<string, HTMLElement>();
  const act = async (out: HTMLElement, mapper: string, app: string, what: "preview" | "apply" | "repair" | "unmap") => {
    try {
      if (what === "preview") {
        const answer = await api.previewMapping({ app, mapper });
        out.replaceChildren(answer.plan ? planView(answer.plan) : "");
        return;
      }
      const started =
        what === "apply" ? await api.applyMapping({ app, mapper }) : what === "repair" ? await api.repairMapping({ app, mapper }) : await api.unmap({ app, mapper });
      const id = started.job?.status?.jobId ?? "";
      for await (const u of api.watchMappingJob({ jobId: id, mapper })) {
        if (u.job) out.replaceChildren(jobView(u.job));
      }
      void load();
    } catch (err) {
      out.replaceChildren(errorBox(err));
    }
  };
  const load = async () => {
    try {
      const answer = await api.listApps({});
      body.replaceChildren(
        ...answer.mappers.map((m) =>
          h(
            "section",
            {},
            h("h2", {}, `Host ${m.mapper}`),
            m.unavailable ? h("p", { class: "error" }, `Not answering: ${m.reason}`) : null,
            m.apps.length ? null : h("p", { class: "muted" }, "No app is configured on this host (see docs/MAPPING.md)."),
            ...m.apps.map((a) => {
              const key = `${m.mapper}/${a.name}`;
              const out = outs.get(key) ?? h("div", { class: "app-out" });
              outs.set(key, out);
              const button = (what: "preview" | "apply" | "repair" | "unmap", text: string) =>
                h("button", { type: "button", "data-action": what, onclick: () => void act(out, m.mapper, a.name, what) }, text);
              return h(
                "article",
                { class: "app", "data-app": a.name },
                h("h3", {}, a.name, " ", h("span", { class: "muted" }, `${a.kind} · ${a.root}`)),
                a.configErrors.length ? h("ul", { class: "error" }, a.configErrors.map((e) => h("li", {}, `line ${e.line}: ${e.message}`))) : null,
                h("p", {}, `${a.linkCount} linked, ${a.brokenCount} broken, ${a.conflictCount} conflicts${a.unmappedTime ? " · unmapped" : ""}`),
                h("p", { class: "actions" }, button("preview", "Preview"), button("apply", "Apply"), button("repair", "Repair"), button("unmap", "Unmap")),
                out,
              );
            }),
          ),
        ),
      );
    } catch (err) {
      body.replaceChildren(errorBox(err, load));
    }
  };
  void load();
}
