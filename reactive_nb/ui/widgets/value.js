// KPI value view for reactive_nb (anywidget ESM, no build step): a label, a big number
// and the live query's status; the number flashes when it changes.

const FLASH_MS = 1200;

function render({ model, el }) {
  const root = document.createElement("div");
  root.className = "rnb-value";
  const label = document.createElement("div");
  label.className = "rnb-value-label";
  const number = document.createElement("div");
  number.className = "rnb-value-number";
  const status = document.createElement("div");
  status.className = "rnb-value-status";
  root.append(label, number, status);
  el.append(root);

  let shown = null;
  let timer = null;

  const draw = () => {
    const text = model.get("text");
    label.textContent = model.get("label");
    number.textContent = text;
    root.dataset.name = model.get("name");
    root.dataset.label = model.get("label");
    const state = model.get("status");
    status.dataset.status = state;
    status.textContent = state === "error" ? `error: ${model.get("error") || ""}` : state;
    status.title = model.get("updated_at") || "";
    if (shown !== null && text !== shown) {
      root.classList.remove("rnb-flash");
      void root.offsetWidth; // restart the animation
      root.classList.add("rnb-flash");
      clearTimeout(timer);
      timer = setTimeout(() => root.classList.remove("rnb-flash"), FLASH_MS);
    }
    shown = text;
  };

  draw();
  model.on("change", draw);
  return () => {
    clearTimeout(timer);
    model.off("change", draw);
  };
}

export default { render };
