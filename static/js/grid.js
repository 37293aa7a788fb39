/* The grid of unit previews for one layer.
 *
 * Every unit gets a tile (a light button; 2048 of them are fine), but only tiles near the
 * viewport ask for a render: an IntersectionObserver marks them wanted, a small scheduler sends
 * them in batches at low priority (one batch request when the backend offers one, else a few
 * requests at a time), and polls only the visible ones. Tiles scrolled far away give their queued
 * jobs back (DELETE), and so does leaving the layer, so the queue serves what is on screen. */
(function () {
  "use strict";
  const wga = (window.wga = window.wga || {});

  const TICK_MS = 300; // scheduler period
  const BATCH_SIZE = 24; // previews per batch request
  const SINGLE_CONCURRENCY = 4; // parallel POSTs when the backend has no batch endpoint
  const POLLS_PER_TICK = 3; // status requests per tick (the gateway answers one at a time)
  const POLL_RUNNING_MS = 500; // at most this often per running preview
  const POLL_QUEUED_MS = 900; // … and per queued one
  const NEAR_MARGIN = "300px 0px"; // counts as visible
  const FAR_MARGIN = "2500px 0px"; // beyond this a queued preview is cancelled

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
      this.submitting = 0;
      this.polling = 0;
      this.seq = 0; // submission order of previews
      this.focusIndex = 0;
      this.near = new IntersectionObserver((entries) => this._onNear(entries), {
        root: scroller,
        rootMargin: NEAR_MARGIN,
      });
      this.far = new IntersectionObserver((entries) => this._onFar(entries), {
        root: scroller,
        rootMargin: FAR_MARGIN,
      });
      container.addEventListener("click", (event) => {
        const el = event.target.closest(".tile");
        if (el) this.onOpen(Number(el.dataset.unit));
      });
      container.addEventListener("keydown", (event) => this._onKey(event));
      this._timer = setInterval(() => this._tick(), TICK_MS);
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
        this.tiles.push({ unit, el, img, bar, state: "idle", id: null, seq: 0, visible: false, lastPoll: 0, shown: null });
      }
      this.container.replaceChildren(fragment);
      this.scroller.scrollTop = 0;
      this.focusIndex = 0;
      for (const tile of this.tiles) {
        this.near.observe(tile.el);
        this.far.observe(tile.el);
      }
      this._stats();
    }

    /* Forget the layer, giving back its queued and running previews. */
    clear() {
      this.near.disconnect();
      this.far.disconnect();
      const outstanding = this.tiles.filter((t) => t.id && (t.state === "queued" || t.state === "running"));
      this._cancelAll(outstanding.map((t) => t.id).filter((id) => this.api.release(id)));
      for (const tile of this.tiles) if (tile.id && tile.state === "done") this.api.release(tile.id);
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

    /* The page is going away: give back every preview still waiting in the queue. */
    abandon() {
      const ids = this.tiles
        .filter((t) => t.id && (t.state === "queued" || t.state === "running"))
        .map((t) => t.id)
        .filter((id) => this.api.release(id));
      this.api.cancelOnUnload(ids);
      this.tiles = [];
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

    _onFar(entries) {
      for (const entry of entries) {
        if (entry.isIntersecting) continue;
        const tile = this.tiles[Number(entry.target.dataset.unit)];
        if (tile && tile.id && tile.state === "queued") {
          if (this.api.release(tile.id)) this._cancelAll([tile.id]);
          tile.id = null;
          this._setState(tile, "idle");
        }
      }
    }

    _tick() {
      if (!this.tiles.length || document.hidden) return;
      this._submitWanted();
      this._pollVisible();
    }

    _params(unit) {
      const p = this.preview;
      const params = { model: this.model, layer: this.layer.name, unit, size: p.size, priority: p.priority };
      if (p.preset) params.preset = p.preset;
      if (Number.isFinite(p.steps)) params.steps = p.steps;
      if (Number.isFinite(p.seed)) params.seed = p.seed;
      return params;
    }

    async _submitWanted() {
      if (this.api.online === false) return;
      const useBatch = this.api.features.batch !== "absent";
      const room = useBatch ? (this.submitting ? 0 : BATCH_SIZE) : SINGLE_CONCURRENCY - this.submitting;
      if (room <= 0) return;
      const wanted = this.tiles.filter((t) => t.state === "wanted" && t.visible).slice(0, room);
      if (!wanted.length) return;
      const generation = this.generation;
      for (const tile of wanted) this._setState(tile, "submitting");
      if (useBatch) {
        this.submitting++;
        try {
          const items = await this.api.submitBatch(wanted.map((t) => this._params(t.unit)), { retry: false });
          if (generation !== this.generation) return this._orphaned(items || []);
          if (items === null) {
            for (const tile of wanted) this._setState(tile, "wanted"); // no batch endpoint: singles next tick
            return;
          }
          wanted.forEach((tile, i) => this._applySubmitted(tile, items[i]));
        } catch (err) {
          this._submitFailed(wanted, err, generation);
        } finally {
          this.submitting--;
        }
        return;
      }
      await Promise.all(
        wanted.map(async (tile) => {
          this.submitting++;
          try {
            const job = await this.api.submit(this._params(tile.unit), { retry: false });
            if (generation === this.generation) this._applySubmitted(tile, job);
            else this._orphaned([job]);
          } catch (err) {
            this._submitFailed([tile], err, generation);
          } finally {
            this.submitting--;
          }
        }),
      );
    }

    /* Jobs that came back after the layer changed: nobody will look at them. */
    _orphaned(jobs) {
      const unwanted = jobs.filter((j) => j && j.id && j.status === "queued" && !this.api.holders.has(j.id));
      this._cancelAll(unwanted.map((j) => j.id));
    }

    _submitFailed(tiles, err, generation) {
      if (generation !== this.generation) return;
      if (err.network || err.status === 503) {
        for (const tile of tiles) this._setState(tile, "wanted"); // try again when it is back
        return;
      }
      for (const tile of tiles) {
        tile.el.title = err.message;
        this._setState(tile, "failed");
      }
      this.onError(err);
    }

    _applySubmitted(tile, item) {
      if (!item || item.error) {
        tile.el.title = (item && item.error) || "no answer for this preview";
        this._setState(tile, "failed");
        return;
      }
      if (tile.id) this.api.release(tile.id);
      tile.id = item.id;
      this.api.hold(tile.id);
      tile.seq = ++this.seq;
      tile.lastPoll = performance.now();
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

    /* Which previews to ask about this tick: mostly the oldest requests (the queue is FIFO within
     * a priority, so they are the ones running or about to finish), plus the least recently
     * polled one, so a job finished out of order is noticed too. */
    _pollVisible() {
      if (this.api.online === false) return;
      const now = performance.now();
      const room = POLLS_PER_TICK - this.polling;
      if (room <= 0) return;
      const due = this.tiles.filter(
        (t) =>
          t.visible &&
          t.id &&
          (t.state === "queued" || t.state === "running") &&
          now - t.lastPoll > (t.state === "running" ? POLL_RUNNING_MS : POLL_QUEUED_MS),
      );
      if (!due.length) return;
      const chosen = new Set(due.sort((a, b) => a.seq - b.seq).slice(0, Math.max(1, room - 1)));
      const stalest = due.reduce((a, b) => (b.lastPoll < a.lastPoll ? b : a));
      if (chosen.size < room) chosen.add(stalest);
      const generation = this.generation;
      for (const tile of chosen) {
        tile.lastPoll = now;
        this.polling++;
        this.api
          .render(tile.id, { retry: false, quiet: true })
          .then((job) => {
            if (generation === this.generation && job.id === tile.id) this._applyStatus(tile, job);
          })
          .catch((err) => {
            // 404: the backend restarted and forgot the job; ask for it again (same id if cached).
            if (generation === this.generation && err.status === 404) {
              this.api.release(tile.id);
              tile.id = null;
              this._setState(tile, tile.visible ? "wanted" : "idle");
            }
          })
          .finally(() => this.polling--);
      }
    }

    _cancelAll(ids) {
      const queue = ids.filter(Boolean);
      const worker = async () => {
        while (queue.length) {
          const id = queue.shift();
          try {
            await this.api.cancel(id);
          } catch {
            /* already finished or gone: nothing to give back */
          }
        }
      };
      for (let i = 0; i < Math.min(3, queue.length); i++) worker();
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
