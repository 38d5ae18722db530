// The Pumas web UI: a hash router over its pages (library, model, hub, downloads, apps, import,
// status), a theme switch,
// and nothing that loads from outside the gateway (the suite runs offline).
import { h } from "./dom";
import { appsPage } from "./pages/apps";
import { downloadsPage } from "./pages/downloads";
import { hubPage } from "./pages/hub";
import { importPage } from "./pages/imports";
import { libraryPage } from "./pages/library";
import { modelPage } from "./pages/model";
import { statusPage } from "./pages/status";

const THEME_KEY = "pumas.theme";

function applyTheme(theme: string): void {
  document.documentElement.dataset.theme = theme;
}

function header(): HTMLElement {
  const themes = ["auto", "light", "dark"];
  const current = localStorage.getItem(THEME_KEY) ?? "auto";
  applyTheme(current);
  const select = h(
    "select",
    { "aria-label": "Theme" },
    themes.map((t) => h("option", { value: t, selected: t === current }, t === "auto" ? "system theme" : `${t} theme`)),
  );
  select.addEventListener("change", () => {
    localStorage.setItem(THEME_KEY, select.value);
    applyTheme(select.value);
  });
  return h(
    "header",
    {},
    h("a", { href: "#/", class: "brand" }, "Pumas"),
    h(
      "nav",
      {},
      h("a", { href: "#/" }, "Library"),
      h("a", { href: "#/hub" }, "Hub"),
      h("a", { href: "#/downloads" }, "Downloads"),
      h("a", { href: "#/apps" }, "Apps"),
      h("a", { href: "#/import" }, "Import"),
      h("a", { href: "#/status" }, "Status"),
    ),
    select,
  );
}

let leave: (() => void) | undefined;

function route(main: HTMLElement): void {
  leave?.();
  leave = undefined;
  const path = location.hash.replace(/^#/, "").split("?")[0] || "/";
  if (path.startsWith("/model/")) modelPage(main, decodeURIComponent(path.slice("/model/".length)));
  else if (path === "/status") leave = statusPage(main);
  else if (path === "/downloads") leave = downloadsPage(main);
  else if (path === "/hub") hubPage(main);
  else if (path === "/apps") appsPage(main);
  else if (path === "/import") importPage(main);
  else libraryPage(main);
}

const main = h("main", {});
document.body.replaceChildren(header(), main);
window.addEventListener("hashchange", () => route(main));
route(main);
