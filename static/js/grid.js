/* The grid of unit previews for one layer.
 *
 * Every unit gets a tile (a light button; 2048 of them are fine), but only tiles near the
 * viewport ask for a render. The backend answers one request at a time (one kernel) and each
 * answer costs a kernel round trip, so the grid talks to it in rounds: one batch request
 * (POST /api/renders/batch) per round carries the new visible previews AND re-asks the
 * unfinished ones — renders are content-addressed, so re-asking is idempotent and returns their
 * status. At most WINDOW previews are unfinished at any time: scrolling quickly or leaving the
 * layer leaves at most one batch of stale work in the queue, cheaper to finish than to cancel
 * one DELETE at a time. Without a batch endpoint it falls back to one POST per preview. */
(function () {
  "use strict";
  const wga = (window.wga = window.wga || {});

  const ROUND_MS = 1200; // a round while previews are unfinished
  const EAGER_MS = 150; // … sooner when new tiles came into view and there is room
  const WINDOW = 32; // unfinished previews at most (the queue's default batch: wga.queue)
  const SINGLE_CONCURRENCY = 2; // parallel POSTs when the backend has no batch endpoint
  const NEAR_MARGIN = "200px 0px"; // counts as visible

  class UnitGrid {
    constructor({ container, scroller, api, onOpen, onStats, onError }) {
      this.container = container;
      this.scroller = scroller;
      this.api = api;
      this.onOpen = onOpen;
      this.onStats = onStats || (() => {});
      this.onError = onError || (() => {});
      this.tiles = [];
      this.generation = 0;
      this.busy = false; // a round is under way
      this.paused = false; // while the unit view is open its large render gets the backend
      this.lastRound = 0;
      this.focusIndex = 0;
      this.near = new IntersectionObserver((entries) => this._onNear(entries), {
        root: scroller,
        rootMargin: NEAR_MARGIN,
      });
      container.addEventListener("click", (event) => {
        const el = event.target.closest(".tile");
        if (el) this.onOpen(Number(el.dataset.unit));
      });
      container.addEventListener("keydown", (event) => this._onKey(event));
      this._timer = setInterval(() => this._tick(), EAGER_MS);
    }

    /* Show `layer` ({name, units, kind, classes?}) of `model`, rendered with `preview`
     * ({size, preset, steps, seed, priority}). */
    show(model, layer, preview) {
      this.clear();
      this.model = model;
      this.layer = layer;
      this.preview = preview;
      const generation = ++this.generation;
      const names = classNames(layer);
      const fragment = document.createDocumentFragment();
      this.container.style.setProperty("--tile", `${Math.max(96, Math.min(preview.size, 160))}px`);
      for (let unit = 0; unit < layer.units; unit++) {
        const el = document.createElement("button");
        el.type = "button";
        el.className = "tile";
        el.dataset.unit = String(unit);
        el.dataset.state = "idle";
        el.tabIndex = unit === 0 ? 0 : -1;
        const label = names && names[unit] ? `${unit} · ${names[unit]}` : String(unit);
        el.setAttribute("aria-label", `Unit ${label}`);
        el.title = `${layer.name} unit ${label}`;
        const img = document.createElement("img");
        img.alt = "";
        img.decoding = "async";
        img.width = preview.size;
        img.height = preview.size;
        const bar = document.createElement("span");
        bar.className = "tile-bar";
        const caption = document.createElement("span");
        caption.className = "tile-label";
        caption.textContent = label;
        el.append(img, bar, caption);
        fragment.append(el);
        this.tiles.push({ unit, el, img, bar, state: "idle", id: null, visible: false, shown: null });
      }
      this.container.replaceChildren(fragment);
      this.scroller.scrollTop = 0;
      this.focusIndex = 0;
      for (const tile of this.tiles) this.near.observe(tile.el);
      this._stats();
    }

    /* Forget the layer (its at most WINDOW unfinished previews finish in the queue). */
    clear() {
      this.near.disconnect();
      for (const tile of this.tiles) if (tile.id) this.api.release(tile.id);
      this.tiles = [];
      this.container.replaceChildren();
      this.generation++;
    }

    focusUnit(unit) {
      const tile = this.tiles[unit];
      if (!tile) return;
      this._setFocus(unit);
      tile.el.scrollIntoView({ block: "nearest" });
    }

    scrollToUnit(unit) {
      const tile = this.tiles[unit];
      if (tile) tile.el.scrollIntoView({ block: "center" });
    }

    /* The preview URL of a unit, if one is finished (used by the detail view as a placeholder). */
    previewOf(unit) {
      const tile = this.tiles[unit];
      return tile && tile.state === "done" ? tile.img.src : null;
    }

    _onNear(entries) {
      for (const entry of entries) {
        const tile = this.tiles[Number(entry.target.dataset.unit)];
        if (!tile) continue;
        tile.visible = entry.isIntersecting;
        if (tile.visible && tile.state === "idle") this._setState(tile, "wanted");
        else if (!tile.visible && tile.state === "wanted") this._setState(tile, "idle");
      }
    }

    _tick() {
      if (!this.tiles.length || document.hidden || this.paused || this.busy) return;
      if (this.api.online === false) return;
      const unfinished = this.tiles.filter((t) => t.state === "queued" || t.state === "running");
      const room = WINDOW - unfinished.length;
      const fresh = room > 0 ? this.tiles.filter((t) => t.state === "wanted" && t.visible).slice(0, room) : [];
      const due = performance.now() - this.lastRound >= ROUND_MS;
      if (!fresh.length && !(unfinished.length && due)) return;
      this._round([...unfinished, ...fresh]);
    }

    _params(unit) {
      const p = this.preview;
      const params = { model: this.model, layer: this.layer.name, unit, size: p.size, priority: p.priority };
      if (p.preset) params.preset = p.preset;
      if (Number.isFinite(p.steps)) params.steps = p.steps;
      if (Number.isFinite(p.seed)) params.seed = p.seed;
      return params;
    }

    /* One exchange with the backend: submit or re-ask `tiles`, apply the answers. */
    async _round(tiles) {
      this.busy = true;
      this.lastRound = performance.now();
      const generation = this.generation;
      for (const tile of tiles) if (tile.state === "wanted") this._setState(tile, "submitting");
      try {
        const items = await this._submit(tiles);
        if (generation !== this.generation) return;
        tiles.forEach((tile, i) => this._applySubmitted(tile, items[i]));
      } catch (err) {
        if (generation !== this.generation) return;
        for (const tile of tiles) if (tile.state === "submitting") this._setState(tile, "wanted");
        if (!(err.network || err.status === 503)) {
          // The backend refused the whole round: say why once, and mark the new tiles.
          for (const tile of tiles) {
            if (tile.state !== "wanted") continue;
            tile.el.title = err.message;
            this._setState(tile, "failed");
          }
          this.onError(err);
        }
      } finally {
        this.busy = false;
        this.lastRound = performance.now();
      }
    }

    async _submit(tiles) {
      const params = tiles.map((t) => this._params(t.unit));
      const batch = await this.api.submitBatch(params, { retry: false });
      if (batch !== null) return batch;
      // No batch endpoint: one POST per preview, a few at a time.
      const items = new Array(params.length);
      let next = 0;
      const worker = async () => {
        while (next < params.length) {
          const i = next++;
          try {
            items[i] = await this.api.submit(params[i], { retry: false });
          } catch (err) {
            if (err.network || err.status === 503) throw err;
            items[i] = { error: err.message };
          }
        }
      };
      await Promise.all(Array.from({ length: SINGLE_CONCURRENCY }, worker));
      return items;
    }

    _applySubmitted(tile, item) {
      if (!item || item.error) {
        tile.el.title = (item && item.error) || "no answer for this preview";
        this._setState(tile, "failed");
        return;
      }
      if (tile.id !== item.id) {
        this.api.release(tile.id);
        tile.id = item.id;
        this.api.hold(tile.id);
      }
      this._applyStatus(tile, item);
    }

    _applyStatus(tile, job) {
      const url = job.url ? this.api.resolve(job.url) : null;
      switch (job.status) {
        case "done":
          // "done" once the final image is on screen (the tile then holds the real PNG).
          this._show(tile, url, () => this._setState(tile, "done"), () => {
            tile.el.title = `the image ${url} could not be loaded`;
            this._setState(tile, "failed");
          });
          break;
        case "running":
          tile.bar.style.width = `${Math.round((job.progress || 0) * 100)}%`;
          if (url && job.progress > 0) this._show(tile, `${url}?snap=${Math.round(job.progress * 1000)}`);
          this._setState(tile, "running");
          break;
        case "queued":
          this._setState(tile, "queued");
          break;
        case "failed":
          tile.el.title = job.error || "render failed";
          this._setState(tile, "failed");
          break;
        default: // cancelled (by someone else) or unknown: ask again if still on screen
          this.api.release(tile.id);
          tile.id = null;
          this._setState(tile, tile.visible ? "wanted" : "idle");
      }
    }

    /* Swap the image only once the new one has loaded, so tiles never flash empty. */
    _show(tile, src, onShown, onFailed) {
      if (tile.shown === src) return;
      tile.shown = src;
      const probe = new Image();
      probe.onload = () => {
        if (tile.shown !== src) return;
        tile.img.src = src;
        if (onShown) onShown();
      };
      probe.onerror = () => {
        if (tile.shown === src && onFailed) onFailed();
      };
      probe.src = src;
    }

    _setState(tile, state) {
      if (tile.state === state) return;
      tile.state = state;
      tile.el.dataset.state = state;
      this._statsSoon();
    }

    _statsSoon() {
      if (this._statsPending) return;
      this._statsPending = true;
      requestAnimationFrame(() => {
        this._statsPending = false;
        this._stats();
      });
    }

    _stats() {
      const counts = { done: 0, running: 0, queued: 0, failed: 0 };
      for (const tile of this.tiles) if (tile.state in counts) counts[tile.state]++;
      this.onStats({ units: this.tiles.length, ...counts });
    }

    /* Roving focus: one tab stop for the whole grid, arrows move between tiles. */
    _setFocus(index) {
      const old = this.tiles[this.focusIndex];
      if (old) old.el.tabIndex = -1;
      this.focusIndex = index;
      const tile = this.tiles[index];
      tile.el.tabIndex = 0;
      tile.el.focus({ preventScroll: true });
      tile.el.scrollIntoView({ block: "nearest" });
    }

    _onKey(event) {
      const el = event.target.closest(".tile");
      if (!el || !this.tiles.length) return;
      const index = Number(el.dataset.unit);
      const columns = getComputedStyle(this.container).gridTemplateColumns.split(" ").length || 1;
      const last = this.tiles.length - 1;
      const moves = {
        ArrowLeft: index - 1,
        ArrowRight: index + 1,
        ArrowUp: index - columns,
        ArrowDown: index + columns,
        PageUp: index - columns * 4,
        PageDown: index + columns * 4,
        Home: 0,
        End: last,
      };
      if (!(event.key in moves)) return;
      event.preventDefault();
      this._setFocus(Math.max(0, Math.min(last, moves[event.key])));
    }
  }

  /* Class names a class layer may carry, under any of the names a backend might use. */
  function classNames(layer) {
    return layer.classes || layer.class_names || layer.labels || null;
  }

  wga.grid = { UnitGrid, classNames };
})();
