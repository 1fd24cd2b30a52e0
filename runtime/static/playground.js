// skyform playground: one form per endpoint, generated from the app's OpenAPI schema.
// JSON and multipart (file) endpoints run through the queue; streaming endpoints
// (x-skyform-stream) are called directly and show each event as it arrives.
// A public app's schema comes embedded in the page; a private app's is fetched
// with the API key the user pastes (the page itself shows nothing of the app).
(function () {
  "use strict";
  const config = JSON.parse(document.getElementById("skyform-config").textContent);
  let spec = config.openapi || {};
  const keyInput = document.getElementById("api-key");
  const storageKey = "skyform-api-key";
  keyInput.value = window.localStorage.getItem(storageKey) || "";
  document.getElementById("auth-note").textContent = config.auth === "public"
    ? "(this app is public: no key needed)"
    : "(this app is private: paste the stack's API key to load its endpoints)";

  function resolve(schema) {
    let s = schema || {};
    for (let i = 0; i < 20 && s.$ref; i++) {
      const name = s.$ref.split("/").pop();
      s = ((spec.components || {}).schemas || {})[name] || {};
    }
    const options = s.anyOf || s.oneOf;
    if (options) {
      const real = options.filter((o) => o.type !== "null");
      if (real.length === 1) {
        return Object.assign({}, resolve(real[0]), { nullable: true, default: s.default, title: s.title });
      }
    }
    return s;
  }

  function field(name, schema, required) {
    const s = resolve(schema);
    const wrap = document.createElement("div");
    const label = document.createElement("label");
    const id = "f-" + Math.random().toString(36).slice(2);
    label.htmlFor = id;
    label.textContent = name + (required ? " *" : "");
    const type = document.createElement("span");
    type.className = "type";
    type.textContent = " " + (s.type || "json");
    label.appendChild(type);
    let input;
    const isFile = s.type === "string" && (s.format === "binary" || s.contentMediaType);
    if (isFile) {
      input = document.createElement("input");
      input.type = "file";
      input.dataset.kind = "file";
      type.textContent = " file";
    } else if (s.enum) {
      input = document.createElement("select");
      for (const v of s.enum) {
        const o = document.createElement("option");
        o.value = JSON.stringify(v);
        o.textContent = String(v);
        input.appendChild(o);
      }
      input.dataset.kind = "enum";
    } else if (s.type === "boolean") {
      input = document.createElement("input");
      input.type = "checkbox";
      input.checked = s.default === true;
      input.dataset.kind = "boolean";
    } else if (s.type === "integer" || s.type === "number") {
      input = document.createElement("input");
      input.type = "number";
      input.step = s.type === "integer" ? "1" : "any";
      if (s.default !== undefined && s.default !== null) input.value = s.default;
      input.dataset.kind = s.type;
    } else if (s.type === "string") {
      input = document.createElement("input");
      input.type = "text";
      if (typeof s.default === "string") input.value = s.default;
      input.dataset.kind = "string";
    } else {
      input = document.createElement("textarea");
      input.placeholder = "JSON";
      if (s.default !== undefined) input.value = JSON.stringify(s.default);
      input.dataset.kind = "json";
    }
    input.id = id;
    input.name = name;
    input.dataset.required = required ? "1" : "";
    wrap.appendChild(label);
    wrap.appendChild(input);
    return wrap;
  }

  function readForm(form) {
    const body = {};
    for (const input of form.querySelectorAll("[data-kind]")) {
      const kind = input.dataset.kind;
      const name = input.name;
      if (kind === "file") {
        if (input.files.length) body[name] = input.files[0];
        else if (input.dataset.required) throw new Error(name + " is required (choose a file)");
        continue;
      }
      if (kind === "boolean") { body[name] = input.checked; continue; }
      if (input.value === "") {
        if (input.dataset.required) throw new Error(name + " is required");
        continue;
      }
      if (kind === "integer" || kind === "number") body[name] = Number(input.value);
      else if (kind === "string") body[name] = input.value;
      else {
        try { body[name] = JSON.parse(input.value); }
        catch (e) { throw new Error(name + " is not valid JSON: " + e.message); }
      }
    }
    return body;
  }

  function headers(json) {
    const h = json === false ? {} : { "content-type": "application/json" };
    if (keyInput.value) h["authorization"] = "Bearer " + keyInput.value;
    return h;
  }

  // The request body of a form: JSON, or FormData for multipart/form endpoints
  // (the browser then sets the multipart content type itself).
  function encodeBody(form, kind) {
    const values = readForm(form);
    if (kind !== "form") return JSON.stringify(values);
    const data = new FormData();
    for (const [name, value] of Object.entries(values)) {
      data.append(name, value instanceof File ? value : (typeof value === "string" ? value : JSON.stringify(value)));
    }
    return data;
  }

  // Each SSE event of a streamed answer, shown as it arrives.
  async function stream(form, url, body, kind) {
    const statusBox = form.querySelector(".status");
    const resultBox = form.querySelector(".result");
    let r;
    try {
      r = await fetch(url, { method: "POST", headers: headers(kind === "json"), body: body });
    } catch (e) { return { error: "the gateway did not answer: " + e.message }; }
    if (!r.ok || !(r.headers.get("content-type") || "").startsWith("text/event-stream")) {
      const text = await r.text();
      return { status: r.status, text: text, error: r.ok ? null : "HTTP " + r.status };
    }
    form.dataset.state = "streaming";
    statusBox.textContent = "STREAMING";
    const reader = r.body.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    let count = 0;
    let failed = null;
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += decoder.decode(value, { stream: true });
      let cut;
      while ((cut = buffer.indexOf("\n\n")) >= 0) {
        const block = buffer.slice(0, cut);
        buffer = buffer.slice(cut + 2);
        let name = "message";
        const data = [];
        for (const line of block.split("\n")) {
          if (line.startsWith("event:")) name = line.slice(6).trim();
          else if (line.startsWith("data:")) data.push(line.slice(5).replace(/^ /, ""));
        }
        if (!data.length) continue;
        if (name === "error") { failed = data.join("\n"); continue; }
        count += 1;
        form.dataset.events = String(count);
        resultBox.textContent += data.join("\n") + "\n";
        statusBox.textContent = "STREAMING (" + count + " events)";
      }
    }
    return { status: r.status, streamed: count, error: failed };
  }

  const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

  async function call(form, path, method, kind, streaming) {
    const statusBox = form.querySelector(".status");
    const resultBox = form.querySelector(".result");
    resultBox.textContent = "";
    resultBox.classList.remove("error");
    const fail = (text) => {
      statusBox.textContent = "FAILED";
      resultBox.classList.add("error");
      resultBox.textContent = text;
      form.dataset.state = "error";
    };
    let body;
    try { body = kind ? encodeBody(form, kind) : ""; }
    catch (e) { fail(e.message); return; }
    form.dataset.state = "running";
    statusBox.textContent = "submitting…";
    form.dataset.events = "0";
    if (streaming) {
      const url = "/" + encodeURIComponent(config.app) + (path === "/" ? "/" : path);
      const out = await stream(form, url, body, kind);
      if (out.error) {
        const hint = out.status === 401 ? " (paste the API key above)" : "";
        statusBox.textContent = "FAILED";
        resultBox.classList.add("error");
        resultBox.textContent += (out.text !== undefined ? "HTTP " + out.status + hint + "\n" + out.text : out.error);
        form.dataset.state = "error";
      } else {
        statusBox.textContent = "DONE (" + (out.streamed || 0) + " events)";
        if (out.text !== undefined) resultBox.textContent = out.text;
        form.dataset.state = "done";
      }
      return;
    }
    const base = "/queue/" + encodeURIComponent(config.app) + (path === "/" ? "/" : path);
    let submit;
    try {
      const r = await fetch(base, { method: "POST", headers: headers(kind === "json"), body: body });
      submit = { status: r.status, data: await r.json().catch(() => ({})) };
    } catch (e) { fail("the gateway did not answer: " + e.message); return; }
    if (submit.status !== 202) {
      const hint = submit.status === 401 ? " (paste the API key above)" : "";
      fail("HTTP " + submit.status + hint + "\n" + JSON.stringify(submit.data, null, 2));
      return;
    }
    const statusUrl = new URL(submit.data.status_url).pathname;
    const responseUrl = new URL(submit.data.response_url).pathname;
    let state;
    for (;;) {
      const r = await fetch(statusUrl, { headers: headers() });
      state = await r.json();
      if (state.status === "IN_QUEUE") statusBox.textContent = "IN_QUEUE (position " + state.queue_position + ")";
      else statusBox.textContent = state.status;
      if (state.status === "COMPLETED") break;
      await sleep(250);
    }
    const r = await fetch(responseUrl, { headers: headers() });
    const text = await r.text();
    let shown = text;
    try { shown = JSON.stringify(JSON.parse(text), null, 2); } catch (e) { /* not JSON */ }
    if (state.error_type || r.status >= 400) {
      statusBox.textContent = "COMPLETED with error: " + (state.error_type || "HTTP " + r.status);
      resultBox.classList.add("error");
      form.dataset.state = "error";
    } else {
      statusBox.textContent = "COMPLETED (HTTP " + r.status + ")";
      form.dataset.state = "done";
    }
    resultBox.textContent = shown;
  }

  const root = document.getElementById("endpoints");

  function render() {
    root.textContent = "";
    const paths = spec.paths || {};
    for (const path of Object.keys(paths).sort()) {
      for (const method of Object.keys(paths[path])) {
        const op = paths[path][method];
        const form = document.createElement("form");
        form.className = "endpoint";
        form.dataset.endpoint = method.toUpperCase() + " " + path;
        const title = document.createElement("h2");
        title.textContent = method.toUpperCase() + " " + path + (op.summary ? " — " + op.summary : "");
        form.appendChild(title);
        if (op.description) {
          const p = document.createElement("p");
          p.className = "muted";
          p.textContent = op.description;
          form.appendChild(p);
        }
        const contents = (op.requestBody || {}).content || {};
        const formType = contents["multipart/form-data"] || contents["application/x-www-form-urlencoded"];
        const content = contents["application/json"] || formType;
        const kind = contents["application/json"] ? "json" : (formType ? "form" : null);
        const schema = content ? resolve(content.schema) : null;
        const streaming = Boolean(op["x-skyform-stream"]);
        if (streaming) form.dataset.stream = "1";
        if (schema) {
          const required = new Set(schema.required || []);
          const props = schema.properties || {};
          for (const name of Object.keys(props)) form.appendChild(field(name, props[name], required.has(name)));
        }
        const button = document.createElement("button");
        button.type = "submit";
        button.textContent = "Run";
        form.appendChild(button);
        const status = document.createElement("div");
        status.className = "status";
        form.appendChild(status);
        const result = document.createElement("pre");
        result.className = "result";
        form.appendChild(result);
        form.addEventListener("submit", (ev) => {
          ev.preventDefault();
          call(form, path, method.toUpperCase(), schema ? kind : null, streaming);
        });
        root.appendChild(form);
      }
    }
    if (!root.children.length) root.textContent = "This app's schema lists no endpoint.";
    root.dataset.state = "loaded";
  }

  async function loadSchema() {
    if (!keyInput.value) {
      root.textContent = "Paste the API key above to load this app's endpoints.";
      root.dataset.state = "needs-key";
      return;
    }
    root.dataset.state = "loading";
    let r;
    try {
      r = await fetch("/" + encodeURIComponent(config.app) + "/openapi.json", { headers: headers() });
    } catch (e) {
      root.textContent = "the gateway did not answer: " + e.message;
      root.dataset.state = "error";
      return;
    }
    if (r.status !== 200) {
      root.textContent = "HTTP " + r.status + (r.status === 401 ? ": wrong API key" : "");
      root.dataset.state = r.status === 401 ? "needs-key" : "error";
      return;
    }
    spec = await r.json();
    render();
  }

  let typing = null;
  keyInput.addEventListener("input", () => {
    window.localStorage.setItem(storageKey, keyInput.value);
    if (config.auth === "public") return;
    clearTimeout(typing);
    typing = setTimeout(loadSchema, 300);
  });
  if (config.auth === "public") render();
  else loadSchema();
})();
