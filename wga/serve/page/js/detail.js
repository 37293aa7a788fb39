/* The unit view: one unit rendered large (and, in compare mode, a second render beside it: the
 * same unit in another model or with another preset), with live progress from the snapshots the
 * backend writes, the recipe, a download link to the real PNG and prev / next keys.
 *
 * The image is a plain <img> pointing at the backend's PNG, so right-click "Save image" gives the
 * real file with its recipe metadata, not a canvas copy. */
(function () {
  "use strict";
  const wga = (window.wga = window.wga || {});

  const POLL_MS = 400; // progress polling while a large render runs
  const RECIPE_ORDER = ["model", "layer", "unit", "size", "preset", "steps", "seed", "objective", "priority"];

  /* One render shown with its progress and recipe. */
  class RenderPane {
    constructor(api, root, { onError }) {
      this.api = api;
      this.root = root;
      this.onError = onError;
      this.title = root.querySelector(".pane-title");
      this.stateText = root.querySelector(".pane-state");
      this.img = root.querySelector(".pane-img");
      this.error = root.querySelector(".pane-error");
      this.progress = root.querySelector(".pane-progress");
      this.download = root.querySelector(".pane-download");
      this.openLink = root.querySelector(".pane-open");
      this.recipe = root.querySelector(".recipe-list");
      this.key = null;
      this.job = null;
      this.controller = null;
    }

    /* Render `params` unless this pane already shows exactly that (or `force`). */
    show(params, { title, placeholder, force = false } = {}) {
      const key = JSON.stringify(params);
      if (key === this.key && !force) return;
      this.stop();
      this.key = key;
      this.title.textContent = title;
      this.progress.value = 0;
      this.progress.setAttribute("aria-label", `Progress of ${title}`);
      this.error.hidden = true;
      this.download.hidden = true;
      this.openLink.hidden = true;
      this.root.dataset.status = "submitting";
      this._setStateText("asking the backend…");
      this._showRecipe(params);
      this.img.alt = `Feature visualisation of ${title} (rendering)`;
      if (placeholder) this._swap(placeholder, params.size, true);
      else this._clearImage();
      const controller = new AbortController();
      this.controller = controller;
      this._run(params, controller.signal).catch((err) => {
        if (controller.signal.aborted) return;
        this._fail(err.message || String(err));
        this.onError(err);
      });
    }

    /* Stop following the current render; give it back if this page asked for it. */
    stop() {
      if (this.controller) this.controller.abort();
      this.controller = null;
      const job = this.job;
      if (job && this.api.release(job.id) && (job.status === "queued" || job.status === "running")) {
        this.api.cancel(job.id).catch(() => {});
      }
      this.job = null;
      this.key = null;
    }

    async _run(params, signal) {
      let job = await this._submit(params, signal);
      for (;;) {
        this._apply(job, params);
        if (job.status === "done" || job.status === "failed" || job.status === "cancelled") return;
        await wga.api.sleep(POLL_MS, signal);
        try {
          job = await this.api.poll(job, { signal }); // the fast path: no kernel round trip
        } catch (err) {
          if (err.status !== 404) throw err;
          // The backend restarted and forgot the job: ask again (same id if it was cached).
          job = await this._submit(params, signal);
        }
      }
    }

    async _submit(params, signal) {
      const job = await this.api.submit(params, { signal });
      if (signal.aborted) {
        // Moved on while the request was under way: give the job back unless someone follows it.
        if (!this.api.holders.has(job.id) && (job.status === "queued" || job.status === "running")) {
          this.api.cancel(job.id).catch(() => {});
        }
        throw signal.reason;
      }
      if (this.job) this.api.release(this.job.id);
      this.api.hold(job.id);
      this.job = job;
      return job;
    }

    _apply(job, params) {
      this.job = job;
      // "done" only once the final image is on screen (until then: "finishing").
      this.root.dataset.status = job.status === "done" ? "finishing" : job.status;
      const url = job.url ? this.api.resolve(job.url) : null;
      const progress = Math.max(0, Math.min(1, Number(job.progress) || 0));
      this.progress.value = job.status === "done" ? 1 : progress;
      if (job.params) this._showRecipe(job.params);
      switch (job.status) {
        case "queued":
          this._setStateText("queued");
          break;
        case "running":
          this._setStateText(`rendering ${Math.round(progress * 100)} %`);
          if (url && progress > 0) this._swap(this.api.resolve(job.url, { snap: Math.round(progress * 10000) }), params.size);
          break;
        case "done":
          this._setStateText("done");
          this._swap(url, params.size, false, () => {
            if (this.job === job) this.root.dataset.status = "done";
          });
          this.img.alt = `Feature visualisation of ${this.title.textContent}`;
          this.download.href = url;
          this.download.download = fileName(params);
          this.download.hidden = false;
          this.openLink.href = url;
          this.openLink.hidden = false;
          this._readEmbeddedRecipe(url);
          break;
        case "failed":
          this._fail(job.error || "the render failed (no reason given)");
          break;
        case "cancelled":
          this._setStateText("cancelled — press Render to ask again");
          break;
        default:
          this._setStateText(job.status);
      }
    }

    _fail(message) {
      this.root.dataset.status = "failed";
      this._setStateText("failed");
      this.error.textContent = message;
      this.error.hidden = false;
    }

    _setStateText(text) {
      this.stateText.textContent = text;
    }

    _clearImage() {
      this.img.removeAttribute("src");
      this._pending = null;
    }

    /* Load the next image off-screen, then swap: the view never flashes empty while polling. */
    _swap(src, size, placeholder = false, onShown = null) {
      if (this.img.getAttribute("src") === src) {
        if (onShown) onShown();
        return;
      }
      if (this._pending === src) return;
      this._pending = src;
      // A final image is waited for through a backend restart; a snapshot is just skipped.
      const retries = onShown ? wga.api.FINAL_IMAGE_RETRIES : 0;
      wga.api.loadImage(src, { retries }).then(
        () => {
          if (this._pending !== src) return;
          this.img.src = src;
          if (size) {
            this.img.width = size;
            this.img.height = size;
          }
          this.img.toggleAttribute("data-small", placeholder || size < 512);
          if (onShown) onShown();
        },
        (err) => {
          if (this._pending === src && onShown) this._fail(err.message);
        },
      );
    }

    _showRecipe(recipe) {
      const entries = Object.entries(recipe).filter(([, v]) => v !== undefined && v !== null);
      entries.sort(([a], [b]) => rank(a) - rank(b) || a.localeCompare(b));
      const fragment = document.createDocumentFragment();
      for (const [key, value] of entries) {
        const dt = document.createElement("dt");
        dt.textContent = key;
        const dd = document.createElement("dd");
        dd.textContent = typeof value === "string" ? value : JSON.stringify(value);
        fragment.append(dt, dd);
      }
      this.recipe.replaceChildren(fragment);
    }

    /* The recipe as the PNG file itself carries it (what a saved copy will say). Needs the PNG
     * to be readable from this page (same origin or CORS); otherwise `params` stay shown. */
    async _readEmbeddedRecipe(url) {
      const key = this.key;
      try {
        const response = await fetch(url, { cache: "force-cache" });
        if (!response.ok) return;
        const chunks = await wga.png.textChunks(await response.arrayBuffer());
        const recipe = wga.png.recipeFromChunks(chunks);
        if (key !== this.key || !Object.keys(recipe).length) return;
        this._showRecipe({ ...(this.job && this.job.params), ...recipe });
        this.root.dataset.recipe = "png";
      } catch {
        /* cross-origin without CORS, or not a PNG: the API's params remain */
      }
    }
  }

  function rank(key) {
    const i = RECIPE_ORDER.indexOf(key);
    return i < 0 ? RECIPE_ORDER.length : i;
  }

  function fileName(p) {
    const parts = [p.model, p.layer, `unit${p.unit}`, `${p.size}px`, p.preset];
    if (Number.isFinite(p.steps)) parts.push(`${p.steps}steps`);
    if (Number.isFinite(p.seed)) parts.push(`seed${p.seed}`);
    return parts.filter(Boolean).join("_").replace(/[^\w.-]+/g, "-") + ".png";
  }

  /* The dialog around one or two panes. It reports user intent through callbacks; the app owns
   * the state (the URL) and calls show() again. */
  class DetailView {
    constructor({ dialog, api, template, onChange, onNavigate, onClose, onError, onCopyLink }) {
      this.dialog = dialog;
      this.api = api;
      this.onChange = onChange;
      this.onNavigate = onNavigate;
      this.onClose = onClose;
      this.title = dialog.querySelector("#detail-title");
      this.size = dialog.querySelector("#detail-size");
      this.estimate = dialog.querySelector("#detail-estimate");
      this.steps = dialog.querySelector("#detail-steps");
      this.compare = dialog.querySelector("#compare-toggle");
      this.compareModel = dialog.querySelector("#compare-model");
      this.comparePreset = dialog.querySelector("#compare-preset");
      this.prev = dialog.querySelector("#prev-unit");
      this.next = dialog.querySelector("#next-unit");
      const panes = dialog.querySelector("#panes");
      const make = () => {
        const root = template.content.firstElementChild.cloneNode(true);
        panes.append(root);
        return new RenderPane(api, root, { onError });
      };
      this.a = make();
      this.b = make();
      this.a.root.id = "pane-a";
      this.b.root.id = "pane-b";
      this.b.root.hidden = true;

      dialog.querySelector("#close-detail").addEventListener("click", () => dialog.close());
      dialog.addEventListener("close", () => {
        this.a.stop();
        this.b.stop();
        this.onClose();
      });
      this.prev.addEventListener("click", () => this.onNavigate(-1));
      this.next.addEventListener("click", () => this.onNavigate(1));
      dialog.querySelector("#copy-link").addEventListener("click", onCopyLink);
      // On the document, not the dialog: keys work wherever the focus is while it is open.
      document.addEventListener("keydown", (event) => {
        if (!dialog.open || event.defaultPrevented) return;
        if (event.target.closest && event.target.closest("input, select, textarea")) return;
        if (event.key === "ArrowLeft") {
          event.preventDefault();
          this.onNavigate(-1);
        } else if (event.key === "ArrowRight") {
          event.preventDefault();
          this.onNavigate(1);
        }
      });
      const changed = () => this.onChange(this._controls());
      this.size.addEventListener("change", changed);
      this.compare.addEventListener("change", changed);
      this.compareModel.addEventListener("change", changed);
      this.comparePreset.addEventListener("change", changed);
      dialog.querySelector("#detail-form").addEventListener("submit", (event) => {
        event.preventDefault();
        this.onChange(this._controls(), { force: true });
      });
    }

    _controls() {
      const steps = Number.parseInt(this.steps.value, 10);
      return {
        size: Number(this.size.value),
        steps: Number.isFinite(steps) ? steps : undefined,
        cmp: this.compare.checked,
        cmodel: this.compareModel.value || undefined,
        cpreset: this.comparePreset.value || undefined,
      };
    }

    /* How long this size will take on this backend, from the steps it has measured (GET
     * /api/models/:model/layers → layer.seconds[preset][size], one unit, the preset's default
     * steps); nothing until the layer has rendered a step (the grid's previews usually have). */
    async _showEstimate(ctx) {
      const el = this.estimate;
      if (!el) return;
      el.textContent = "";
      try {
        const data = await this.api.layers(ctx.model);
        const layer = (data.layers || []).find((l) => l.name === ctx.layer.name);
        const presetName = ctx.preset || ((ctx.presets || []).find((p) => p.default) || {}).name;
        const preset = (ctx.presets || []).find((p) => p.name === presetName) || {};
        let seconds = layer && layer.seconds && (layer.seconds[presetName] || {})[String(ctx.size)];
        if (!Number.isFinite(seconds)) return;
        if (Number.isFinite(ctx.steps) && preset.default_steps) seconds *= ctx.steps / preset.default_steps;
        const text = seconds < 90 ? `${Math.max(1, Math.round(seconds))} s` : `${Math.round(seconds / 60)} min`;
        el.textContent = `≈ ${text} here`;
        el.title = "estimated from the steps this server has measured on this layer";
      } catch (error) {
        /* no estimate: say nothing */
      }
    }

    get isOpen() {
      return this.dialog.open;
    }

    /* ctx: {model, layer (info), unit, size, preset, steps, seed, cmp, cmodel, cpreset,
     *       models, presets, priority, placeholder} */
    show(ctx, { force = false } = {}) {
      const { model, layer, unit } = ctx;
      const names = wga.tiles.classNames(layer);
      const className = names && names[unit] ? ` (${names[unit]})` : "";
      this.title.textContent = `${model} · ${layer.name} · unit ${unit}${className}`;
      setSelect(this.size, String(ctx.size));
      this.steps.value = Number.isFinite(ctx.steps) ? String(ctx.steps) : "";
      this.compare.checked = Boolean(ctx.cmp);
      fillSelect(
        this.compareModel,
        ctx.models.map((m) => ({ value: m.name, label: m.title ? `${m.name} — ${m.title}` : m.name, disabled: !m.available, title: m.reason })),
        ctx.cmodel || model,
      );
      fillSelect(this.comparePreset, ctx.presets.map((p) => ({ value: p.name, label: p.name, title: p.description })), ctx.cpreset || ctx.preset);
      this.prev.disabled = unit <= 0;
      this.next.disabled = unit >= layer.units - 1;
      this.dialog.classList.toggle("comparing", Boolean(ctx.cmp));

      this._showEstimate(ctx);
      const base = { model, layer: layer.name, unit, size: ctx.size, priority: ctx.priority };
      if (ctx.preset) base.preset = ctx.preset;
      if (Number.isFinite(ctx.steps)) base.steps = ctx.steps;
      if (Number.isFinite(ctx.seed)) base.seed = ctx.seed;
      this.a.show(base, { title: `${model} · ${ctx.preset || "default preset"}`, placeholder: ctx.placeholder, force });
      if (ctx.cmp) {
        const other = { ...base, model: ctx.cmodel || model };
        if (ctx.cpreset || ctx.preset) other.preset = ctx.cpreset || ctx.preset;
        this.b.root.hidden = false;
        this.b.show(other, { title: `${other.model} · ${other.preset || "default preset"}`, force });
      } else {
        this.b.stop();
        this.b.root.hidden = true;
      }
      if (!this.dialog.open) {
        this.dialog.showModal();
        this.dialog.querySelector("#close-detail").focus();
      }
    }

    close() {
      if (this.dialog.open) this.dialog.close();
    }

    /* The page is going away: give back unfinished renders nobody else follows. */
    abandon() {
      const ids = [];
      for (const pane of [this.a, this.b]) {
        const job = pane.job;
        if (job && (job.status === "queued" || job.status === "running") && this.api.release(job.id)) {
          ids.push(job.id);
        }
        pane.job = null;
      }
      this.api.cancelOnUnload(ids);
    }
  }

  function setSelect(select, value) {
    if (![...select.options].some((o) => o.value === value)) {
      const option = document.createElement("option");
      option.value = option.textContent = value;
      select.append(option);
    }
    select.value = value;
  }

  function fillSelect(select, items, value) {
    const signature = JSON.stringify(items);
    if (select.dataset.signature !== signature) {
      select.replaceChildren(
        ...items.map((item) => {
          const option = document.createElement("option");
          option.value = item.value;
          option.textContent = item.disabled ? `${item.label} (unavailable)` : item.label;
          option.disabled = Boolean(item.disabled);
          if (item.title) option.title = item.title;
          return option;
        }),
      );
      select.dataset.signature = signature;
    }
    select.value = value;
  }

  wga.detail = { DetailView, RenderPane, fileName, fillSelect };
})();
