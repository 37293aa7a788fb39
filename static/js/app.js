/* The explorer page: wires the model picker, the layer list, the unit grid and the unit view to
 * the URL state and the backend. The URL (hash) is the single source of truth: every user action
 * updates it and then `sync()` makes the page match it, so a permalink reopens the same view. */
(function () {
  "use strict";
  const wga = (window.wga = window.wga || {});
  const { Api } = wga.api;

  // The queue runs higher `priority` first (-100 … 100, default 0: GET /api/presets), so the
  // unit view's large render overtakes the grid's previews and pre-empts them.
  const PRIORITY_PREVIEW = -10;
  const PRIORITY_DETAIL = 10;
  const DEFAULT_DETAIL_SIZE = 512;
  const STORAGE_KEY = "wga.api";
  const KIND_ORDER = ["conv", "activation", "merge", "pool", "dense", "class"];

  const $ = (selector) => document.querySelector(selector);
  const el = {
    model: $("#model"),
    preset: $("#preset"),
    reason: $("#model-reason"),
    connection: $("#connection"),
    settings: $("#settings"),
    settingsForm: $("#settings-form"),
    apiAddress: $("#api-address"),
    previewSize: $("#preview-size"),
    previewSteps: $("#preview-steps"),
    seed: $("#seed"),
    banner: $("#banner"),
    layerFilter: $("#layer-filter"),
    kinds: $("#kinds"),
    layerList: $("#layer-list"),
    layerEmpty: $("#layer-empty"),
    gridTitle: $("#grid-title"),
    gridStats: $("#grid-stats"),
    goto: $("#goto"),
    gotoUnit: $("#goto-unit"),
    queueStatus: $("#queue-status"),
    toasts: $("#toasts"),
  };

  const state = new wga.state.UrlState();
  const api = new Api(state.get("api") || localStorage.getItem(STORAGE_KEY) || "");
  const data = { models: null, presets: null, layers: null, layersOf: null };
  const applied = { model: null, layer: null, previewKey: null };

  /* ---------- messages ---------- */

  function toast(message, { kind = "error", timeout } = {}) {
    for (const existing of el.toasts.children) {
      if (existing.dataset.message === message) return; // already on screen
    }
    const box = document.createElement("div");
    box.className = `toast ${kind}`;
    box.dataset.message = message;
    box.setAttribute("role", kind === "error" ? "alert" : "status");
    const text = document.createElement("p");
    text.textContent = message;
    const close = document.createElement("button");
    close.type = "button";
    close.textContent = "✕";
    close.setAttribute("aria-label", "Dismiss message");
    close.addEventListener("click", () => box.remove());
    box.append(text, close);
    el.toasts.append(box);
    setTimeout(() => box.remove(), timeout || (kind === "error" ? 12000 : 4000));
  }

  function showError(err) {
    if (err && err.name === "AbortError") return;
    toast(err && err.message ? err.message : String(err));
  }

  function banner(message, kind = "warn") {
    el.banner.hidden = !message;
    el.banner.textContent = message || "";
    el.banner.classList.toggle("bad", kind === "bad");
  }

  /* ---------- connection ---------- */

  function setConnection(kind, text) {
    el.connection.dataset.state = kind;
    el.connection.textContent = text;
  }

  api.addEventListener("offline", () => {
    setConnection("offline", "reconnecting…");
    banner(`Lost the backend at ${api.base}: retrying…`, "bad");
  });
  api.addEventListener("online", (event) => {
    setConnection("online", "connected");
    banner("");
    if (event.detail.was === false) {
      toast("Reconnected to the backend.", { kind: "info" });
      schedule(); // finish whatever the outage interrupted (models, layers)
    }
  });
  api.addEventListener("busy", (event) => {
    toast(`${event.detail.message} — retrying in ${event.detail.seconds} s.`, { kind: "info" });
  });

  function showQueueStatus(status, err) {
    if (!status) {
      el.queueStatus.textContent = err ? `status: ${err.message}` : "";
      return;
    }
    const parts = [];
    if ("queued" in status) parts.push(`queued: ${status.queued}`);
    if (Array.isArray(status.running)) parts.push(`rendering: ${status.running.length}`);
    if ("cache_entries" in status) parts.push(`cached images: ${status.cache_entries}`);
    if (status.workers_alive === false) parts.push("render worker down");
    if (Array.isArray(status.models_loaded) && status.models_loaded.length) {
      parts.push(`loaded: ${status.models_loaded.join(", ")}`);
    }
    if (!parts.length) {
      for (const [key, value] of Object.entries(status)) {
        if (value !== null && typeof value !== "object") parts.push(`${key.replace(/_/g, " ")}: ${value}`);
      }
    }
    el.queueStatus.textContent = parts.slice(0, 6).join(" · ");
  }

  function connect() {
    el.apiAddress.value = api.address;
    if (!api.base) {
      setConnection("offline", "no backend");
      banner("This page was opened as a file: enter the backend's address under Settings (e.g. http://127.0.0.1:8765).", "bad");
      el.settings.open = true;
      return;
    }
    setConnection("unknown", "connecting…");
    api.startHeartbeat(showQueueStatus);
  }

  /* ---------- grid and detail ---------- */

  const grid = new wga.grid.UnitGrid({
    container: $("#grid"),
    scroller: $("#grid-panel"),
    api,
    onOpen: (unit) => openUnit(unit),
    onError: showError,
    onStats: (s) => {
      el.gridStats.textContent = s.units
        ? `${s.units} units · ${s.done} rendered${s.running ? ` · ${s.running} rendering` : ""}${s.queued ? ` · ${s.queued} queued` : ""}${s.failed ? ` · ${s.failed} failed` : ""}`
        : "";
    },
  });

  wga.artworks.attach({ api, grid: $("#grid"), onError: showError });

  const detail = new wga.detail.DetailView({
    dialog: $("#detail"),
    api,
    template: $("#pane-template"),
    onError: showError,
    onChange: (controls, options) => {
      state.update(controls);
      schedule(options);
    },
    onNavigate: (delta) => {
      const layer = currentLayer();
      const unit = state.get("unit");
      if (!layer || !Number.isFinite(unit)) return;
      const next = Math.max(0, Math.min(layer.units - 1, unit + delta));
      if (next !== unit) {
        state.update({ unit: next });
        schedule(); // (the grid behind scrolls along; focus stays in the dialog)
      }
    },
    onClose: () => {
      grid.paused = false;
      if (Number.isFinite(state.get("unit"))) {
        const unit = state.get("unit");
        state.update({ unit: undefined });
        grid.focusUnit(unit);
      }
    },
    onCopyLink: async () => {
      const link = state.permalink();
      try {
        await navigator.clipboard.writeText(link);
        toast("Permalink copied.", { kind: "info" });
      } catch {
        toast(`Permalink: ${link}`, { kind: "info", timeout: 20000 });
      }
    },
  });

  function openUnit(unit) {
    const layer = currentLayer();
    if (!layer) return;
    if (!Number.isInteger(unit) || unit < 0 || unit >= layer.units) {
      toast(`Unit ${unit} does not exist: ${layer.name} has units 0 to ${layer.units - 1}.`);
      return;
    }
    state.update({ unit, size: state.get("size") || DEFAULT_DETAIL_SIZE }, { push: !detail.isOpen });
    schedule();
  }

  function currentLayer() {
    if (!data.layers || data.layersOf !== applied.model) return null;
    return data.layers.find((l) => l.name === applied.layer) || null;
  }

  /* ---------- models, presets, layers ---------- */

  function fillModels() {
    const models = data.models;
    wga.detail.fillSelect(
      el.model,
      models.map((m) => ({
        value: m.name,
        label: m.title && m.title !== m.name ? `${m.name} — ${m.title}` : m.name,
        disabled: !m.available,
        title: m.reason,
      })),
      applied.model || "",
    );
    const unavailable = models.filter((m) => !m.available);
    el.reason.replaceChildren();
    el.reason.hidden = !unavailable.length;
    if (unavailable.length) {
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
      el.reason.append(details);
    }
  }

  function fillPresets() {
    const presets = data.presets;
    const fallback = (presets.find((p) => p.default) || presets[0] || {}).name || "";
    wga.detail.fillSelect(
      el.preset,
      presets.map((p) => ({ value: p.name, label: p.name, title: p.description || p.title })),
      state.get("preset") || fallback,
    );
  }

  /* A preset the backend does not know (an old or mistyped link) falls back to the default. */
  function checkPresets() {
    const names = data.presets.map((p) => p.name);
    const fallback = (data.presets.find((p) => p.default) || data.presets[0] || {}).name;
    for (const key of ["preset", "cpreset"]) {
      const value = state.get(key);
      if (value && !names.includes(value)) {
        toast(`Unknown preset '${value}': using ${fallback}. The backend offers ${names.join(", ")}.`);
        state.update({ [key]: key === "preset" ? fallback : undefined });
      }
    }
    if (!state.get("preset") && fallback) state.update({ preset: fallback });
    if (el.preset.value !== state.get("preset")) el.preset.value = state.get("preset");
  }

  function chooseModel(requested) {
    const models = data.models;
    const byName = models.find((m) => m.name === requested);
    if (requested && byName && !byName.available) {
      toast(`${requested} is unavailable: ${byName.reason}`);
    } else if (requested && !byName) {
      toast(`Unknown model '${requested}': pick one from the list.`);
    }
    if (byName && byName.available) return byName.name;
    const preferred = models.find((m) => m.default && m.available) || models.find((m) => m.available);
    return preferred ? preferred.name : null;
  }

  function renderLayerList() {
    const layers = data.layers || [];
    const query = el.layerFilter.value.trim().toLowerCase();
    const kinds = new Set([...el.kinds.querySelectorAll("input:checked")].map((i) => i.value));
    el.layerList.replaceChildren();
    let shown = 0;
    for (const layer of layers) {
      const kind = layer.kind || "other";
      if (query && !layer.name.toLowerCase().includes(query)) continue;
      if (el.kinds.children.length > 1 && !kinds.has(kind)) continue;
      const item = document.createElement("li");
      const button = document.createElement("button");
      button.type = "button";
      button.dataset.layer = layer.name;
      button.setAttribute("aria-current", String(layer.name === applied.layer));
      const name = document.createElement("span");
      name.className = "layer-name";
      name.textContent = layer.name;
      const kindText = document.createElement("span");
      kindText.className = "layer-kind";
      kindText.textContent = kind;
      const units = document.createElement("span");
      units.className = "layer-units";
      units.textContent = String(layer.units);
      units.title = `${layer.units} units`;
      button.append(name, kindText, units);
      button.setAttribute("aria-label", `${layer.name}, ${kind}, ${layer.units} units`);
      item.append(button);
      el.layerList.append(item);
      shown++;
    }
    el.layerEmpty.hidden = shown > 0 || !layers.length;
  }

  function renderKinds() {
    const present = new Set((data.layers || []).map((l) => l.kind || "other"));
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

  function kindRank(kind) {
    const i = KIND_ORDER.indexOf(kind);
    return i < 0 ? KIND_ORDER.length : i;
  }

  function previewSettings() {
    const presetNames = (data.presets || []).map((p) => p.name);
    return {
      size: state.get("psize") || Number(el.previewSize.value),
      preset: presetNames.includes("preview") ? "preview" : el.preset.value || undefined,
      steps: state.get("psteps"),
      seed: state.get("seed"),
      priority: PRIORITY_PREVIEW,
    };
  }

  /* ---------- the one place that makes the page match the URL ---------- */

  let queue = Promise.resolve();
  let pendingOptions = {};
  function schedule(options = {}) {
    pendingOptions = { ...pendingOptions, ...options };
    queue = queue.then(() => {
      const opts = pendingOptions;
      pendingOptions = {};
      return sync(opts).catch(showError);
    });
    return queue;
  }

  async function sync({ force = false } = {}) {
    const s = state.value;
    if (!api.base) return;
    if (!data.models) {
      const [models, presets] = await Promise.all([api.models(), api.presets()]);
      data.models = models.models || [];
      data.presets = presets;
      fillPresets();
    }
    checkPresets();

    // Model
    const model = chooseModel(state.get("model"));
    if (model !== state.get("model")) state.update({ model, layer: undefined, unit: undefined });
    if (model !== applied.model) {
      applied.model = model;
      applied.layer = null;
      applied.previewKey = null;
      data.layers = null;
      grid.clear();
      detail.close();
      renderLayerList();
      el.gridTitle.textContent = model ? "Loading layers…" : "No model available";
    }
    fillModels();
    if (!model) return;
    if (data.layersOf !== model || !data.layers) {
      const answer = await api.layers(model);
      if (applied.model !== model) return; // the user moved on meanwhile
      data.layers = answer.layers || [];
      data.layersOf = model;
      renderKinds();
    }

    // Layer
    const wanted = state.get("layer");
    const layer = data.layers.find((l) => l.name === wanted) || null;
    if (wanted && !layer) {
      toast(`No layer '${wanted}' in ${model}: pick one from the list.`);
      state.update({ layer: undefined, unit: undefined });
    }
    applied.layer = layer ? layer.name : null;
    renderLayerList();
    let unit = state.get("unit");
    if (layer && Number.isFinite(unit) && (unit < 0 || unit >= layer.units)) {
      toast(`Unit ${unit} does not exist: ${layer.name} has units 0 to ${layer.units - 1}.`);
      state.update({ unit: undefined });
      unit = undefined;
    }
    const unitOpen = Boolean(layer) && Number.isFinite(unit);
    grid.paused = unitOpen;
    const preview = previewSettings();
    const previewKey = JSON.stringify([model, applied.layer, preview]);
    if (previewKey !== applied.previewKey) {
      applied.previewKey = previewKey;
      if (layer) {
        el.gridTitle.textContent = `${layer.name} · ${layer.units} units`;
        el.gotoUnit.max = String(layer.units - 1);
        grid.show(model, layer, preview);
        wga.artworks.layerShown(model, layer); // artworks.js: the grid's "artworks" thumbnails
      } else {
        el.gridTitle.textContent = "Pick a layer";
        grid.clear();
      }
    }

    // Unit
    if (unitOpen) {
      const size = state.get("size") || DEFAULT_DETAIL_SIZE;
      detail.show(
        {
          model,
          layer,
          unit,
          size,
          preset: state.get("preset"),
          steps: state.get("steps"),
          seed: state.get("seed"),
          cmp: state.get("cmp"),
          cmodel: state.get("cmodel"),
          cpreset: state.get("cpreset"),
          models: data.models,
          presets: data.presets,
          priority: PRIORITY_DETAIL,
          placeholder: grid.previewOf(unit),
        },
        { force },
      );
      grid.scrollToUnit(unit);
      wga.artworks.unitShown(model, layer, unit); // artworks.js: the unit's top artworks
    } else {
      detail.close();
      wga.artworks.unitShown(model, layer, null);
    }
  }

  /* ---------- user input ---------- */

  el.model.addEventListener("change", () => {
    state.update({ model: el.model.value, layer: undefined, unit: undefined });
    schedule();
  });
  el.preset.addEventListener("change", () => {
    state.update({ preset: el.preset.value });
    schedule();
  });
  el.layerList.addEventListener("click", (event) => {
    const button = event.target.closest("button[data-layer]");
    if (!button) return;
    state.update({ layer: button.dataset.layer, unit: undefined });
    schedule();
  });
  el.layerFilter.addEventListener("input", renderLayerList);
  el.kinds.addEventListener("change", renderLayerList);
  el.goto.addEventListener("submit", (event) => {
    event.preventDefault();
    const unit = Number.parseInt(el.gotoUnit.value, 10);
    if (!currentLayer()) {
      toast("Pick a layer first.");
      return;
    }
    grid.scrollToUnit(unit);
    openUnit(unit);
  });
  el.settingsForm.addEventListener("submit", (event) => {
    event.preventDefault();
    const address = el.apiAddress.value.trim();
    try {
      wga.api.normaliseBase(address);
    } catch {
      toast(`'${address}' is not an address: write it like http://127.0.0.1:8765.`);
      return;
    }
    const steps = Number.parseInt(el.previewSteps.value, 10);
    const seed = Number.parseInt(el.seed.value, 10);
    state.update({
      api: address || undefined,
      psize: Number(el.previewSize.value),
      psteps: Number.isFinite(steps) ? steps : undefined,
      seed: Number.isFinite(seed) ? seed : undefined,
    });
    if (address !== api.address) {
      if (address) localStorage.setItem(STORAGE_KEY, address);
      else localStorage.removeItem(STORAGE_KEY);
      api.setAddress(address);
      data.models = null;
      applied.model = null;
      data.layersOf = null;
      banner("");
      connect();
    }
    el.settings.open = false;
    schedule();
  });
  window.addEventListener("hashchange", () => {
    const before = api.address;
    state.reload();
    const address = state.get("api") || "";
    if (address && address !== before) {
      api.setAddress(address);
      data.models = null;
      applied.model = null;
      connect();
    }
    syncSettingsFields();
    schedule();
  });
  window.addEventListener("popstate", () => {
    state.reload();
    schedule();
  });

  function syncSettingsFields() {
    if (state.get("psize")) el.previewSize.value = String(state.get("psize"));
    el.previewSteps.value = Number.isFinite(state.get("psteps")) ? String(state.get("psteps")) : "";
    el.seed.value = Number.isFinite(state.get("seed")) ? String(state.get("seed")) : "";
  }

  // Large renders nobody will look at any more are given back when the page goes away.
  window.addEventListener("pagehide", () => detail.abandon());

  /* ---------- start ---------- */

  if (state.get("api")) localStorage.setItem(STORAGE_KEY, state.get("api"));
  syncSettingsFields();
  connect();
  schedule();
  wga.app = { state, api, grid, detail, schedule, toast };
})();
