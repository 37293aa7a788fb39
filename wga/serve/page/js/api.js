/* The REST client: JSON in and out, readable errors, and patience with a backend that restarts.
 *
 * Access: a backend reachable from other machines wants a token (`wga serve` prints the page's
 * address with `?token=…`). The page takes it from its address once, keeps it for the tab
 * (sessionStorage) and removes it from the address bar (so it does not travel in permalinks),
 * then sends it as `Authorization: token …`, and as `?token=` on image URLs (an <img> cannot
 * send headers). Each tab also sends its own client id, so the backend shares the render
 * workers fairly between tabs and people.
 *
 * Polling: a job's `status_url` (and the queue's) are static files the backend rewrites; reading
 * them costs no kernel round trip, so they are what the page polls.
 *
 * Network failures (the server is down or restarting) are retried with exponential backoff and
 * reported as connection events, so the page can show "reconnecting" instead of failing; a full
 * queue (503 + Retry-After) is retried after the time the server asks for. Errors the server
 * means (4xx, 5xx with {"error": ...}) are thrown as ApiError with its message, never retried. */
(function () {
  "use strict";
  const wga = (window.wga = window.wga || {});

  const BACKOFF_FIRST_MS = 500;
  const BACKOFF_MAX_MS = 8000;
  const REQUEST_TIMEOUT_MS = 30000;
  const HEARTBEAT_MS = 5000;
  const KERNEL_EVERY = 6; // every 6th heartbeat asks the kernel itself (is it still alive?)
  const TOKEN_KEY = "wga.token";
  const CLIENT_KEY = "wga.client";

  /* The token from the page's address (?token= or #token=), else the one this tab kept. */
  function takeToken() {
    const url = new URL(location.href);
    const hash = new URLSearchParams(url.hash.replace(/^#/, ""));
    const given = url.searchParams.get("token") || hash.get("token");
    if (given) {
      sessionStorage.setItem(TOKEN_KEY, given);
      url.searchParams.delete("token");
      hash.delete("token");
      url.hash = hash.toString();
      history.replaceState(history.state, "", url.toString());
    }
    return sessionStorage.getItem(TOKEN_KEY) || "";
  }

  function clientId() {
    let id = sessionStorage.getItem(CLIENT_KEY);
    if (!id) {
      id = Array.from(crypto.getRandomValues(new Uint8Array(8)), (b) => b.toString(16).padStart(2, "0")).join("");
      sessionStorage.setItem(CLIENT_KEY, id);
    }
    return id;
  }

  class ApiError extends Error {
    constructor(message, { status = 0, retryAfter = null, network = false, fromApi = false } = {}) {
      super(message);
      this.name = "ApiError";
      this.status = status;
      this.retryAfter = retryAfter;
      this.network = network;
      this.fromApi = fromApi; // a JSON {"error"} from the API, not the server's own error page
    }
  }

  function sleep(ms, signal) {
    return new Promise((resolve, reject) => {
      if (signal && signal.aborted) return reject(signal.reason);
      const timer = setTimeout(resolve, ms);
      if (signal) {
        signal.addEventListener(
          "abort",
          () => {
            clearTimeout(timer);
            reject(signal.reason);
          },
          { once: true },
        );
      }
    });
  }

  function backoffDelay(attempt) {
    const base = Math.min(BACKOFF_MAX_MS, BACKOFF_FIRST_MS * 2 ** attempt);
    return base * (0.75 + Math.random() * 0.5);
  }

  /* What the page should call the backend: empty = the origin that served the page. */
  function normaliseBase(address) {
    const text = (address || "").trim();
    if (!text) {
      if (location.protocol === "http:" || location.protocol === "https:") return location.origin;
      return null; // opened as a file and no address given
    }
    const withScheme = /^[a-z]+:\/\//i.test(text) ? text : "http://" + text;
    const url = new URL(withScheme);
    return url.origin + url.pathname.replace(/\/+$/, "");
  }

  class Api extends EventTarget {
    constructor(address) {
      super();
      this.setAddress(address);
      this.online = null; // unknown until the first answer
      this.features = { presets: false, batch: false };
      this.holders = new Map(); // render id -> how many views follow it
      this.token = takeToken();
      this.client = clientId();
      this.statusUrl = null; // the fast path of /api/status, once the backend named it
    }

    headers(withBody) {
      const headers = { "X-Wga-Client": this.client };
      if (withBody) headers["Content-Type"] = "application/json";
      if (this.token) headers.Authorization = `token ${this.token}`;
      return headers;
    }

    /* Renders are content-addressed: two views (a tile and the unit view, or both compare
     * panes) can follow the same job. Each view holds the ids it follows; a job is cancelled
     * only when the last view that wanted it lets go. */
    hold(id) {
      if (id) this.holders.set(id, (this.holders.get(id) || 0) + 1);
    }

    /* Let go of `id`; true when no view follows it any more (then it may be cancelled). */
    release(id) {
      if (!id) return false;
      const left = (this.holders.get(id) || 0) - 1;
      if (left > 0) {
        this.holders.set(id, left);
        return false;
      }
      this.holders.delete(id);
      return true;
    }

    setAddress(address) {
      this.address = (address || "").trim();
      this.base = normaliseBase(this.address);
    }

    /* An absolute URL for a path the API returned (e.g. "/public/renders/x.png"), with `query`
     * added, and the token when there is one (for <img> and links, which cannot send headers). */
    resolve(path, query = {}) {
      let absolute = path;
      if (this.base && !/^[a-z]+:\/\//i.test(path)) absolute = this.base + (path.startsWith("/") ? path : "/" + path);
      const params = new URLSearchParams(query);
      if (this.token) params.set("token", this.token);
      const text = params.toString();
      if (!text) return absolute;
      return absolute + (absolute.includes("?") ? "&" : "?") + text;
    }

    _setOnline(online) {
      if (this.online === online) return;
      const was = this.online;
      this.online = online;
      this.dispatchEvent(new CustomEvent(online ? "online" : "offline", { detail: { was } }));
    }

    /* One request. `retry`: keep trying through network failures and full queues (only for
     * idempotent calls; render submissions are, since renders are content-addressed). */
    async request(method, path, body, { retry = true, signal, quiet = false } = {}) {
      if (!this.base) {
        throw new ApiError(
          "No backend address: open Settings and enter the API address (e.g. http://127.0.0.1:8765).",
        );
      }
      let attempt = 0;
      for (;;) {
        if (signal && signal.aborted) throw signal.reason;
        let response;
        try {
          const timeout = AbortSignal.timeout(REQUEST_TIMEOUT_MS);
          response = await fetch(this.base + path, {
            method,
            headers: this.headers(body !== undefined),
            body: body === undefined ? undefined : JSON.stringify(body),
            signal: signal ? AbortSignal.any([signal, timeout]) : timeout,
            cache: "no-store",
          });
        } catch (err) {
          if (signal && signal.aborted) throw signal.reason;
          this._setOnline(false);
          if (!retry) {
            throw new ApiError(`Cannot reach the backend at ${this.base} (${err.message}).`, {
              network: true,
            });
          }
          await sleep(backoffDelay(attempt++), signal);
          continue;
        }
        this._setOnline(true);
        const { data, valid } = await readBody(response);
        if (response.ok && valid) return { status: response.status, data };
        if (response.ok) {
          // A success without a JSON body: seen while the gateway shuts its kernel down.
          if (!retry) throw new ApiError("The backend sent an unreadable answer; try again.", { network: true });
          await sleep(backoffDelay(attempt++), signal);
          continue;
        }
        const retryAfter = Number.parseFloat(response.headers.get("Retry-After"));
        const message = errorMessage(data, response);
        if ([429, 502, 503, 504].includes(response.status) && retry) {
          const wait = Number.isFinite(retryAfter) ? retryAfter * 1000 : backoffDelay(attempt++);
          if (!quiet) {
            this.dispatchEvent(
              new CustomEvent("busy", { detail: { message, seconds: Math.round(wait / 1000) } }),
            );
          }
          await sleep(wait, signal);
          continue;
        }
        throw new ApiError(message, {
          status: response.status,
          retryAfter: Number.isFinite(retryAfter) ? retryAfter : null,
          fromApi: valid,
        });
      }
    }

    get(path, options) {
      return this.request("GET", path, undefined, options).then((r) => r.data);
    }

    /* POST a file as the body itself (its own Content-Type), e.g. an image to look at; not
     * retried (an upload is not worth sending twice), errors as for request(). */
    async upload(path, file) {
      if (!this.base) throw new ApiError("No backend address: open Settings and enter it.");
      const headers = { "X-Wga-Client": this.client, "Content-Type": file.type };
      if (this.token) headers.Authorization = `token ${this.token}`;
      let response;
      try {
        response = await fetch(this.base + path, { method: "POST", headers, body: file, cache: "no-store" });
      } catch (err) {
        throw new ApiError(`Cannot reach the backend at ${this.base} (${err.message}).`, { network: true });
      }
      const { data, valid } = await readBody(response);
      if (response.ok && valid) return { status: response.status, data };
      throw new ApiError(errorMessage(data, response), { status: response.status, fromApi: valid });
    }

    models() {
      return this.get("/api/models");
    }

    layers(model) {
      return this.get(`/api/models/${encodeURIComponent(model)}/layers`);
    }

    /* Presets, if the backend lists them; otherwise the two the design names. */
    async presets() {
      try {
        const data = await this.get("/api/presets", { retry: false, quiet: true });
        const list = Array.isArray(data) ? data : data.presets || [];
        const presets = list.map((p) => (typeof p === "string" ? { name: p } : p));
        if (presets.length) {
          this.features.presets = true;
          return presets;
        }
      } catch (err) {
        if (err.network) throw err;
      }
      return [
        { name: "lucid", description: "slow, high quality", default: true },
        { name: "offert2018", description: "the 2018 look" },
      ];
    }

    submit(params, options) {
      return this.request("POST", "/api/renders", params, options).then((r) => r.data);
    }

    /* Many renders in one request when the backend offers it, else null (caller falls back). */
    async submitBatch(list, options) {
      if (this.features.batch === "absent") return null;
      try {
        const { data } = await this.request("POST", "/api/renders/batch", { renders: list }, options);
        this.features.batch = true;
        const items = Array.isArray(data) ? data : data.renders || data.jobs || [];
        return items;
      } catch (err) {
        // No such endpoint (an older backend): the server's own 404/405, not an API error
        // such as an unknown model, which the caller should show.
        if (err instanceof ApiError && [404, 405].includes(err.status) && !err.fromApi) {
          this.features.batch = "absent";
          return null;
        }
        throw err;
      }
    }

    render(id, options) {
      return this.get(`/api/renders/${encodeURIComponent(id)}`, options);
    }

    /* A job's current state: its status_url (a static file: no kernel round trip) when the
     * backend gives one, else GET /api/renders/:id. A 404 means the backend forgot the job. */
    poll(job, options) {
      if (job.status_url) return this.get(job.status_url, options);
      return this.render(job.id, options);
    }

    cancel(id) {
      return this.request("DELETE", `/api/renders/${encodeURIComponent(id)}`, undefined, {
        retry: false,
      }).then((r) => r.data);
    }

    /* Give back many renders in one request (they are cancelled unless another client wants
     * them); `keepalive` lets it outlive the page. */
    cancelMany(ids, { keepalive = false } = {}) {
      if (!this.base || !ids.length) return Promise.resolve(null);
      return fetch(`${this.base}/api/renders`, {
        method: "DELETE",
        headers: this.headers(true),
        body: JSON.stringify({ ids }),
        keepalive,
      });
    }

    /* Cancel while the page goes away: keepalive requests outlive the page. */
    cancelOnUnload(ids) {
      this.cancelMany(ids, { keepalive: true }).catch(() => {});
    }

    /* The queue's status: the fast path when known, and the kernel every KERNEL_EVERY calls. */
    async status(options) {
      this._statusCalls = (this._statusCalls || 0) + 1;
      if (this.statusUrl && this._statusCalls % KERNEL_EVERY) {
        try {
          return await this.get(this.statusUrl, options);
        } catch (err) {
          if (err.network) throw err;
          this.statusUrl = null; // not (or no longer) offered: ask the kernel
        }
      }
      const status = await this.get("/api/status", options);
      this.statusUrl = status.status_url || null;
      return status;
    }

    /* Poll /api/status so the connection indicator is right even when nothing else happens,
     * and so a restarted backend is noticed (faster while offline). */
    startHeartbeat(onStatus) {
      this.stopHeartbeat();
      let attempt = 0;
      const beat = async () => {
        try {
          const status = await this.status({ retry: false, quiet: true });
          attempt = 0;
          onStatus(status);
        } catch (err) {
          if (!err.network) onStatus(null, err);
          else attempt++;
        }
        const wait = this.online === false ? backoffDelay(attempt) : HEARTBEAT_MS;
        this._heartbeat = setTimeout(beat, wait);
      };
      beat();
    }

    stopHeartbeat() {
      clearTimeout(this._heartbeat);
    }
  }

  /* The JSON body; `valid` is false when there is none (the gateway's own error pages are text). */
  async function readBody(response) {
    let text = "";
    try {
      text = await response.text();
    } catch {
      return { data: {}, valid: false };
    }
    try {
      const data = JSON.parse(text);
      return { data, valid: data !== null && typeof data === "object" };
    } catch {
      return { data: { error: text.trim().slice(0, 500) }, valid: false };
    }
  }

  function errorMessage(data, response) {
    if (data && typeof data.error === "string" && data.error) return data.error;
    if (data && typeof data.message === "string") return data.message;
    return `The backend answered ${response.status} ${response.statusText || ""}`.trim();
  }

  /* Load an image; a failure is retried with backoff (`retries` times), because a backend that
   * restarts answers nothing for a while and then serves the same file again (accepted renders
   * survive a restart). Resolves with the loaded <img>, rejects after the last try. */
  function loadImage(src, { retries = 0 } = {}) {
    return new Promise((resolve, reject) => {
      let attempt = 0;
      const tryOnce = () => {
        const probe = new Image();
        probe.onload = () => resolve(probe);
        probe.onerror = () => {
          if (attempt >= retries) {
            reject(new Error(`the image ${src} could not be loaded`));
            return;
          }
          setTimeout(tryOnce, backoffDelay(attempt++));
        };
        probe.src = src;
      };
      tryOnce();
    });
  }

  const FINAL_IMAGE_RETRIES = 6; // ~30 s of backoff: longer than a backend's restart

  wga.api = { Api, ApiError, sleep, backoffDelay, normaliseBase, loadImage, FINAL_IMAGE_RETRIES };
})();
