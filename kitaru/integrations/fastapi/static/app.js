// kitaru dashboard: plain JavaScript, no build step.
// Views: "#/" lists runs (live), "#/runs/<id>" shows one run (live).
// Everything comes from the JSON API named by <meta name="kitaru-api">;
// run data is only ever inserted as text, never as HTML.
"use strict";

const API = document.querySelector('meta[name="kitaru-api"]').content.replace(/\/$/, "");
const TOKEN_KEY = "kitaru-token";
const STATUSES = ["running", "waiting", "sleeping", "completed", "failed", "cancelled"];
const FINISHED = new Set(["completed", "failed", "cancelled"]);

let streams = new AbortController(); // aborted when the view changes

// -- small helpers -------------------------------------------------------------------

function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key.startsWith("on")) el.addEventListener(key.slice(2), value);
    else if (key === "class") el.className = value;
    else if (key === "dataset") Object.assign(el.dataset, value);
    else if (key === "style") Object.assign(el.style, value); // CSSOM: allowed by the CSP
    else if (value === true) el.setAttribute(key, "");
    else el.setAttribute(key, String(value));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

const short = (id) => (id.length > 12 ? id.slice(0, 12) : id);
const badge = (status) => h("span", { class: `badge ${status}`, dataset: { status } }, status);
const json = (value) => h("pre", { class: "json" }, JSON.stringify(value, null, 2));
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

function ago(iso) {
  if (!iso) return "";
  const seconds = (Date.now() - Date.parse(iso)) / 1000;
  if (seconds < 5) return "just now";
  if (seconds < 60) return `${Math.round(seconds)} s ago`;
  if (seconds < 3600) return `${Math.round(seconds / 60)} min ago`;
  if (seconds < 86400) return `${Math.round(seconds / 3600)} h ago`;
  return new Date(iso).toLocaleDateString();
}

function when(iso) {
  return h("span", { title: iso ? new Date(iso).toLocaleString() : "" }, ago(iso));
}

function duration(seconds) {
  if (seconds === null || seconds === undefined) return "";
  if (seconds < 0.001) return `${(seconds * 1e6).toFixed(0)} µs`;
  if (seconds < 1) return `${(seconds * 1000).toFixed(1)} ms`;
  if (seconds < 120) return `${seconds.toFixed(2)} s`;
  return `${(seconds / 60).toFixed(1)} min`;
}

const tokens = (usage) =>
  usage && (usage.input_tokens || usage.output_tokens)
    ? `${usage.input_tokens} in / ${usage.output_tokens} out`
    : "";
function cost(usage) {
  if (!usage || usage.cost_usd === null || usage.cost_usd === undefined) return "";
  const c = Number(usage.cost_usd);
  if (c === 0) return "$0";
  // Three significant digits for small amounts: $0.0000135, not $0.0000.
  const digits = c >= 0.01 ? 4 : Math.min(10, 2 - Math.floor(Math.log10(c)));
  return `$${c.toFixed(digits)}`;
}

function setLive(state, text) {
  const el = document.getElementById("live");
  el.dataset.state = state;
  document.getElementById("live-text").textContent = text;
}

// -- the API ---------------------------------------------------------------------------

function authHeaders() {
  const token = sessionStorage.getItem(TOKEN_KEY);
  return token ? { Authorization: `Bearer ${token}` } : {};
}

class ApiError extends Error {
  constructor(status, detail) {
    super(typeof detail === "string" ? detail : JSON.stringify(detail));
    this.status = status;
    this.detail = detail;
  }
}

async function api(method, path, body) {
  const headers = authHeaders();
  const init = { method, headers };
  if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const response = await fetch(API + path, init);
  if (response.status === 401 || response.status === 403) {
    const data = await response.json().catch(() => ({}));
    askToken(data.detail);
    throw new ApiError(response.status, data.detail || "not allowed");
  }
  const data = response.status === 204 ? null : await response.json().catch(() => null);
  if (!response.ok) throw new ApiError(response.status, data ? data.detail : response.statusText);
  return data;
}

function describe(error) {
  if (!(error instanceof ApiError)) return String(error);
  if (Array.isArray(error.detail)) {
    return error.detail.map((d) => `${(d.loc || []).slice(1).join(".")}: ${d.msg}`).join("\n");
  }
  return String(error.detail);
}

