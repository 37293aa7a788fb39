/* The artworks behind a unit, from a corpus probe (python -m wga probe; GET /api/probes).
 *
 * Two views, both quiet when no probe covers the current model and layer:
 * - in the unit view, beside the feature visualisation: the unit's top artworks as receptive-field
 *   crops (hover or focus: the whole artwork, then the unit's heat overlay once the backend has
 *   made it), author, title, date and a link to the WGA page; the negatives; the histogram of the
 *   unit's per-image maxima (log counts) with the shown examples marked;
 * - in the grid: a switch between "optimised" thumbnails (the renders) and "artworks" (each unit's
 *   best crop, fetched only for tiles near the viewport).
 * app.js calls attach() once, layerShown() when the grid shows a layer, unitShown() when the
 * unit view opens or closes. */
(function () {
  "use strict";
  const wga = (window.wga = window.wga || {});

  const MODE_KEY = "wga.thumbs"; // "optimised" | "artworks"
  const OVERLAY_POLL_MS = 600;
  const OVERLAY_POLLS = 100;
  const NEAR_MARGIN = "200px 0px";

  let api = null;
  let onError = () => {};
  let probes = null; // the GET /api/probes answer, once
  let current = { model: null, layer: null, unit: null };
  let section = null;
  let gridEl = null;
  let switchEl = null;
  let near = null;
  let unitToken = 0;

  const path = (probe, layer, unit) =>
    `/api/probes/${encodeURIComponent(probe)}/layers/${encodeURIComponent(layer)}/units/${unit}`;

  function make(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined && text !== null) node.textContent = text;
    return node;
  }

  async function loadProbes() {
    if (probes) return probes;
    try {
      probes = (await api.get("/api/probes", { quiet: true })).probes || [];
    } catch (err) {
      probes = []; // an older backend without probes: the page works as before
    }
    return probes;
  }

  /* The probe for this model and layer (the most images wins), or null. */
  function probeFor(model, layer) {
    if (!probes || !model || !layer) return null;
    const matching = probes.filter(
      (p) => p.model === model && (p.layers || []).some((l) => l.name === layer),
    );
    matching.sort((a, b) => (b.done || b.images) - (a.done || a.images));
    return matching[0] || null;
  }

  function mode() {
    return localStorage.getItem(MODE_KEY) === "artworks" ? "artworks" : "optimised";
  }

  /* ---------- the grid ---------- */

  function buildSwitch() {
    const head = document.querySelector(".units-head");
    if (!head) return;
    const label = make("label", "field inline thumbs-switch");
    label.append("Thumbnails ");
    switchEl = make("select");
    switchEl.id = "thumbs";
    for (const value of ["optimised", "artworks"]) {
      const option = make("option", null, value);
      option.value = value;
      switchEl.append(option);
    }
    switchEl.value = mode();
    switchEl.addEventListener("change", () => {
      localStorage.setItem(MODE_KEY, switchEl.value);
      decorateGrid();
    });
    label.append(switchEl);
    label.hidden = true;
    head.insertBefore(label, head.querySelector(".goto"));
  }

  function decorateGrid() {
    if (!gridEl) return;
    const probe = probeFor(current.model, current.layer);
    if (switchEl) {
      switchEl.parentElement.hidden = !probe;
      switchEl.title = probe ? `probe ${probe.name}: ${probe.images} images` : "";
    }
    const artworks = Boolean(probe) && mode() === "artworks";
    gridEl.classList.toggle("show-artworks", artworks);
    if (near) near.disconnect();
    if (!artworks) return;
    near = new IntersectionObserver(
      (entries) => {
        for (const entry of entries) {
          if (!entry.isIntersecting) continue;
          near.unobserve(entry.target);
          fillTile(entry.target, probe, current.layer);
        }
      },
      { root: gridEl.closest("#grid-panel") || null, rootMargin: NEAR_MARGIN },
    );
    for (const tile of gridEl.querySelectorAll(".tile")) {
      if (!tile.querySelector(".tile-art")) near.observe(tile);
    }
  }

  async function fillTile(tile, probe, layer) {
    const unit = Number(tile.dataset.unit);
    try {
      const answer = await api.get(`${path(probe.name, layer, unit)}?limit=1`, { quiet: true });
      const best = (answer.examples || [])[0];
      if (!best || !best.crop_url || current.layer !== layer) return;
      const img = make("img", "tile-art");
      img.alt = "";
      img.src = api.resolve(best.crop_url);
      img.title = caption(best);
      tile.append(img);
    } catch (err) {
      tile.dataset.artError = err.message;
    }
  }

  /* ---------- the unit view ---------- */

  function caption(example) {
    return [example.author, example.title, example.date].filter(Boolean).join(", ") || example.file;
  }

  function exampleFigure(example, probe, layer, unit) {
    const figure = make("figure", "artwork");
    const frame = make("button", "artwork-frame");
    frame.type = "button";
    frame.setAttribute("aria-label", `What the network sees in ${caption(example)}`);
    const crop = make("img", "artwork-crop");
    crop.alt = `Crop of ${caption(example)} where the unit fires`;
    crop.loading = "lazy";
    if (example.crop_url) crop.src = api.resolve(example.crop_url);
    frame.append(crop);
    const text = make("figcaption");
    const who = make("span", "artwork-author", example.author || example.file);
    const title = example.page ? make("a", "artwork-title", example.title || "WGA page") : make("span", "artwork-title", example.title || "");
    if (example.page) {
      title.href = example.page;
      title.target = "_blank";
      title.rel = "noopener";
    }
    text.append(who, make("br"), title);
    if (example.date) text.append(make("span", "muted", ` (${example.date})`));
    text.append(make("span", "artwork-value muted", ` ${example.value.toFixed(2)}`));
    figure.append(frame, text);
    const show = () => showWhole(figure, example, probe, layer, unit);
    frame.addEventListener("mouseenter", show);
    frame.addEventListener("focus", show);
    frame.addEventListener("click", () => {
      hideWhole();
      wga.look.open({ probe: probe.name, image: example.image }); // look.js: the artwork view
    });
    figure.addEventListener("mouseleave", () => hideWhole());
    frame.addEventListener("blur", () => hideWhole());
    return figure;
  }

  let popover = null;
  let popToken = 0;

  function hideWhole() {
    popToken++;
    if (popover) popover.hidden = true;
  }

  async function showWhole(figure, example, probe, layer, unit) {
    if (!example.image_url) return;
    const token = ++popToken;
    if (!popover) {
      popover = make("div", "artwork-popover");
      popover.setAttribute("role", "tooltip");
      popover.append(make("img", "artwork-whole"), make("p", "artwork-popover-text muted"));
      section.append(popover);
    }
    const img = popover.querySelector("img");
    const note = popover.querySelector("p");
    img.src = api.resolve(example.image_url);
    img.alt = `${caption(example)}, whole`;
    note.textContent = `${caption(example)} · value ${example.value.toFixed(3)} at y ${example.y}, x ${example.x} · heat overlay loading…`;
    popover.hidden = false;
    const box = figure.getBoundingClientRect();
    const host = section.getBoundingClientRect();
    popover.style.left = `${Math.max(0, box.left - host.left)}px`;
    popover.style.top = `${box.bottom - host.top + 4}px`;
    try {
      for (let i = 0; i < OVERLAY_POLLS && token === popToken; i++) {
        const answer = await api.get(example.overlay_url, { quiet: true });
        if (token !== popToken) return;
        if (answer.status === "done" && answer.url) {
          img.src = api.resolve(answer.url);
          img.classList.add("heat");
          note.textContent = `${caption(example)} · heat: where ${layer} unit ${unit} responds`;
          return;
        }
        await new Promise((resolve) => setTimeout(resolve, OVERLAY_POLL_MS));
      }
    } catch (err) {
      if (token === popToken) note.textContent = `${caption(example)} · no overlay: ${err.message}`;
    }
  }

  function histogram(data, examples) {
    const counts = data.counts || [];
    const edges = data.edges || [];
    const width = 320;
    const height = 90;
    const svg = document.createElementNS("http://www.w3.org/2000/svg", "svg");
    svg.setAttribute("viewBox", `0 0 ${width} ${height + 14}`);
    svg.setAttribute("class", "artwork-histogram");
    svg.setAttribute("role", "img");
    if (!counts.length) return svg;
    const top = Math.log1p(Math.max(...counts));
    const bar = width / counts.length;
    counts.forEach((count, i) => {
      const h = top > 0 ? (Math.log1p(count) / top) * height : 0;
      const rect = document.createElementNS(svg.namespaceURI, "rect");
      rect.setAttribute("x", String(i * bar));
      rect.setAttribute("y", String(height - h));
      rect.setAttribute("width", String(Math.max(1, bar - 1)));
      rect.setAttribute("height", String(h));
      rect.setAttribute("class", "hist-bar");
      const title = document.createElementNS(svg.namespaceURI, "title");
      title.textContent = `${edges[i].toFixed(2)} … ${edges[i + 1].toFixed(2)}: ${count} images`;
      rect.append(title);
      svg.append(rect);
    });
    const low = edges[0];
    const span = edges[edges.length - 1] - low || 1;
    for (const example of examples) {
      const x = ((example.value - low) / span) * width;
      const tick = document.createElementNS(svg.namespaceURI, "line");
      tick.setAttribute("x1", String(x));
      tick.setAttribute("x2", String(x));
      tick.setAttribute("y1", String(height));
      tick.setAttribute("y2", String(height + 10));
      tick.setAttribute("class", example.value >= 0 ? "hist-top" : "hist-bottom");
      svg.append(tick);
    }
    svg.setAttribute(
      "aria-label",
      `Histogram of the unit's maximum over ${counts.reduce((a, b) => a + b, 0)} artworks, ${low.toFixed(2)} to ${edges[edges.length - 1].toFixed(2)} (log counts)`,
    );
    return svg;
  }

  async function showUnit(model, layer, unit) {
    const token = ++unitToken;
    const probe = probeFor(model, layer);
    section.hidden = !probe;
    section.replaceChildren();
    popover = null;
    if (!probe) return;
    section.append(make("h3", null, "Artworks"), make("p", "muted", `loading the probe ${probe.name}…`));
    let answer;
    try {
      answer = await api.get(path(probe.name, layer, unit));
    } catch (err) {
      if (token === unitToken) section.lastChild.textContent = err.message;
      return;
    }
    if (token !== unitToken) return;
    section.replaceChildren();
    const head = make("div", "artworks-head");
    head.append(
      make("h3", null, "Artworks that make it fire"),
      make("span", "muted", `probe ${probe.name} · ${answer.images} images · ${answer.values}`),
    );
    section.append(head);
    const top = make("div", "artwork-list");
    top.dataset.kind = "examples";
    for (const example of answer.examples) top.append(exampleFigure(example, probe, layer, unit));
    section.append(top);
    if (answer.negatives && answer.negatives.length) {
      section.append(make("h4", null, "…and least (negative examples)"));
      const bottom = make("div", "artwork-list negatives");
      bottom.dataset.kind = "negatives";
      for (const example of answer.negatives) bottom.append(exampleFigure(example, probe, layer, unit));
      section.append(bottom);
    }
    section.append(make("h4", null, "Distribution over the corpus"));
    section.append(histogram(answer.histogram || {}, [...answer.examples, ...(answer.negatives || [])]));
  }

  /* ---------- hooks for app.js ---------- */

  function attach(options) {
    api = options.api;
    onError = options.onError || onError;
    gridEl = options.grid;
    section = document.getElementById("artworks");
    buildSwitch();
    loadProbes().then(() => {
      decorateGrid();
      if (current.unit !== null) showUnit(current.model, current.layer, current.unit).catch(onError);
    });
  }

  function layerShown(model, layer) {
    current = { model, layer: layer ? layer.name : null, unit: current.unit };
    if (probes) decorateGrid();
  }

  function unitShown(model, layer, unit) {
    const name = layer ? layer.name || layer : null;
    if (unit === null || unit === undefined || !section) {
      current.unit = null;
      unitToken++;
      if (section) section.hidden = true;
      return;
    }
    if (current.unit === unit && current.layer === name && current.model === model && !section.hidden) return;
    current = { model, layer: name, unit };
    if (probes) showUnit(model, name, unit).catch(onError);
  }

  wga.artworks = { attach, layerShown, unitShown };
})();
