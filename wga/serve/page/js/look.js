/* The artwork view: what the network sees in one painting (GET /api/probes/:probe/images/:id) or
 * in an image the user drops on the page (POST /api/looks, GET /api/looks/:id).
 *
 * A dialog with the painting large and, over it, the heat map of whichever unit or factor group
 * is selected (drawn here from the maps in the answer: switching is instant); per layer the top
 * units (their renders from the queue, value, percentile among the probed corpus; sortable by
 * value or by percentile) and the factor groups (icons rendered from their recipes, share,
 * strongest units); a strip of the most similar artworks by content or by style; the catalog
 * fields and the WGA link. Every artwork thumbnail of the page (a unit's examples, an atlas cell's
 * members, the similar strip) opens it. The open view lives in the URL's hash (look, limage or
 * lupload, llayer, lshow, lsort, lby), so the address is a permalink.
 * app.js calls attach() once; artworks.js and atlas.js call open(). */
(function () {
  "use strict";
  const wga = (window.wga = window.wga || {});

  const POLL_MS = 700;
  const VIEW_POLLS = 900; // a view needs a forward pass and a factorisation: minutes when busy
  const RENDER_SIZE = 128;
  const RENDER_PRIORITY = -5; // below the unit view, above the grid's previews
  const SIMILAR_K = 12;
  const RECIPE_FIELDS = ["model", "layer", "unit", "size", "preset", "steps", "seed", "objective", "position", "vector", "cos_power"];
  // A perceptual dark-to-bright ramp (inferno's stops) for the heat overlay.
  const RAMP = [[0, 0, 4], [40, 11, 84], [101, 21, 110], [159, 42, 99], [212, 72, 66], [245, 125, 21], [250, 193, 39], [252, 255, 164]];

  let api = null;
  let state = null;
  let onError = () => {};
  let dialog = null;
  let els = {};
  let probes = null;
  let view = null; // the answer being shown
  let where = null; // {probe, image} or {probe, upload}
  let token = 0;
  let followed = []; // render jobs this view asked for

  const make = (tag, className, text) => {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined && text !== null) node.textContent = text;
    return node;
  };
  const enc = encodeURIComponent;

  /* ---------- the dialog ---------- */

  function build() {
    const bar = document.querySelector(".topbar .spacer");
    const button = make("button", "look-open", "Look at an image…");
    button.type = "button";
    button.id = "look-upload";
    button.title = "What the network sees in an image of yours (or drop one anywhere on the page)";
    const input = make("input");
    input.type = "file";
    input.accept = "image/jpeg,image/png,image/webp";
    input.hidden = true;
    input.id = "look-file";
    button.addEventListener("click", () => input.click());
    input.addEventListener("change", () => {
      if (input.files && input.files[0]) lookAtFile(input.files[0]);
      input.value = "";
    });
    if (bar) bar.before(button, input);

    dialog = make("dialog", "look");
    dialog.id = "look";
    dialog.setAttribute("aria-labelledby", "look-title");
    dialog.innerHTML = `
      <div class="look-head">
        <h2 id="look-title">Artwork</h2>
        <span id="look-where" class="muted"></span>
        <span class="spacer"></span>
        <label class="field inline">Rank units by
          <select id="look-sort"><option value="value">value</option><option value="percentile">percentile</option></select>
        </label>
        <button id="look-link" type="button">Copy permalink</button>
        <button id="look-close" type="button" aria-label="Close" title="Close (Esc)">✕</button>
      </div>
      <p id="look-status" class="look-status muted" role="status" aria-live="polite"></p>
      <div class="look-body">
        <figure class="look-painting">
          <div class="look-stage">
            <img id="look-image" alt="" decoding="async">
            <canvas id="look-heat" class="look-heat" aria-hidden="true"></canvas>
          </div>
          <figcaption id="look-showing" class="muted"></figcaption>
          <dl id="look-catalog" class="look-catalog"></dl>
        </figure>
        <section class="look-side" aria-label="What the network sees">
          <div id="look-layers" class="look-layers" role="tablist" aria-label="Layer"></div>
          <button id="look-none" type="button" class="look-none">No overlay</button>
          <h3>Units that fire most</h3>
          <ol id="look-units" class="look-units"></ol>
          <h3>Factor groups</h3>
          <ol id="look-groups" class="look-groups"></ol>
        </section>
      </div>
      <section class="look-similar" aria-label="Similar artworks">
        <div class="look-similar-head">
          <h3>Similar artworks</h3>
          <span role="group" aria-label="Similar by">
            <button type="button" class="look-by" data-by="content">content</button>
            <button type="button" class="look-by" data-by="style">style</button>
          </span>
          <span id="look-similar-note" class="muted"></span>
        </div>
        <ol id="look-similar" class="look-similar-list"></ol>
      </section>`;
    document.body.append(dialog);
    for (const id of ["title", "where", "sort", "status", "image", "heat", "showing", "catalog", "layers", "none", "units", "groups", "similar", "similar-note"]) {
      els[id.replace("-", "_")] = dialog.querySelector(`#look-${id}`);
    }
    dialog.querySelector("#look-close").addEventListener("click", () => dialog.close());
    dialog.querySelector("#look-link").addEventListener("click", copyLink);
    dialog.addEventListener("close", () => {
      token++;
      giveBack();
      view = where = null;
      state.update({ look: undefined, limage: undefined, lupload: undefined, llayer: undefined, lshow: undefined, lsort: undefined, lby: undefined });
    });
    els.sort.addEventListener("change", () => {
      state.update({ lsort: els.sort.value === "value" ? undefined : els.sort.value });
      if (where) load(where);
    });
    els.none.addEventListener("click", () => select(null));
    for (const button of dialog.querySelectorAll(".look-by")) {
      button.addEventListener("click", () => {
        state.update({ lby: button.dataset.by === "content" ? undefined : button.dataset.by });
        drawSimilar();
      });
    }
    els.image.addEventListener("load", fit);
    new ResizeObserver(() => fit()).observe(dialog.querySelector(".look-painting"));
    wireDrop();
  }

  async function copyLink() {
    const link = state.permalink();
    try {
      await navigator.clipboard.writeText(link);
      if (wga.app) wga.app.toast("Permalink copied.", { kind: "info" });
    } catch {
      if (wga.app) wga.app.toast(`Permalink: ${link}`, { kind: "info", timeout: 20000 });
    }
  }

  async function loadProbes() {
    if (probes) return probes;
    try {
      probes = (await api.get("/api/probes", { quiet: true })).probes || [];
    } catch (err) {
      probes = [];
    }
    return probes;
  }

  /* ---------- opening ---------- */

  /* Show an artwork of a probe ({probe, image}) or an upload against a probe ({probe, upload}). */
  function open(target) {
    if (!dialog.open) dialog.showModal();
    const changes = { look: target.probe, limage: undefined, lupload: undefined, llayer: undefined, lshow: undefined };
    if (target.upload) changes.lupload = target.upload;
    else changes.limage = target.image;
    state.update(changes, { push: !where });
    load(target);
  }

  async function load(target) {
    const mine = ++token;
    giveBack();
    where = target;
    view = null;
    els.sort.value = state.get("lsort") || "value";
    const sort = `sort=${enc(els.sort.value)}`;
    const url = target.upload
      ? `/api/looks/${enc(target.upload)}?probe=${enc(target.probe)}&${sort}`
      : `/api/probes/${enc(target.probe)}/images/${enc(target.image)}?${sort}`;
    els.status.textContent = "The network is looking at it (one forward pass, then the factor groups)…";
    dialog.dataset.state = "loading";
    let answer = null;
    try {
      for (let i = 0; i < VIEW_POLLS && mine === token; i++) {
        const { status, data } = await api.request("GET", url, undefined, { quiet: true });
        if (status === 200) {
          answer = data;
          break;
        }
        await wga.api.sleep(POLL_MS);
      }
    } catch (err) {
      if (mine === token) {
        els.status.textContent = err.message;
        dialog.dataset.state = "failed";
      }
      return;
    }
    if (mine !== token || !answer) return;
    view = answer;
    els.status.textContent = "";
    dialog.dataset.state = "done";
    draw();
  }

  /* ---------- drawing ---------- */

  function draw() {
    const image = view.image;
    const who = [image.author, image.title].filter(Boolean).join(" · ");
    els.title.textContent = who || (image.upload ? "Your image" : image.file);
    els.where.textContent = `${view.model} · probe ${view.probe}${view.border_margin ? ` · border margin ${view.border_margin}` : ""}`;
    if (image.image_url) els.image.src = api.resolve(image.image_url);
    els.image.alt = who || image.file || "the uploaded image";
    drawCatalog(image);
    const layers = view.layers.map((l) => l.layer);
    const chosen = layers.includes(state.get("llayer")) ? state.get("llayer") : layers[layers.length - 1];
    els.layers.replaceChildren(
      ...layers.map((name) => {
        const tab = make("button", "look-layer", name);
        tab.type = "button";
        tab.setAttribute("role", "tab");
        tab.dataset.layer = name;
        tab.addEventListener("click", () => showLayer(name));
        return tab;
      }),
    );
    showLayer(chosen, state.get("lshow"));
  }

  function drawCatalog(image) {
    const rows = [
      ["Author", image.author],
      ["Title", image.title],
      ["Date", image.date],
      ["File", image.file || (image.upload ? `upload ${image.upload}` : null)],
      ["Size", image.size ? `${image.size[1]} × ${image.size[0]} px` : null],
    ];
    els.catalog.replaceChildren();
    for (const [label, value] of rows) {
      if (!value) continue;
      els.catalog.append(make("dt", null, label), make("dd", null, value));
    }
    if (image.page) {
      const link = make("a", "look-wga", "Web Gallery of Art page");
      link.href = image.page;
      link.target = "_blank";
      link.rel = "noopener";
      const cell = make("dd");
      cell.append(link);
      els.catalog.append(make("dt", null, "WGA"), cell);
    }
  }

  function layerOf(name) {
    return view.layers.find((l) => l.layer === name);
  }

  function showLayer(name, show) {
    const layer = layerOf(name);
    if (!layer) return;
    state.update({ llayer: name });
    for (const tab of els.layers.children) tab.setAttribute("aria-selected", String(tab.dataset.layer === name));
    giveBack();
    drawUnits(layer);
    drawGroups(layer);
    drawSimilar();
    select(show || null);
  }

  function percentileBar(percentile) {
    const bar = make("span", "look-pct");
    if (percentile === null || percentile === undefined) {
      bar.textContent = "—";
      bar.title = "no corpus to compare with";
      return bar;
    }
    const fill = make("span", "look-pct-fill");
    fill.style.width = `${percentile}%`;
    bar.append(fill, make("span", "look-pct-text", `${percentile.toFixed(1)} %`));
    bar.title = `fires more here than on ${percentile.toFixed(1)} % of the corpus's artworks`;
    return bar;
  }

  function drawUnits(layer) {
    const recipes = [];
    els.units.replaceChildren(
      ...layer.units.map((unit) => {
        const item = make("li", "look-unit");
        const button = make("button", "look-pick");
        button.type = "button";
        button.dataset.show = `u${unit.unit}`;
        const img = make("img", "look-render pending");
        img.dataset.alt = `what unit ${unit.unit} wants`; // the alt once it has an image
        const text = make("span", "look-unit-text");
        text.append(make("strong", null, `unit ${unit.unit}`), make("br"), make("span", "muted", `value ${unit.value.toFixed(2)} at y ${unit.y}, x ${unit.x}`));
        button.append(img, text, percentileBar(unit.percentile));
        button.addEventListener("click", () => select(`u${unit.unit}`));
        const go = make("a", "look-goto", "unit view");
        go.href = "#";
        go.title = `Open ${layer.layer} unit ${unit.unit} in the unit view`;
        go.addEventListener("click", (event) => {
          event.preventDefault();
          openUnit(layer.layer, unit.unit);
        });
        item.append(button, go);
        recipes.push({ img, recipe: { model: view.render_model, layer: layer.layer, unit: unit.unit, size: RENDER_SIZE, preset: "preview" } });
        return item;
      }),
    );
    renderAll(recipes);
  }

  function drawGroups(layer) {
    const recipes = [];
    els.groups.replaceChildren(
      ...layer.groups.map((group, number) => {
        const item = make("li", "look-group");
        const button = make("button", "look-pick");
        button.type = "button";
        button.dataset.show = `g${number}`;
        const img = make("img", "look-render pending");
        img.dataset.alt = `the icon of group ${number + 1}: what its channel direction looks like`;
        const text = make("span", "look-unit-text");
        text.append(
          make("strong", null, `group ${number + 1} · ${(100 * group.share).toFixed(0)} %`),
          make("br"),
          make("span", "muted", `units ${group.units.join(", ")}`),
        );
        button.append(img, text);
        button.addEventListener("click", () => select(`g${number}`));
        item.append(button);
        if (group.icon) show(img, { url: group.icon });
        else if (group.recipe) {
          const recipe = {};
          for (const key of RECIPE_FIELDS) if (group.recipe[key] !== undefined) recipe[key] = group.recipe[key];
          recipes.push({ img, recipe });
        }
        return item;
      }),
    );
    if (!layer.groups.length) els.groups.append(make("li", "muted", "no groups at this layer"));
    renderAll(recipes);
  }

  /* Renders through the queue, in one batch request; each image follows its job's status file. */
  async function renderAll(items) {
    if (!items.length) return;
    const mine = token;
    let jobs;
    try {
      jobs = await api.submitBatch(items.map((i) => ({ ...i.recipe, priority: RENDER_PRIORITY })), { retry: false, quiet: true });
    } catch (err) {
      for (const item of items) item.img.title = `no render: ${err.message}`;
      return;
    }
    if (!jobs || mine !== token) return;
    const waiting = [];
    jobs.forEach((job, position) => {
      const item = items[position];
      api.hold(job.id);
      followed.push(job.id);
      if (job.status === "done") show(item.img, job);
      else waiting.push({ job, img: item.img });
    });
    while (waiting.length && mine === token && dialog.open) {
      await wga.api.sleep(POLL_MS * 2);
      for (let i = waiting.length - 1; i >= 0; i--) {
        let now;
        try {
          now = await api.poll(waiting[i].job, { quiet: true, retry: false });
        } catch (err) {
          continue;
        }
        if (mine !== token) return;
        if (now.status === "done") {
          show(waiting[i].img, { ...waiting[i].job, ...now });
          waiting.splice(i, 1);
        } else if (!["queued", "running"].includes(now.status)) {
          waiting[i].img.title = now.error || now.status;
          waiting.splice(i, 1);
        }
      }
    }
  }

  function show(img, job) {
    img.alt = img.dataset.alt || "";
    img.src = api.resolve(job.url || `/public/renders/${job.id}.png`);
    img.classList.remove("pending");
  }

  /* Renders nobody looks at any more go back to the queue (cancelled unless wanted elsewhere). */
  function giveBack() {
    const ids = followed.filter((id) => api.release(id));
    followed = [];
    if (ids.length) api.cancelMany(ids).catch(() => {});
  }

  function openUnit(layer, unit) {
    dialog.close();
    state.update({ model: view ? view.render_model : state.get("model"), layer, unit }, { push: true });
    if (wga.app) wga.app.schedule();
  }

  /* ---------- the heat overlay ---------- */

  function select(show) {
    if (!view) return;
    const layer = layerOf(state.get("llayer"));
    let map = null;
    let label = "the painting";
    if (show && show[0] === "u") {
      const unit = layer.units.find((u) => `u${u.unit}` === show);
      if (unit) {
        map = unit.map;
        label = `${layer.layer} unit ${unit.unit}: where it fires (max ${unit.value.toFixed(2)})`;
      }
    } else if (show && show[0] === "g") {
      const group = layer.groups[Number(show.slice(1))];
      if (group) {
        map = group.map;
        label = `${layer.layer} group ${Number(show.slice(1)) + 1}: where it is (${(100 * group.share).toFixed(0)} % of the activation)`;
      }
    }
    if (!map) show = null;
    state.update({ lshow: show || undefined });
    for (const button of dialog.querySelectorAll(".look-pick")) button.setAttribute("aria-pressed", String(button.dataset.show === show));
    els.showing.textContent = label;
    els.heat.dataset.show = show || "";
    view.heat = map;
    drawHeat();
  }

  function colour(t) {
    const x = Math.max(0, Math.min(1, t)) * (RAMP.length - 1);
    const i = Math.min(RAMP.length - 2, Math.floor(x));
    const f = x - i;
    return RAMP[i].map((v, c) => Math.round(v + (RAMP[i + 1][c] - v) * f));
  }

  /* The painting as large as its column allows (small scans are scaled up), the heat on top. */
  function fit() {
    const img = els.image;
    const column = dialog.querySelector(".look-painting");
    if (!img.naturalWidth || !column.clientWidth) return;
    const scale = Math.min(column.clientWidth / img.naturalWidth, (0.62 * window.innerHeight) / img.naturalHeight);
    img.style.width = `${Math.floor(img.naturalWidth * scale)}px`;
    img.style.height = `${Math.floor(img.naturalHeight * scale)}px`;
    drawHeat();
  }

  function drawHeat() {
    const canvas = els.heat;
    const img = els.image;
    canvas.width = img.clientWidth;
    canvas.height = img.clientHeight;
    canvas.style.width = `${img.clientWidth}px`;
    canvas.style.height = `${img.clientHeight}px`;
    const context = canvas.getContext("2d");
    context.clearRect(0, 0, canvas.width, canvas.height);
    const map = view && view.heat;
    if (!map || !map.length || !canvas.width) return;
    const rows = map.length;
    const cols = map[0].length;
    const peak = Math.max(0, ...map.flat());
    const small = document.createElement("canvas");
    small.width = cols;
    small.height = rows;
    const pixels = small.getContext("2d").createImageData(cols, rows);
    map.flat().forEach((value, i) => {
      const t = peak > 0 ? Math.max(0, value) / peak : 0;
      const [r, g, b] = colour(t);
      pixels.data.set([r, g, b, Math.round(255 * 0.75 * t)], i * 4);
    });
    small.getContext("2d").putImageData(pixels, 0, 0);
    context.imageSmoothingEnabled = true;
    context.drawImage(small, 0, 0, canvas.width, canvas.height);
  }

  /* ---------- similar artworks ---------- */

  async function drawSimilar() {
    if (!view) return;
    const by = state.get("lby") || "content";
    const layer = state.get("llayer");
    for (const button of dialog.querySelectorAll(".look-by")) button.setAttribute("aria-pressed", String(button.dataset.by === by));
    els.similar.replaceChildren();
    els.similar_note.textContent = `at ${layer}, by ${by === "content" ? "what is present (channel maxima)" : "feature statistics (channel mean and spread)"}`;
    const mine = token;
    let results;
    try {
      if (view.similar) {
        const found = (view.similar[layer] || {})[by] || { results: [] };
        if (found.error) throw new Error(found.error);
        results = found.results;
      } else {
        const answer = await api.get(`/api/probes/${enc(view.probe)}/images/${enc(view.image.id)}/similar?layer=${enc(layer)}&by=${by}&k=${SIMILAR_K}`, { quiet: true });
        results = answer.results;
      }
    } catch (err) {
      els.similar_note.textContent = err.message;
      return;
    }
    if (mine !== token || state.get("llayer") !== layer) return;
    els.similar.replaceChildren(
      ...results.map((result) => {
        const item = make("li", "look-similar-item");
        const button = make("button", "look-similar-open");
        button.type = "button";
        const who = [result.author, result.title].filter(Boolean).join(" · ") || result.file;
        button.title = `${who} (cosine ${result.score.toFixed(3)}): look at it`;
        button.setAttribute("aria-label", button.title);
        if (result.image_url) {
          const img = make("img");
          img.alt = who;
          img.loading = "lazy";
          img.src = api.resolve(result.image_url);
          button.append(img);
        }
        button.append(make("span", "look-score", result.score.toFixed(3)));
        button.addEventListener("click", () => open({ probe: view.probe, image: result.id }));
        item.append(button);
        return item;
      }),
    );
  }

  /* ---------- any image: the file button and drag and drop ---------- */

  function probeForUpload() {
    const model = state.get("model");
    const list = probes || [];
    return list.find((p) => p.model === model && p.complete) || list.find((p) => p.complete) || list[0] || null;
  }

  async function lookAtFile(file) {
    if (!["image/jpeg", "image/png", "image/webp"].includes(file.type)) {
      onError(new Error(`${file.name} is not a JPEG, PNG or WebP image: the artwork view reads those.`));
      return;
    }
    await loadProbes();
    const probe = probeForUpload();
    if (!probe) {
      onError(new Error("No probe here to compare with: build one with `python -m wga probe` (it goes under ./probes)."));
      return;
    }
    try {
      const { data } = await api.upload("/api/looks", file);
      open({ probe: probe.name, upload: data.id });
    } catch (err) {
      onError(err);
    }
  }

  function wireDrop() {
    const hasFiles = (event) => event.dataTransfer && [...event.dataTransfer.types].includes("Files");
    document.addEventListener("dragover", (event) => {
      if (!hasFiles(event)) return;
      event.preventDefault();
      document.body.classList.add("look-dropping");
    });
    document.addEventListener("dragleave", (event) => {
      if (!event.relatedTarget) document.body.classList.remove("look-dropping");
    });
    document.addEventListener("drop", (event) => {
      if (!hasFiles(event)) return;
      event.preventDefault();
      document.body.classList.remove("look-dropping");
      const file = event.dataTransfer.files[0];
      if (file) lookAtFile(file);
    });
  }

  /* ---------- wiring ---------- */

  function fromState() {
    const probe = state.get("look");
    if (!probe) {
      if (dialog.open) dialog.close();
      return;
    }
    const upload = state.get("lupload");
    const image = state.get("limage");
    const same = where && where.probe === probe && (upload ? where.upload === upload : where.image === image);
    if (same && dialog.open) return;
    if (!dialog.open) dialog.showModal();
    if (upload) load({ probe, upload });
    else if (Number.isInteger(image)) load({ probe, image });
  }

  function attach(options) {
    api = options.api;
    state = options.state;
    onError = options.onError || onError;
    build();
    loadProbes();
    window.addEventListener("hashchange", () => {
      state.reload();
      fromState();
    });
    // A permalink may also open the unit view: open this one after the page's first sync, so
    // that it is the dialog on top.
    if (state.get("look")) {
      setTimeout(async () => {
        if (wga.app) await wga.app.schedule();
        fromState();
      }, 0);
    }
  }

  wga.look = { attach, open };
})();