// Server-sent events over fetch (so the bearer token can go in a header),
// resumed with Last-Event-ID after a drop; a 204 ends the stream for good.
async function stream(path, onEvent, signal) {
  let lastId = null;
  let retry = 2000;
  while (!signal.aborted) {
    try {
      const headers = authHeaders();
      if (lastId) headers["Last-Event-ID"] = lastId;
      const response = await fetch(API + path, { headers, signal });
      if (response.status === 204) return;
      if (response.status === 401 || response.status === 403) {
        askToken();
        return;
      }
      if (!response.ok) throw new Error(`${response.status}`);
      setLive("on", "live");
      const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
      let buffer = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += value;
        let end;
        while ((end = buffer.indexOf("\n\n")) >= 0) {
          const block = buffer.slice(0, end);
          buffer = buffer.slice(end + 2);
          let type = "message";
          let data = "";
          let id = null;
          for (const line of block.split("\n")) {
            if (line.startsWith("event: ")) type = line.slice(7);
            else if (line.startsWith("data: ")) data += line.slice(6);
            else if (line.startsWith("id: ")) id = line.slice(4);
            else if (line.startsWith("retry: ")) retry = Number(line.slice(7)) || retry;
          }
          if (id) lastId = id;
          if (data) onEvent(type, JSON.parse(data));
        }
      }
    } catch (error) {
      if (signal.aborted) return;
      setLive("error", "reconnecting");
    }
    await sleep(retry);
  }
}

function debounce(fn, ms) {
  let timer = null;
  return () => {
    clearTimeout(timer);
    timer = setTimeout(fn, ms);
  };
}

// -- token prompt --------------------------------------------------------------------

let asking = false;
function askToken(reason) {
  if (asking) return;
  asking = true;
  streams.abort();
  setLive("error", "locked");
  const input = h("input", { type: "password", id: "token", autocomplete: "off" });
  const view = document.getElementById("view");
  view.replaceChildren(
    h(
      "div",
      { class: "card" },
      h("h2", {}, "This server needs its API token"),
      h("p", { class: "muted" }, reason || "Enter the value of KITARU_API_TOKEN."),
      h(
        "form",
        {
          class: "actions",
          onsubmit: (event) => {
            event.preventDefault();
            sessionStorage.setItem(TOKEN_KEY, input.value.trim());
            asking = false;
            route();
          },
        },
        input,
        h("button", { class: "primary", type: "submit" }, "Open"),
      ),
    ),
  );
  input.focus();
}

// -- forms from JSON Schema ----------------------------------------------------------

function resolve(schema, root) {
  let s = schema || {};
  for (let i = 0; i < 20 && s.$ref; i++) {
    const name = s.$ref.split("/").pop();
    s = { ...(root.$defs || root.definitions || {})[name], ...s, $ref: undefined };
  }
  const options = s.anyOf || s.oneOf;
  if (options) {
    const real = options.filter((o) => o.type !== "null");
    if (real.length === 1) return { ...resolve(real[0], root), nullable: true, title: s.title };
  }
  return s;
}

