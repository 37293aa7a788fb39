/* What the backend offers: models, presets and each model's layers, loaded once and kept.
 *
 * The page asks the catalog, never the API, for these lists: a layer list is fetched once per
 * model (the answer can take seconds while the model loads), and the choices the URL makes
 * (model, layer, unit, presets) are checked here against what exists, with a message for each
 * one that does not, so that an old or mistyped permalink still opens something sensible. */
(function () {
  "use strict";
  const wga = (window.wga = window.wga || {});

  class Catalog {
    constructor(api) {
      this.api = api;
      this.reset();
    }

    /* Forget everything (another backend). */
    reset() {
      this.models = null;
      this.presets = null;
      this.layers = null;
      this.layersOf = null;
    }

    async loadModels() {
      if (this.models) return false;
      const [models, presets] = await Promise.all([this.api.models(), this.api.presets()]);
      this.models = models.models || [];
      this.presets = presets;
      return true;
    }

    /* The layers of `model`, fetched unless already known; null when the user moved on. */
    async loadLayers(model, stillWanted) {
      if (this.layersOf === model && this.layers) return this.layers;
      const answer = await this.api.layers(model);
      if (!stillWanted()) return null;
      this.layers = answer.layers || [];
      this.layersOf = model;
      return this.layers;
    }

    layer(model, name) {
      if (this.layersOf !== model || !this.layers) return null;
      return this.layers.find((l) => l.name === name) || null;
    }

    defaultPreset() {
      return (this.presets.find((p) => p.default) || this.presets[0] || {}).name || "";
    }

    hasPreset(name) {
      return (this.presets || []).some((p) => p.name === name);
    }

    /* The URL's presets, corrected: [changes to the state, messages]. */
    checkPresets(state) {
      const names = this.presets.map((p) => p.name);
      const fallback = this.defaultPreset();
      const changes = {};
      const messages = [];
      for (const key of ["preset", "cpreset"]) {
        const value = state.get(key);
        if (value && !names.includes(value)) {
          messages.push(`Unknown preset '${value}': using ${fallback}. The backend offers ${names.join(", ")}.`);
          changes[key] = key === "preset" ? fallback : undefined;
        }
      }
      if (!state.get("preset") && !("preset" in changes) && fallback) changes.preset = fallback;
      return [changes, messages];
    }

    /* The model to show for `requested`: [name or null, message or null]. */
    chooseModel(requested) {
      const models = this.models;
      const byName = models.find((m) => m.name === requested);
      let message = null;
      if (requested && byName && !byName.available) message = `${requested} is unavailable: ${byName.reason}`;
      else if (requested && !byName) message = `Unknown model '${requested}': pick one from the list.`;
      if (byName && byName.available) return [byName.name, null];
      const preferred = models.find((m) => m.default && m.available) || models.find((m) => m.available);
      return [preferred ? preferred.name : null, message];
    }

    /* The URL's layer and unit checked against `model`'s layers: {layer, unit, messages}. */
    checkLayerAndUnit(model, wantedLayer, wantedUnit) {
      const messages = [];
      const layer = this.layer(model, wantedLayer);
      if (wantedLayer && !layer) messages.push(`No layer '${wantedLayer}' in ${model}: pick one from the list.`);
      let unit = layer ? wantedUnit : undefined;
      if (layer && Number.isFinite(unit) && (unit < 0 || unit >= layer.units)) {
        messages.push(`Unit ${unit} does not exist: ${layer.name} has units 0 to ${layer.units - 1}.`);
        unit = undefined;
      }
      return { layer, unit, messages };
    }
  }

  wga.catalog = { Catalog };
})();
