/* The grid's pager: which previews of the layer to render, and following them to the end.
 *
 * Only tiles near the viewport ask for a render. New ones are submitted in rounds, one batch
 * request (POST /api/renders/batch) per round; unfinished ones are followed through each job's
 * `status_url`, a static file the backend rewrites (no kernel round trip, so polling never queues
 * behind other requests). At most WINDOW previews are unfinished at any time, and leaving the
 * layer gives them back in one bulk cancel. Without a batch endpoint it falls back to one POST
 * per preview; without status_url it re-asks through the batch endpoint (renders are
 * content-addressed, so asking again is idempotent and returns their status). */
(function () {
  "use strict";
  const wga = (window.wga = window.wga || {});

  const ROUND_MS = 1200; // a polling round while previews are unfinished
  const EAGER_MS = 150; // … sooner when new tiles came into view and there is room
  const WINDOW = 32; // unfinished previews at most (the queue's default batch: wga.serve)
  const SINGLE_CONCURRENCY = 2; // parallel POSTs when the backend has no batch endpoint
  const NEAR_MARGIN = "200px 0px"; // counts as visible

  class UnitGrid {
    constructor({ container, scroller, api, onOpen, onStats, onError }) {
      this.scroller = scroller;
      this.api = api;
      this.onError = onError || (() => {});
      this.view = new wga.tiles.TileSet({ container, onOpen, onStats });
      this.tiles = [];
      this.generation = 0;
      this.busy = false; // a round is under way
      this.paused = false; // while the unit view is open its large render gets the backend
      this.lastRound = 0;
      this.near = new IntersectionObserver((entries) => this._onNear(entries), {
        root: scroller,
        rootMargin: NEAR_MARGIN,
      });
      this._timer = setInterval(() => this._tick(), EAGER_MS);
    }

    /* Show `layer` ({name, units, kind, classes?}) of `model`, rendered with `preview`
     * ({size, preset, steps, seed, priority}). */
    show(model, layer, preview) {
      this.clear();
      this.model = model;
      this.layer = layer;
      this.preview = preview;
      this.tiles = this.view.build(layer, preview.size);
      this.scroller.scrollTop = 0;
      for (const tile of this.tiles) this.near.observe(tile.el);
    }

    /* Forget the layer; its unfinished previews are given back in one request. */
    clear() {
      this.near.disconnect();
      const unfinished = [];
      for (const tile of this.tiles) {
        if (tile.id && this.api.release(tile.id) && isLive(tile.job)) unfinished.push(tile.id);
      }
      if (unfinished.length) this.api.cancelMany(unfinished).catch(() => {});
      this.tiles = [];
      this.view.clear();
      this.generation++;
    }

    /* The ids this grid follows that are still rendering (given back when the page goes). */
    liveIds() {
      return this.tiles.filter((t) => t.id && isLive(t.job)).map((t) => t.id);
    }

    focusUnit(unit) {
      if (!this.tiles[unit]) return;
      this.view.focus(unit);
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
        if (tile.visible && tile.state === "idle") this.view.setState(tile, "wanted");
        else if (!tile.visible && tile.state === "wanted") this.view.setState(tile, "idle");
      }
    }

    _tick() {
      if (!this.tiles.length || document.hidden || this.paused || this.busy) return;
      if (this.api.online === false) return;
      const unfinished = this.tiles.filter((t) => t.state === "queued" || t.state === "running");
      const room = WINDOW - unfinished.length;
      const fresh = room > 0 ? this.tiles.filter((t) => t.state === "wanted" && t.visible).slice(0, room) : [];
      const due = performance.now() - this.lastRound >= ROUND_MS;
      if (fresh.length) this._round(() => this._submitRound(fresh, unfinished));
      else if (unfinished.length && due) this._round(() => this._pollRound(unfinished));
    }

    /* One exchange with the backend; errors of a stale layer are dropped. */
    async _round(exchange) {
      this.busy = true;
      this.lastRound = performance.now();
      try {
        await exchange();
      } finally {
        this.busy = false;
        this.lastRound = performance.now();
      }
    }

    /* Submit `fresh` tiles (and re-ask `unfinished` ones when there is no fast path). */
    async _submitRound(fresh, unfinished) {
      const tiles = unfinished.some((t) => !(t.job && t.job.status_url)) ? [...unfinished, ...fresh] : fresh;
      const generation = this.generation;
      for (const tile of fresh) this.view.setState(tile, "submitting");
      try {
        const items = await this._submit(tiles);
        if (generation !== this.generation) return;
        tiles.forEach((tile, i) => this._applySubmitted(tile, items[i]));
      } catch (err) {
        if (generation !== this.generation) return;
        for (const tile of fresh) if (tile.state === "submitting") this.view.setState(tile, "wanted");
        if (err.network || err.status === 503 || err.status === 429) return; // try again later
        // The backend refused the whole round: say why once, and mark the new tiles.
        for (const tile of fresh) if (tile.state === "wanted") this.view.fail(tile, err.message);
        this.onError(err);
      }
    }

    /* Follow unfinished tiles through their status_url (static files: cheap and parallel). */
    async _pollRound(tiles) {
      const generation = this.generation;
      if (tiles.some((t) => !(t.job && t.job.status_url))) return this._submitRound([], tiles);
      await Promise.all(
        tiles.map(async (tile) => {
          let job;
          try {
            job = await this.api.poll(tile.job, { retry: false });
          } catch (err) {
            if (generation !== this.generation || err.network) return;
            if (err.status === 404) job = { id: tile.id, status: "lost" }; // forgotten: ask again
            else return;
          }
          if (generation === this.generation && tile.id === job.id) this._applyStatus(tile, job);
        }),
      );
    }

    _params(unit) {
      const p = this.preview;
      const params = { model: this.model, layer: this.layer.name, unit, size: p.size, priority: p.priority };
      if (p.preset) params.preset = p.preset;
      if (Number.isFinite(p.steps)) params.steps = p.steps;
      if (Number.isFinite(p.seed)) params.seed = p.seed;
      return params;
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
            if (err.network || err.status === 503 || err.status === 429) throw err;
            items[i] = { error: err.message };
          }
        }
      };
      await Promise.all(Array.from({ length: SINGLE_CONCURRENCY }, worker));
      return items;
    }

    _applySubmitted(tile, item) {
      if (!item || item.error) {
        this.view.fail(tile, (item && item.error) || "no answer for this preview");
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
      tile.job = job;
      const url = job.url || null;
      switch (job.status) {
        case "done":
          // "done" once the final image is on screen (the tile then holds the real PNG).
          this.view.show(tile, this.api.resolve(url), () => this.view.setState(tile, "done"), () => {
            this.view.fail(tile, `the image ${url} could not be loaded`);
          });
          break;
        case "running":
          this.view.progress(tile, job.progress);
          if (url && job.progress > 0) this.view.show(tile, this.api.resolve(url, { snap: Math.round(job.progress * 1000) }));
          this.view.setState(tile, "running");
          break;
        case "queued":
          this.view.setState(tile, "queued");
          break;
        case "failed":
          this.view.fail(tile, job.error || "render failed");
          break;
        default: // cancelled (by someone else), forgotten or unknown: ask again if still on screen
          this.api.release(tile.id);
          tile.id = null;
          tile.job = null;
          this.view.setState(tile, tile.visible ? "wanted" : "idle");
      }
    }
  }

  function isLive(job) {
    return Boolean(job) && (job.status === "queued" || job.status === "running");
  }

  wga.grid = { UnitGrid, classNames: wga.tiles.classNames };
})();