// Builds inputs for a schema; returns {node, read} where read() gives the value
// (or throws an Error naming the field).
function fieldFor(schema, root, name, required) {
  const s = resolve(schema, root);
  const label = s.title || name || "value";
  const hint = s.description ? h("span", { class: "hint" }, s.description) : null;
  const id = `f-${Math.random().toString(36).slice(2, 9)}`;
  const options = s.enum || (s.const !== undefined ? [s.const] : null);
  if (options) {
    const select = h("select", { id }, options.map((o) => h("option", { value: JSON.stringify(o) }, String(o))));
    return {
      node: h("div", { class: "field" }, h("label", { for: id }, label), select, hint),
      read: () => JSON.parse(select.value),
    };
  }
  if (s.type === "boolean") {
    const box = h("input", { type: "checkbox", id, checked: s.default === true });
    return {
      node: h("div", { class: "field check" }, box, h("label", { for: id }, label), hint),
      read: () => box.checked,
    };
  }
  if (s.type === "integer" || s.type === "number") {
    const input = h("input", { type: "number", id, step: s.type === "integer" ? "1" : "any", value: s.default ?? null });
    return {
      node: h("div", { class: "field" }, h("label", { for: id }, label), input, hint),
      read: () => {
        if (input.value === "") {
          if (s.nullable || !required) return undefined;
          throw new Error(`${label}: a number is needed`);
        }
        return Number(input.value);
      },
    };
  }
  if (s.type === "string") {
    const long = !s.maxLength || s.maxLength > 120;
    const input = long
      ? h("textarea", { id, rows: 3 }, s.default ?? "")
      : h("input", { type: "text", id, value: s.default ?? null });
    return {
      node: h("div", { class: "field" }, h("label", { for: id }, label), input, hint),
      read: () => {
        if (input.value === "" && (s.nullable || !required)) return undefined;
        return input.value;
      },
    };
  }
  if (s.type === "object" && s.properties) {
    const parts = Object.entries(s.properties).map(([key, sub]) => [
      key,
      fieldFor(sub, root, key, (s.required || []).includes(key)),
    ]);
    return {
      node: h("fieldset", {}, h("legend", {}, label), parts.map(([, f]) => f.node)),
      read: () => {
        const value = {};
        for (const [key, f] of parts) {
          const v = f.read();
          if (v !== undefined) value[key] = v;
        }
        return value;
      },
    };
  }
  const area = h("textarea", { id, rows: 4, placeholder: "JSON" }, s.default !== undefined ? JSON.stringify(s.default) : "");
  return {
    node: h(
      "div",
      { class: "field" },
      h("label", { for: id }, `${label} (JSON)`),
      area,
      h("span", { class: "hint" }, s.type ? `a JSON ${s.type}` : "any JSON value"),
    ),
    read: () => {
      if (area.value.trim() === "" && !required) return undefined;
      try {
        return JSON.parse(area.value);
      } catch (error) {
        throw new Error(`${label}: not valid JSON (${error.message})`);
      }
    },
  };
}

// The answer form of a pending wait; submit(value) posts it.
function answerForm(wait, submit) {
  const schema = wait.schema || {};
  const top = resolve(schema, schema);
  const note = h("div", { class: "note", role: "status" });
  const send = async (value, buttons) => {
    note.className = "note";
    note.textContent = "sending…";
    buttons.forEach((b) => (b.disabled = true));
    try {
      await submit(value);
      note.className = "note ok";
      note.textContent = "Sent. Waiting for the run to continue…";
    } catch (error) {
      note.className = "note err";
      note.textContent = describe(error);
      buttons.forEach((b) => (b.disabled = false));
    }
  };
  if (top.type === "boolean" && !top.nullable) {
    const yes = h("button", { class: "yes", type: "button", name: "yes" }, "Yes");
    const no = h("button", { class: "no", type: "button", name: "no" }, "No");
    yes.addEventListener("click", () => send(true, [yes, no]));
    no.addEventListener("click", () => send(false, [yes, no]));
    return h("div", { class: "form" }, h("div", { class: "actions" }, yes, no), note);
  }
  const field = fieldFor(schema, schema, "answer", true);
  const button = h("button", { class: "primary", type: "submit" }, "Send answer");
  return h(
    "form",
    {
      class: "form",
      onsubmit: (event) => {
        event.preventDefault();
        let value;
        try {
          value = field.read();
        } catch (error) {
          note.className = "note err";
          note.textContent = error.message;
          return;
        }
        send(value === undefined ? null : value, [button]);
      },
    },
    field.node,
    h("div", { class: "actions" }, button),
    note,
  );
}

// -- runs list -----------------------------------------------------------------------

