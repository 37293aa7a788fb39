/* The tiles of the unit grid: one light button per unit (2048 of them are fine), their state
 * (idle → wanted → submitting → queued / running → done | failed), their images, the keyboard
 * (one tab stop, arrows move between tiles) and the counts shown above the grid.
 *
 * Which tiles get rendered, and when, is the pager's business (grid.js); a tile only shows. */
(function () {
  "use strict";
  const wga = (window.wga = window.wga || {});

  class TileSet {
    constructor({ container, onOpen, onStats }) {
      this.container = container;
      this.onStats = onStats || (() => {});
      this.tiles = [];
      this.focusIndex = 0;
      container.addEventListener("click", (event) => {
        const el = event.target.closest(".tile");
        if (el) onOpen(Number(el.dataset.unit));
      });
      container.addEventListener("keydown", (event) => this._onKey(event));
    }

    /* One tile per unit of `layer` ({name, units, classes?}), previews `size` px. */
    build(layer, size) {
      const names = classNames(layer);
      const fragment = document.createDocumentFragment();
      this.container.style.setProperty("--tile", `${Math.max(96, Math.min(size, 160))}px`);
      this.tiles = [];
      for (let unit = 0; unit < layer.units; unit++) {
        const label = names && names[unit] ? `${unit} · ${names[unit]}` : String(unit);
        const tile = makeTile(unit, label, layer.name, size);
        fragment.append(tile.el);
        this.tiles.push(tile);
      }
      this.container.replaceChildren(fragment);
      this.focusIndex = 0;
      this._stats();
      return this.tiles;
    }

    clear() {
      this.tiles = [];
      this.container.replaceChildren();
    }

    setState(tile, state) {
      if (tile.state === state) return;
      tile.state = state;
      tile.el.dataset.state = state;
      this._statsSoon();
    }

    fail(tile, message) {
      tile.el.title = message;
      this.setState(tile, "failed");
    }

    progress(tile, fraction) {
      tile.bar.style.width = `${Math.round((fraction || 0) * 100)}%`;
    }

    /* Swap the image only once the new one has loaded, so tiles never flash empty; a final
     * image (one with `onFailed`) is waited for through a backend restart. */
    show(tile, src, onShown, onFailed) {
      if (tile.shown === src) return;
      tile.shown = src;
      const retries = onFailed ? wga.api.FINAL_IMAGE_RETRIES : 0;
      wga.api.loadImage(src, { retries }).then(
        () => {
          if (tile.shown !== src) return;
          tile.img.src = src;
          if (onShown) onShown();
        },
        () => {
          if (tile.shown === src && onFailed) onFailed();
        },
      );
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

    focus(index) {
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
      this.focus(Math.max(0, Math.min(last, moves[event.key])));
    }
  }

  function makeTile(unit, label, layerName, size) {
    const el = document.createElement("button");
    el.type = "button";
    el.className = "tile";
    el.dataset.unit = String(unit);
    el.dataset.state = "idle";
    el.tabIndex = unit === 0 ? 0 : -1;
    el.setAttribute("aria-label", `Unit ${label}`);
    el.title = `${layerName} unit ${label}`;
    const img = document.createElement("img");
    img.alt = "";
    img.decoding = "async";
    img.width = size;
    img.height = size;
    const bar = document.createElement("span");
    bar.className = "tile-bar";
    const caption = document.createElement("span");
    caption.className = "tile-label";
    caption.textContent = label;
    el.append(img, bar, caption);
    return { unit, el, img, bar, state: "idle", id: null, job: null, visible: false, shown: null };
  }

  /* Class names a class layer may carry, under any of the names a backend might use. */
  function classNames(layer) {
    return layer.classes || layer.class_names || layer.labels || null;
  }

  wga.tiles = { TileSet, classNames };
})();
