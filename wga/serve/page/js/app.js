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
  const catalog = new wga.catalog.Catalog(api);
  const pickers = new wga.layers.Pickers(el);
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
  wga.atlas.attach({ api, state, onError: showError }); // atlas.js: the atlas view
  wga.look.attach({ api, state, onError: showError }); // look.js: the artwork view, uploads

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
    return catalog.layer(applied.model, applied.layer);
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

  /* URL → page, in the order things depend on each other: catalog, model, layer, grid, unit. */
  async function sync({ force = false } = {}) {
    if (!api.base) return;
    if (await catalog.loadModels()) pickers.drawPresets(catalog.presets, state.get("preset") || catalog.defaultPreset());
    applyPresets();
    const model = applyModel();
    if (!model) return;
    const layers = await catalog.loadLayers(model, () => applied.model === model);
    if (!layers) return; // the user moved on meanwhile
    if (pickers.layers !== layers) pickers.setLayers(layers);
    const { layer, unit } = applyLayerAndUnit(model);
    applyGrid(model, layer, Boolean(layer) && Number.isFinite(unit));
    if (layer && Number.isFinite(unit)) {
      showUnit(model, layer, unit, force);
      wga.artworks.unitShown(model, layer, unit); // artworks.js: the unit's top artworks
    } else {
      detail.close();
      wga.artworks.unitShown(model, layer, null);
    }
  }

  function applyPresets() {
    const [changes, messages] = catalog.checkPresets(state);
    messages.forEach((message) => toast(message));
    if (Object.keys(changes).length) state.update(changes);
    pickers.selectPreset(state.get("preset"));
  }

  /* The URL's model (or the default one): a new model clears the grid and the unit view. */
  function applyModel() {
    const [model, message] = catalog.chooseModel(state.get("model"));
    if (message) toast(message);
    if (model !== state.get("model")) state.update({ model, layer: undefined, unit: undefined });
    if (model !== applied.model) {
      applied.model = model;
      applied.layer = null;
      applied.previewKey = null;
      grid.clear();
      detail.close();
      pickers.setLayers([]);
      el.gridTitle.textContent = model ? "Loading layers…" : "No model available";
    }
    pickers.drawModels(catalog.models, applied.model);
    return model;
  }

  function applyLayerAndUnit(model) {
    const checked = catalog.checkLayerAndUnit(model, state.get("layer"), state.get("unit"));
    checked.messages.forEach((message) => toast(message));
    if (!checked.layer && state.get("layer")) state.update({ layer: undefined, unit: undefined });
    else if (checked.unit !== state.get("unit")) state.update({ unit: undefined });
    applied.layer = checked.layer ? checked.layer.name : null;
    pickers.setCurrent(applied.layer);
    return checked;
  }

  /* The grid shows the layer's previews (it rests while the unit view is open). */
  function applyGrid(model, layer, unitOpen) {
    grid.paused = unitOpen;
    const preview = previewSettings();
    const previewKey = JSON.stringify([model, applied.layer, preview]);
    if (previewKey === applied.previewKey) return;
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

  function previewSettings() {
    return {
      size: state.get("psize") || Number(el.previewSize.value),
      preset: catalog.hasPreset("preview") ? "preview" : el.preset.value || undefined,
      steps: state.get("psteps"),
      seed: state.get("seed"),
      priority: PRIORITY_PREVIEW,
    };
  }

  function showUnit(model, layer, unit, force) {
    const params = {
      model,
      layer,
      unit,
      size: state.get("size") || DEFAULT_DETAIL_SIZE,
      models: catalog.models,
      presets: catalog.presets,
      priority: PRIORITY_DETAIL,
      placeholder: grid.previewOf(unit),
    };
    for (const key of ["preset", "steps", "seed", "cmp", "cmodel", "cpreset"]) params[key] = state.get(key);
    detail.show(params, { force });
    grid.scrollToUnit(unit);
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
      catalog.reset();
      applied.model = null;
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
      catalog.reset();
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
  window.addEventListener("pagehide", () => {
    detail.abandon();
    api.cancelOnUnload(grid.liveIds());
  });

  /* ---------- start ---------- */

  if (state.get("api")) localStorage.setItem(STORAGE_KEY, state.get("api"));
  syncSettingsFields();
  connect();
  schedule();
  wga.app = { state, api, grid, detail, schedule, toast };
})();