async function runsView(params) {
  const status = params.get("status") || "";
  const flow = params.get("flow") || "";
  const view = document.getElementById("view");
  const flows = await api("GET", "/flows");
  const query = new URLSearchParams({ limit: "100" });
  if (status) query.set("status", status);
  if (flow) query.set("flow", flow);

  const filter = (key, value) => {
    const next = new URLSearchParams(params);
    if (value) next.set(key, value);
    else next.delete(key);
    location.hash = `#/?${next}`;
  };
  const statusSelect = h(
    "select",
    { "aria-label": "status", onchange: (e) => filter("status", e.target.value) },
    h("option", { value: "" }, "all statuses"),
    STATUSES.map((s) => h("option", { value: s, selected: s === status }, s)),
  );
  const flowSelect = h(
    "select",
    { "aria-label": "flow", onchange: (e) => filter("flow", e.target.value) },
    h("option", { value: "" }, "all flows"),
    flows.map((f) => h("option", { value: f.name, selected: f.name === flow }, f.name)),
  );
  const startPanel = h("div", { class: "card", hidden: true });
  const startButton = h(
    "button",
    {
      class: "primary",
      disabled: flows.length === 0,
      onclick: () => {
        startPanel.hidden = !startPanel.hidden;
        if (!startPanel.hidden) renderStart(startPanel, flows);
      },
    },
    "Start a run",
  );
  const body = h("tbody");
  const table = h(
    "div",
    { class: "card table-card" },
    h(
      "table",
      { id: "runs" },
      h(
        "thead",
        {},
        h(
          "tr",
          {},
          h("th", {}, "Run"),
          h("th", {}, "Flow"),
          h("th", {}, "Status"),
          h("th", {}, "Waiting for"),
          h("th", { class: "num" }, "Steps"),
          h("th", { class: "num" }, "Tokens"),
          h("th", { class: "num" }, "Cost"),
          h("th", {}, "Created"),
          h("th", {}, "Updated"),
        ),
      ),
      body,
    ),
  );
  view.replaceChildren(
    h("div", { class: "bar" }, h("h1", {}, "Runs"), h("span", { class: "grow" }), statusSelect, flowSelect, startButton),
    startPanel,
    table,
  );

  const rowOf = (run) =>
    h(
      "tr",
      { dataset: { run: run.id } },
      h("td", {}, h("a", { class: "mono", href: `#/runs/${encodeURIComponent(run.id)}` }, short(run.id))),
      h("td", {}, run.flow),
      h("td", {}, badge(run.status)),
      h("td", { class: "muted" }, run.pending_wait ? (run.pending_wait.question || `a message on "${run.pending_wait.topic}"`).split("\n")[0] : ""),
      h("td", { class: "num" }, run.checkpoints ?? ""),
      h("td", { class: "num" }, tokens(run.usage)),
      h("td", { class: "num" }, cost(run.usage)),
      h("td", {}, when(run.created_at)),
      h("td", {}, when(run.updated_at)),
    );

  const load = async () => {
    const page = await api("GET", `/runs?${query}`);
    body.replaceChildren(...page.runs.map(rowOf));
    if (page.runs.length === 0) {
      body.append(h("tr", {}, h("td", { colspan: 9, class: "empty" }, "No runs yet.")));
    }
  };
  await load();
  const reload = debounce(() => load().catch(() => {}), 150);
  stream(
    "/events",
    (type, run) => {
      if (type !== "run") return;
      const row = body.querySelector(`tr[data-run="${CSS.escape(run.id)}"]`);
      if (row || (!status || run.status === status)) reload();
    },
    streams.signal,
  );
}

function renderStart(panel, flows) {
  const select = h("select", { "aria-label": "flow to start" }, flows.map((f) => h("option", { value: f.name }, f.name)));
  const slot = h("div");
  const note = h("div", { class: "note" });
  let field = null;
  const show = () => {
    const flow = flows.find((f) => f.name === select.value);
    field = fieldFor(flow.input_schema, flow.input_schema, "input", true);
    slot.replaceChildren(flow.doc ? h("p", { class: "muted" }, flow.doc) : "", field.node);
  };
  select.addEventListener("change", show);
  const form = h(
    "form",
    {
      class: "form",
      onsubmit: async (event) => {
        event.preventDefault();
        try {
          const run = await api("POST", `/flows/${encodeURIComponent(select.value)}/runs`, { input: field.read() || {} });
          location.hash = `#/runs/${encodeURIComponent(run.id)}`;
        } catch (error) {
          note.className = "note err";
          note.textContent = error instanceof ApiError ? describe(error) : error.message;
        }
      },
    },
    h("div", { class: "actions" }, h("label", {}, "Flow "), select),
    slot,
    h("div", { class: "actions" }, h("button", { class: "primary", type: "submit" }, "Start")),
    note,
  );
  panel.replaceChildren(h("h2", {}, "Start a run"), form);
  show();
}

// -- one run -------------------------------------------------------------------------

