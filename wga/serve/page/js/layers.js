/* The pickers: the model and preset selects (with why a model is unavailable) and the filterable
 * layer list. They only draw what the catalog holds and say which entry is current; choosing
 * one is the app's business (it writes the URL and syncs). */
(function () {
  "use strict";
  const wga = (window.wga = window.wga || {});

  const KIND_ORDER = ["conv", "activation", "merge", "pool", "dense", "class"];

  class Pickers {
    constructor(el) {
      this.el = el; // {model, preset, reason, layerFilter, kinds, layerList, layerEmpty}
      el.layerFilter.addEventListener("input", () => this.drawLayers());
      el.kinds.addEventListener("change", () => this.drawLayers());
      this.layers = [];
      this.current = null;
    }

    drawModels(models, current) {
      wga.detail.fillSelect(
        this.el.model,
        models.map((m) => ({
          value: m.name,
          label: m.title && m.title !== m.name ? `${m.name} — ${m.title}` : m.name,
          disabled: !m.available,
          title: m.reason,
        })),
        current || "",
      );
      this._drawReasons(models.filter((m) => !m.available));
    }

    _drawReasons(unavailable) {
      const box = this.el.reason;
      box.replaceChildren();
      box.hidden = !unavailable.length;
      if (!unavailable.length) return;
      const details = document.createElement("details");
      const summary = document.createElement("summary");
      summary.textContent = `${unavailable.length} model${unavailable.length > 1 ? "s" : ""} unavailable — why?`;
      const list = document.createElement("ul");
      for (const m of unavailable) {
        const item = document.createElement("li");
        const name = document.createElement("strong");
        name.textContent = m.name;
        item.append(name, `: ${m.reason || "no reason given"}`);
        list.append(item);
      }
      details.append(summary, list);
      box.append(details);
    }

    drawPresets(presets, current) {
      wga.detail.fillSelect(
        this.el.preset,
        presets.map((p) => ({ value: p.name, label: p.name, title: p.description || p.title })),
        current,
      );
    }

    selectPreset(name) {
      if (this.el.preset.value !== name) this.el.preset.value = name;
    }

    /* A new list of layers: the kind filters are rebuilt, the text filter kept. */
    setLayers(layers) {
      this.layers = layers || [];
      this._drawKinds();
      this.drawLayers();
    }

    setCurrent(name) {
      this.current = name;
      this.drawLayers();
    }

    drawLayers() {
      const el = this.el;
      const query = el.layerFilter.value.trim().toLowerCase();
      const kinds = new Set([...el.kinds.querySelectorAll("input:checked")].map((i) => i.value));
      el.layerList.replaceChildren();
      let shown = 0;
      for (const layer of this.layers) {
        const kind = layer.kind || "other";
        if (query && !layer.name.toLowerCase().includes(query)) continue;
        if (el.kinds.children.length > 1 && !kinds.has(kind)) continue;
        const item = document.createElement("li");
        item.append(this._layerButton(layer, kind));
        el.layerList.append(item);
        shown++;
      }
      el.layerEmpty.hidden = shown > 0 || !this.layers.length;
    }

    _layerButton(layer, kind) {
      const button = document.createElement("button");
      button.type = "button";
      button.dataset.layer = layer.name;
      button.setAttribute("aria-current", String(layer.name === this.current));
      const parts = [
        ["layer-name", layer.name],
        ["layer-kind", kind],
        ["layer-units", String(layer.units)],
      ].map(([className, text]) => {
        const span = document.createElement("span");
        span.className = className;
        span.textContent = text;
        return span;
      });
      parts[2].title = `${layer.units} units`;
      button.append(...parts);
      button.setAttribute("aria-label", `${layer.name}, ${kind}, ${layer.units} units`);
      return button;
    }

    _drawKinds() {
      const el = this.el;
      const present = new Set(this.layers.map((l) => l.kind || "other"));
      const kinds = [...present].sort((a, b) => kindRank(a) - kindRank(b));
      const legend = el.kinds.querySelector("legend");
      el.kinds.replaceChildren(legend);
      if (kinds.length < 2) return;
      for (const kind of kinds) {
        const label = document.createElement("label");
        const box = document.createElement("input");
        box.type = "checkbox";
        box.value = kind;
        box.checked = true;
        label.append(box, kind);
        el.kinds.append(label);
      }
    }
  }

  function kindRank(kind) {
    const i = KIND_ORDER.indexOf(kind);
    return i < 0 ? KIND_ORDER.length : i;
  }

  wga.layers = { Pickers, kindRank };
})();
