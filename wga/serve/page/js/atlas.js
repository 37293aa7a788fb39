/* Activation atlases (python -m wga atlas; GET /api/atlases): a whole layer at a glance.
 *
 * An "Atlases" button in the top bar opens a dialog: pick an atlas, a level (grids of 20, 40, 80
 * cells a side and the one it was built at), zoom (buttons, wheel) and pan (drag) over the grid
 * of icons; click a cell to see its icon large, how many sampled activations fell in it, and its
 * member artworks (the probe's receptive-field crops; hover: author, title, date). Icons a level
 * lacks are asked for through the render queue (below a person's own renders) and appear as they
 * finish. The open atlas, level and cell live in the URL's hash (atlas, alevel, acell), so the
 * address is a permalink. app.js calls attach() once. */
(function () {
  "use strict";
  const wga = (window.wga = window.wga || {});

  const POLL_MS = 1000;
  const ICON_PAGE = 256; // cells per icon request
  const MAX_ZOOM = 8;
  const MIN_ZOOM = 1;

  let api = null;
  let state = null;
  let onError = () => {};
  let dialog = null;
  let els = {};
  let atlases = [];
  let view = { atlas: null, level: null, cells: [], zoom: 1, x: 0, y: 0 };
  let token = 0; // bumps when the atlas or level changes: late answers are dropped

  const base = (name) => `/api/atlases/${encodeURIComponent(name)}`;

  function make(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined && text !== null) node.textContent = text;
    return node;
  }

  /* ---------- the dialog ---------- */

  function build() {
    const bar = document.querySelector(".topbar .spacer");
    const button = make("button", "atlas-open", "Atlases");
    button.type = "button";
    button.id = "open-atlas";
    button.title = "Activation atlases of whole layers over a corpus";
    button.addEventListener("click", () => open(state.get("atlas")));
    if (bar) bar.before(button);

    dialog = make("dialog", "atlas");
    dialog.id = "atlas";
    dialog.setAttribute("aria-labelledby", "atlas-title");
    dialog.innerHTML = `
      <div class="atlas-head">
        <h2 id="atlas-title">Atlas</h2>
        <label class="field inline">Atlas <select id="atlas-pick"></select></label>
        <span id="atlas-levels" class="atlas-levels" role="group" aria-label="Level"></span>
        <button id="atlas-zoom-in" type="button" aria-label="Zoom in">+</button>
        <button id="atlas-zoom-out" type="button" aria-label="Zoom out">−</button>
        <span id="atlas-stats" class="muted" aria-live="polite"></span>
        <span class="spacer"></span>
        <button id="atlas-close" type="button" aria-label="Close" title="Close (Esc)">✕</button>
      </div>
      <div class="atlas-body">
        <div id="atlas-viewport" class="atlas-viewport" tabindex="0" aria-label="Atlas grid: drag to pan, wheel to zoom">
          <div id="atlas-plane" class="atlas-plane"></div>
        </div>
        <aside id="atlas-cell" class="atlas-cell" aria-live="polite" hidden></aside>
      </div>
      <p id="atlas-empty" class="muted" hidden>No atlas here yet: build one with
        <code>python -m wga atlas --index INDEX --layer L --out atlases/NAME</code>.</p>`;
    document.body.append(dialog);
    els = {
      title: dialog.querySelector("#atlas-title"),
      pick: dialog.querySelector("#atlas-pick"),
      levels: dialog.querySelector("#atlas-levels"),
      stats: dialog.querySelector("#atlas-stats"),
      viewport: dialog.querySelector("#atlas-viewport"),
      plane: dialog.querySelector("#atlas-plane"),
      cell: dialog.querySelector("#atlas-cell"),
      empty: dialog.querySelector("#atlas-empty"),
    };
    dialog.querySelector("#atlas-close").addEventListener("click", close);
    dialog.addEventListener("close", () => state.update({ atlas: undefined, alevel: undefined, acell: undefined }));
    dialog.querySelector("#atlas-zoom-in").addEventListener("click", () => zoomBy(2));
    dialog.querySelector("#atlas-zoom-out").addEventListener("click", () => zoomBy(0.5));
    els.pick.addEventListener("change", () => showAtlas(els.pick.value, null, null));
    wirePanZoom();
  }

  async function loadAtlases() {
    try {
      atlases = (await api.get("/api/atlases", { quiet: true })).atlases || [];
    } catch (err) {
      atlases = []; // an older backend without atlases
    }
    els.pick.replaceChildren(
      ...atlases.map((a) => {
        const option = make("option", null, `${a.name} — ${a.model} ${a.layer}`);
        option.value = a.name;
        return option;
      }),
    );
    els.empty.hidden = atlases.length > 0;
  }

  async function open(name) {
    if (!dialog.open) dialog.showModal();
    await loadAtlases();
    const chosen = atlases.find((a) => a.name === name) || atlases[0];
    if (!chosen) return;
    await showAtlas(chosen.name, state.get("alevel"), state.get("acell"));
  }

  function close() {
    if (dialog.open) dialog.close();
  }

  /* ---------- an atlas and a level ---------- */

  async function showAtlas(name, level, cell) {
    const summary = atlases.find((a) => a.name === name);
    if (!summary) return;
    els.pick.value = name;
    view.atlas = summary;
    els.title.textContent = `${summary.model} · ${summary.layer}`;
    const grids = [...new Set([...(summary.grids || []), summary.grid])].sort((a, b) => a - b);
    const chosen = grids.includes(level) ? level : summary.grid;
    els.levels.replaceChildren(
      ...grids.map((grid) => {
        const button = make("button", "atlas-level", `${grid}×${grid}`);
        button.type = "button";
        button.dataset.grid = String(grid);
        button.addEventListener("click", () => showLevel(grid, null));
        return button;
      }),
    );
    await showLevel(chosen, cell);
  }

  async function showLevel(grid, cell) {
    const mine = ++token;
    const name = view.atlas.name;
    for (const button of els.levels.children) {
      button.setAttribute("aria-pressed", String(Number(button.dataset.grid) === grid));
    }
    state.update({ atlas: name, alevel: grid, acell: cell || undefined });
    let data;
    try {
      data = await api.get(`${base(name)}/levels/${grid}`);
    } catch (err) {
      onError(err);
      return;
    }
    if (mine !== token) return;
    view.level = grid;
    view.cells = data.cells;
    view.zoom = 1;
    view.x = view.y = 0;
    drawLevel(data);
    const missing = data.cells.filter((c) => !c.icon_url && c.direction);
    els.stats.textContent = `${data.cells.length} cells · ${data.dropped} samples in dropped cells`;
    if (missing.length) requestIcons(name, grid, missing, mine);
    if (cell) showCell(cell);
    else els.cell.hidden = true;
  }

  function drawLevel(data) {
    const grid = data.grid;
    const plane = els.plane;
    plane.replaceChildren();
    plane.style.setProperty("--grid", String(grid));
    for (const cell of data.cells) {
      const button = make("button", "atlas-tile");
      button.type = "button";
      button.dataset.cell = `${cell.i}-${cell.j}`;
      button.style.gridRow = String(cell.i + 1);
      button.style.gridColumn = String(cell.j + 1);
      button.title = `cell ${cell.i}-${cell.j}: ${cell.count} samples`;
      button.setAttribute("aria-label", button.title);
      const img = make("img");
      img.alt = "";
      img.decoding = "async";
      if (cell.icon_url) img.src = api.resolve(cell.icon_url);
      else button.classList.add("pending");
      button.append(img);
      button.addEventListener("click", (event) => {
        if (view.dragged) return event.preventDefault();
        showCell(button.dataset.cell);
      });
      plane.append(button);
    }
    applyTransform();
  }

  /* Icons this level lacks, a page of cells at a time (the queue caps each client's live
   * renders): one request per page, then each job's status file polled until it is done. */
  async function requestIcons(name, grid, cells, mine) {
    for (let start = 0; start < cells.length && mine === token && dialog.open; start += ICON_PAGE) {
      const page = cells.slice(start, start + ICON_PAGE);
      let renders;
      try {
        const body = { cells: page.map((c) => [c.i, c.j]) };
        const answer = await api.request("POST", `${base(name)}/levels/${grid}/icons`, body);
        renders = answer.data.renders || [];
      } catch (err) {
        onError(err);
        return;
      }
      await waitForIcons(renders, mine);
    }
  }

  async function waitForIcons(renders, mine) {
    let waiting = renders.filter((r) => r.status !== "done");
    for (const r of renders) if (r.status === "done") setIcon(r, mine);
    while (waiting.length && mine === token && dialog.open) {
      await wga.api.sleep(POLL_MS);
      const next = [];
      for (const job of waiting) {
        let now;
        try {
          now = await api.poll(job, { quiet: true, retry: false });
        } catch (err) {
          next.push(job);
          continue;
        }
        if (now.status === "done") setIcon({ ...job, ...now }, mine);
        else if (now.status === "queued" || now.status === "running") next.push(job);
      }
      waiting = next;
    }
  }

  function setIcon(render, mine) {
    if (mine !== token) return;
    const tile = els.plane.querySelector(`[data-cell="${render.i}-${render.j}"]`);
    if (!tile) return;
    tile.classList.remove("pending");
    tile.querySelector("img").src = api.resolve(render.url || `/public/renders/${render.id}.png`);
    const cell = view.cells.find((c) => c.i === render.i && c.j === render.j);
    if (cell) cell.icon_url = render.url || `/public/renders/${render.id}.png`;
    // the open cell may have been drawn before its icon existed: give it the icon now
    const big = els.cell.querySelector(".atlas-icon-large");
    if (big && !big.getAttribute("src") && els.cell.dataset.cell === `${render.i}-${render.j}`) {
      big.src = tile.querySelector("img").src;
    }
  }

  /* ---------- one cell ---------- */

  async function showCell(key) {
    const name = view.atlas.name;
    const grid = view.level;
    state.update({ acell: key });
    for (const tile of els.plane.querySelectorAll(".atlas-tile.selected")) tile.classList.remove("selected");
    const tile = els.plane.querySelector(`[data-cell="${key}"]`);
    if (tile) tile.classList.add("selected");
    let data;
    try {
      data = await api.get(`${base(name)}/levels/${grid}/cells/${encodeURIComponent(key)}`);
    } catch (err) {
      onError(err);
      return;
    }
    if (name !== view.atlas.name || grid !== view.level) return;
    const panel = els.cell;
    panel.replaceChildren();
    panel.hidden = false;
    panel.dataset.cell = `${data.i}-${data.j}`;
    panel.append(make("h3", null, `Cell ${data.i}-${data.j}`));
    const big = make("img", "atlas-icon-large");
    big.alt = `the icon of cell ${data.i}-${data.j}: what its mean activation looks like`;
    const local = view.cells.find((c) => c.i === data.i && c.j === data.j);
    const url = data.icon_url || (local && local.icon_url);
    if (url) big.src = api.resolve(url);
    panel.append(big);
    panel.append(make("p", "atlas-count", `${data.count} sampled activations`));
    const list = make("ul", "atlas-members");
    for (const member of data.members) {
      const item = make("li", "atlas-member");
      const who = [member.author, member.title, member.date].filter(Boolean).join(" · ");
      item.title = `${who || member.file} (y ${member.y}, x ${member.x})`;
      const src = member.crop_url || member.image_url;
      if (src) {
        const img = make("img", "atlas-crop");
        img.alt = who || member.file;
        img.loading = "lazy";
        img.src = api.resolve(src);
        if (Number.isInteger(member.image) && view.atlas.probe) {
          const open = make("button", "atlas-member-open");
          open.type = "button";
          open.setAttribute("aria-label", `What the network sees in ${who || member.file}`);
          open.addEventListener("click", () => wga.look.open({ probe: view.atlas.probe, image: member.image }));
          open.append(img);
          item.append(open);
        } else {
          item.append(img);
        }
      }
      const caption = make(member.page ? "a" : "span", "atlas-member-title", who || member.file);
      if (member.page) {
        caption.href = member.page;
        caption.target = "_blank";
        caption.rel = "noopener";
      }
      item.append(caption);
      list.append(item);
    }
    panel.append(make("h4", null, "Artworks in this cell"), list);
  }

  /* ---------- zoom and pan ---------- */

  function applyTransform() {
    els.plane.style.transform = `translate(${view.x}px, ${view.y}px) scale(${view.zoom})`;
  }

  function zoomBy(factor, cx, cy) {
    const zoom = Math.min(MAX_ZOOM, Math.max(MIN_ZOOM, view.zoom * factor));
    const rect = els.viewport.getBoundingClientRect();
    const px = cx === undefined ? rect.width / 2 : cx;
    const py = cy === undefined ? rect.height / 2 : cy;
    // keep the point under the cursor (or the centre) where it is
    view.x = px - ((px - view.x) * zoom) / view.zoom;
    view.y = py - ((py - view.y) * zoom) / view.zoom;
    view.zoom = zoom;
    if (zoom === MIN_ZOOM) view.x = view.y = 0;
    applyTransform();
  }

  function wirePanZoom() {
    const vp = els.viewport;
    let start = null;
    vp.addEventListener("pointerdown", (event) => {
      start = { x: event.clientX, y: event.clientY, vx: view.x, vy: view.y };
      view.dragged = false;
    });
    vp.addEventListener("pointermove", (event) => {
      if (!start) return;
      const dx = event.clientX - start.x;
      const dy = event.clientY - start.y;
      if (Math.abs(dx) + Math.abs(dy) > 4) view.dragged = true;
      if (!view.dragged) return;
      view.x = start.vx + dx;
      view.y = start.vy + dy;
      applyTransform();
    });
    const end = () => {
      start = null;
      setTimeout(() => (view.dragged = false), 0);
    };
    vp.addEventListener("pointerup", end);
    vp.addEventListener("pointerleave", end);
    vp.addEventListener(
      "wheel",
      (event) => {
        event.preventDefault();
        const rect = vp.getBoundingClientRect();
        zoomBy(event.deltaY < 0 ? 1.25 : 0.8, event.clientX - rect.left, event.clientY - rect.top);
      },
      { passive: false },
    );
  }

  /* ---------- wiring ---------- */

  function attach(options) {
    api = options.api;
    state = options.state;
    onError = options.onError || onError;
    build();
    if (state.get("atlas")) open(state.get("atlas"));
  }

  wga.atlas = { attach };
})();