async function runView(runId) {
  const view = document.getElementById("view");
  const head = h("div");
  const waitSlot = h("div");
  const outcome = h("div");
  const timeline = h("div");
  const extra = h("div");
  view.replaceChildren(
    h("div", { class: "crumbs" }, h("a", { href: "#/" }, "Runs"), " / ", h("span", { class: "mono" }, runId)),
    head,
    waitSlot,
    outcome,
    timeline,
    extra,
  );
  let waitKey = null;
  let info = null;

  const actionNote = h("span", { class: "note", role: "status" });
  const act = async (label, fn) => {
    actionNote.className = "note";
    actionNote.textContent = `${label}…`;
    try {
      const result = await fn();
      actionNote.textContent = "";
      return result;
    } catch (error) {
      actionNote.className = "note err";
      actionNote.textContent = describe(error);
      return null;
    }
  };

  const render = () => {
    const active = !FINISHED.has(info.status);
    const replayFrom = h(
      "select",
      { "aria-label": "replay from" },
      h("option", { value: "" }, "from the start"),
      info.checkpoints
        .filter((c) => c.status === "completed")
        .map((c) => h("option", { value: String(c.position) }, `from #${c.position} ${c.name}`)),
    );
    head.replaceChildren(
      h("h1", {}, info.flow, badge(info.status)),
      h(
        "div",
        { class: "meta" },
        h("span", {}, "run ", h("b", { class: "mono" }, info.id)),
        h("span", {}, "created ", when(info.created_at)),
        h("span", {}, "updated ", when(info.updated_at)),
        info.replay_of ? h("span", {}, "replay of ", h("a", { class: "mono", href: `#/runs/${encodeURIComponent(info.replay_of)}` }, short(info.replay_of))) : null,
        info.parent_id ? h("span", {}, "child of ", h("a", { class: "mono", href: `#/runs/${encodeURIComponent(info.parent_id)}` }, short(info.parent_id))) : null,
      ),
      h(
        "div",
        { class: "bar" },
        active
          ? h("button", { class: "danger", id: "cancel", onclick: () => confirm("Cancel this run?") && act("cancelling", () => api("POST", `/runs/${encodeURIComponent(runId)}/cancel`)).then(refresh) }, "Cancel run")
          : null,
        info.status === "failed"
          ? h("button", { id: "retry", onclick: () => act("retrying", () => api("POST", `/runs/${encodeURIComponent(runId)}/retry`)).then(() => follow()) }, "Retry")
          : null,
        replayFrom,
        h(
          "button",
          {
            id: "replay",
            onclick: async () => {
              const from = replayFrom.value === "" ? null : Number(replayFrom.value);
              const run = await act("replaying", () => api("POST", `/runs/${encodeURIComponent(runId)}/replay`, { from_checkpoint: from }));
              if (run) location.hash = `#/runs/${encodeURIComponent(run.id)}`;
            },
          },
          "Replay",
        ),
        actionNote,
      ),
    );

    const wait = info.pending_wait;
    const key = wait ? JSON.stringify(wait) : null;
    if (key !== waitKey) {
      waitKey = key;
      waitSlot.replaceChildren(
        wait
          ? h(
              "div",
              { class: "card wait", id: "wait" },
              h("h2", {}, `Waiting for a message on "${wait.topic}"`),
              wait.question ? h("p", { class: "question" }, wait.question) : null,
              answerForm(wait, (value) => api("POST", `/runs/${encodeURIComponent(runId)}/messages`, { topic: wait.topic, payload: value })),
              wait.deadline ? h("p", { class: "muted" }, `times out ${new Date(wait.deadline).toLocaleString()}`) : null,
            )
          : "",
      );
    }

    outcome.replaceChildren(
      info.status === "completed" ? h("div", { class: "card", id: "output" }, h("h2", {}, "Output"), json(info.output)) : "",
      info.error
        ? h(
            "div",
            { class: "card error" },
            h("h2", {}, "Error"),
            h("p", { class: "mono" }, info.error),
            info.traceback ? h("details", {}, h("summary", {}, "traceback"), h("pre", { class: "json" }, info.traceback)) : null,
          )
        : "",
    );

    const longest = Math.max(0.000001, ...info.checkpoints.map((c) => c.duration_s || 0));
    timeline.replaceChildren(
      h(
        "div",
        { class: "card table-card" },
        h(
          "table",
          { id: "timeline" },
          h(
            "thead",
            {},
            h(
              "tr",
              {},
              h("th", { class: "num" }, "#"),
              h("th", {}, "Step"),
              h("th", {}, "Kind"),
              h("th", {}, "Status"),
              h("th", { class: "num" }, "Attempts"),
              h("th", {}, "Started"),
              h("th", {}, "Duration"),
              h("th", { class: "num" }, "Tokens"),
              h("th", { class: "num" }, "Cost"),
              h("th", {}, "Metadata"),
            ),
          ),
          h(
            "tbody",
            {},
            info.checkpoints.length === 0
              ? h("tr", {}, h("td", { colspan: 10, class: "empty" }, "No checkpoints yet."))
              : info.checkpoints.map((c) => {
                  const usage = c.metadata && c.metadata.usage;
                  const meta = { ...c.metadata };
                  delete meta.usage;
                  return h(
                    "tr",
                    { dataset: { position: c.position } },
                    h("td", { class: "num mono" }, c.position),
                    h("td", {}, h("b", {}, c.name)),
                    h("td", {}, h("span", { class: "chip" }, c.kind)),
                    h("td", {}, badge(c.status)),
                    h("td", { class: "num" }, c.attempts),
                    h("td", {}, h("span", { title: c.started_at }, new Date(c.started_at).toLocaleTimeString())),
                    h(
                      "td",
                      {},
                      duration(c.duration_s),
                      c.duration_s ? h("span", { class: "durbar", style: { width: `${Math.max(2, (80 * c.duration_s) / longest)}px` } }) : null,
                    ),
                    h("td", { class: "num" }, tokens(usage)),
                    h("td", { class: "num" }, cost(usage)),
                    h(
                      "td",
                      {},
                      Object.keys(meta).length ? h("details", {}, h("summary", {}, Object.keys(meta).join(", ")), json(meta)) : "",
                      c.errors && c.errors.length ? h("details", {}, h("summary", {}, `${c.errors.length} failed attempt(s)`), json(c.errors)) : "",
                    ),
                  );
                }),
          ),
        ),
      ),
    );

    extra.replaceChildren(
      h(
        "div",
        { class: "grid2" },
        h(
          "div",
          { class: "card" },
          h("h2", {}, "Usage"),
          h(
            "div",
            { class: "stats" },
            h("div", {}, h("div", { class: "stat" }, info.usage.input_tokens), h("div", { class: "muted" }, "input tokens")),
            h("div", {}, h("div", { class: "stat" }, info.usage.output_tokens), h("div", { class: "muted" }, "output tokens")),
            h("div", {}, h("div", { class: "stat" }, cost(info.usage) || "–"), h("div", { class: "muted" }, "cost")),
          ),
        ),
        h("div", { class: "card" }, h("h2", {}, "Input"), json(info.input)),
      ),
      Object.keys(info.metadata || {}).length ? h("div", { class: "card" }, h("h2", {}, "Metadata"), json(info.metadata)) : "",
    );
  };

  const refresh = async () => {
    try {
      info = await api("GET", `/runs/${encodeURIComponent(runId)}`);
      render();
    } catch (error) {
      if (!info) view.replaceChildren(h("div", { class: "card error" }, describe(error)));
    }
  };
  const later = debounce(refresh, 60);
  const follow = () => stream(`/runs/${encodeURIComponent(runId)}/events`, later, streams.signal);
  await refresh();
  if (info) follow();
}

// -- routing -------------------------------------------------------------------------

function route() {
  streams.abort();
  streams = new AbortController();
  setLive("off", "connecting");
  const hash = location.hash || "#/";
  const fragment = new URLSearchParams(hash.startsWith("#token=") ? hash.slice(1) : "");
  if (fragment.get("token")) {
    sessionStorage.setItem(TOKEN_KEY, fragment.get("token"));
    history.replaceState(null, "", location.pathname + location.search + "#/");
    return route();
  }
  const run = hash.match(/^#\/runs\/([^?]+)/);
  const done = run ? runView(decodeURIComponent(run[1])) : runsView(new URLSearchParams(hash.split("?")[1] || ""));
  done.catch((error) => {
    if (error instanceof ApiError && (error.status === 401 || error.status === 403)) return;
    document.getElementById("view").replaceChildren(h("div", { class: "card error" }, describe(error)));
  });
}

window.addEventListener("hashchange", route);
route();
