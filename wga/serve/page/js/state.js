/* The view's state lives in the URL's hash, so that a copied address is a permalink:
 * it reopens the same model, layer, unit, size, preset (and compare pane, seed, steps, API).
 * The hash (not the query) keeps working when the page is opened as a file. */
(function () {
  "use strict";
  const wga = (window.wga = window.wga || {});

  /* Keys and their types; anything else in the hash is ignored. */
  const FIELDS = {
    api: "string", // backend address when not same-origin
    model: "string",
    layer: "string",
    unit: "int", // the open unit (detail view); absent when closed
    size: "int", // detail render size
    preset: "string",
    steps: "int", // detail steps (empty: the preset's)
    seed: "int",
    cmp: "bool", // compare pane shown
    cmodel: "string", // compare: model B
    cpreset: "string", // compare: preset B
    psize: "int", // preview tile size
    psteps: "int", // preview steps
    atlas: "string", // the open atlas (atlas.js), its level and cell
    alevel: "int",
    acell: "string",
    look: "string", // the artwork view (look.js): its probe, its image id or upload id,
    limage: "int", // the layer shown, the overlay shown (u12: unit 12, g0: group 1),
    lupload: "string", // the units' order and the similar strip's measure
    llayer: "string",
    lshow: "string",
    lsort: "string",
    lby: "string",
  };

  function parse(hash) {
    const params = new URLSearchParams((hash || "").replace(/^#/, ""));
    const state = {};
    for (const [key, type] of Object.entries(FIELDS)) {
      if (!params.has(key)) continue;
      const raw = params.get(key);
      if (type === "int") {
        const n = Number.parseInt(raw, 10);
        if (Number.isFinite(n)) state[key] = n;
      } else if (type === "bool") {
        state[key] = raw === "1" || raw === "true";
      } else if (raw !== "") {
        state[key] = raw;
      }
    }
    return state;
  }

  function serialize(state) {
    const params = new URLSearchParams();
    for (const [key, type] of Object.entries(FIELDS)) {
      const value = state[key];
      if (value === undefined || value === null || value === "" || value === false) continue;
      if (type === "int" && !Number.isFinite(value)) continue;
      params.set(key, type === "bool" ? "1" : String(value));
    }
    return "#" + params.toString();
  }

  /* The current state, kept in step with location.hash. */
  class UrlState {
    constructor() {
      this.value = parse(location.hash);
    }

    get(key) {
      return this.value[key];
    }

    /* Merge `changes` (undefined removes a key) and write the hash.
     * `push` makes a history entry (opening a unit), so Back closes it again. */
    update(changes, { push = false } = {}) {
      const next = { ...this.value };
      for (const [key, value] of Object.entries(changes)) {
        if (value === undefined || value === null || value === "") delete next[key];
        else next[key] = value;
      }
      this.value = next;
      const hash = serialize(next);
      if (hash === location.hash || (hash === "#" && !location.hash)) return;
      const url = location.href.replace(/#.*$/, "") + hash;
      if (push) history.pushState(null, "", url);
      else history.replaceState(null, "", url);
    }

    /* Re-read after the user edited the address or went back. */
    reload() {
      this.value = parse(location.hash);
      return this.value;
    }

    permalink() {
      return location.href.replace(/#.*$/, "") + serialize(this.value);
    }
  }

  wga.state = { parse, serialize, UrlState };
})();
