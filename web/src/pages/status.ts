// The gateway and every backend, with versions and health; refreshed every two seconds, so a
// backend going down and coming back shows as it happens.
import { api } from "../api";
import { h, label } from "../dom";
import { errorBox } from "../errors";
import { BackendState } from "../gen/pumas/gateway/v1/gateway_pb";

const EVERY_MS = 2000;

export function statusPage(root: HTMLElement): () => void {
  const body = h("div", {});
  root.replaceChildren(h("h1", {}, "Status"), body);
  const load = async () => {
    try {
      const s = await api.getServiceInfo({});
      body.replaceChildren(
        h("p", {}, `Gateway ${s.info?.version ?? ""} on ${s.info?.hostname ?? ""}, dependency contract v${s.info?.dependencyContractVersion ?? ""}`),
        h(
          "table",
          { id: "backends" },
          h("thead", {}, h("tr", {}, ["Role", "Name", "Address", "State", "Version", "Reason"].map((c) => h("th", {}, c)))),
          h(
            "tbody",
            {},
            s.backends.map((b) =>
              h(
                "tr",
                { "data-role": b.role, "data-name": b.name },
                h("td", {}, b.role),
                h("td", {}, b.name),
                h("td", {}, b.address),
                h("td", {}, h("span", { class: `backend b${b.state}` }, label(BackendState, b.state))),
                h("td", {}, b.info?.version ?? ""),
                h("td", {}, b.reason),
              ),
            ),
          ),
        ),
      );
    } catch (err) {
      body.replaceChildren(errorBox(err, load));
    }
  };
  void load();
  const timer = window.setInterval(load, EVERY_MS);
  return () => clearInterval(timer);
}
