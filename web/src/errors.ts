// Errors from the API, shown with the code, message and details the server sent; a missing or
// wrong token asks for one.
import { describe, isUnauthenticated, setToken, token } from "./api";
import { h } from "./dom";

export function errorBox(err: unknown, retry?: () => void): HTMLElement {
  const d = describe(err);
  const box = h(
    "div",
    { class: "error", role: "alert" },
    h("strong", {}, d.code),
    " ",
    d.message,
    d.details.length ? h("ul", { class: "details" }, d.details.map((line) => h("li", {}, line))) : null,
  );
  if (isUnauthenticated(err)) {
    const input = h("input", {
      type: "password",
      placeholder: "API token",
      "aria-label": "API token",
      value: token(),
    });
    box.append(
      h(
        "form",
        {
          class: "token",
          onsubmit: (e: Event) => {
            e.preventDefault();
            setToken(input.value.trim());
            retry?.();
          },
        },
        input,
        h("button", { type: "submit" }, "Use token"),
      ),
    );
  }
  return box;
}
