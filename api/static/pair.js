// The pairing page's script. The key lives only in `auth` below and is sent
// only as an Authorization header. Events come from a streaming fetch() of
// /api/whatsapp/events (EventSource cannot send headers), resumed with
// Last-Event-ID whenever the server ends a response.
"use strict";
(function () {
  const $ = (id) => document.getElementById(id);
  let auth = null;
  let lastEventId = "";
  let qrExpiresAt = 0;
  let qrTotal = 1;
  let qrObjectUrl = null;
  let streaming = false;

  function headers(extra) {
    return Object.assign({ "X-Tenant-ID": auth.tenant, "Authorization": "Bearer " + auth.key },
                         extra || {});
  }

  async function api(method, path, body) {
    const init = { method: method, headers: headers(body ? { "Content-Type": "application/json" } : {}) };
    if (body) init.body = JSON.stringify(body);
    const response = await fetch(path, init);
    let json = null;
    if ((response.headers.get("Content-Type") || "").includes("application/json")) {
      json = await response.json();
    }
    return { status: response.status, json: json, response: response };
  }

  function showError(message) { $("error").textContent = message || ""; }

  function showState(state, device) {
    $("state").textContent = state;
    $("state").dataset.state = state;
    $("device").textContent = device ? "(" + device + ")" : "";
    const connected = state === "connected";
    $("connected").hidden = !connected;
    if (state !== "pairing") {
      $("qr-box").hidden = true;
      $("code-box").hidden = true;
    }
  }

  async function showQr(qr) {
    $("qr-box").hidden = false;
    const box = $("qr");
    box.dataset.code = qr.code;
    box.dataset.index = qr.index;
    qrExpiresAt = qr.expires_at;
    qrTotal = Math.max(1, qr.expires_at - Date.now() / 1000);
    // The image form of GET /api/whatsapp/qr; a server that only has JSON gets the text shown.
    const got = await fetch("/api/whatsapp/qr?format=svg",
                            { headers: headers({ "Accept": "image/svg+xml" }) });
    const type = got.headers.get("Content-Type") || "";
    if (got.ok && type.startsWith("image/")) {
      const blob = await got.blob();
      if (box.dataset.code !== qr.code) return; // a newer code arrived meanwhile
      if (qrObjectUrl) URL.revokeObjectURL(qrObjectUrl);
      qrObjectUrl = URL.createObjectURL(blob);
      box.replaceChildren(Object.assign(document.createElement("img"),
                                        { src: qrObjectUrl, alt: "QR code " + (qr.index + 1) }));
    } else {
      box.replaceChildren(Object.assign(document.createElement("pre"), { textContent: qr.code }));
    }
  }

  function showPairCode(code) {
    $("code-box").hidden = false;
    $("pair-code").textContent = code.code;
  }

  function tick() {
    const left = Math.max(0, qrExpiresAt - Date.now() / 1000);
    $("countdown").style.width = Math.min(100, (100 * left) / qrTotal).toFixed(1) + "%";
    $("qr-left").textContent = qrExpiresAt ? Math.ceil(left) + " s left for this code" : "";
  }

  function onEvent(kind, event) {
    const data = event.data || {};
    if (kind === "state") {
      showState(data.state, data.device);
      if (data.error && data.state !== "connected") showError(data.error.message);
      if (data.state === "pairing") showError("");
    } else if (kind === "qr") {
      showQr(data);
    } else if (kind === "pair_code") {
      showPairCode(data);
    } else if (kind === "error") {
      showError(data.message || data.code);
    }
  }

  function parseBlock(block) {
    let id = null, kind = "message", data = "";
    for (const line of block.split("\n")) {
      if (line.startsWith(":")) continue;
      const at = line.indexOf(":");
      const field = at < 0 ? line : line.slice(0, at);
      const value = at < 0 ? "" : line.slice(at + 1).replace(/^ /, "");
      if (field === "id") id = value;
      else if (field === "event") kind = value;
      else if (field === "data") data += value;
    }
    if (id) lastEventId = id;
    if (data) onEvent(kind, JSON.parse(data));
  }

  async function stream() {
    if (streaming) return;
    streaming = true;
    let firstResponse = true;
    while (auth) {
      const extra = lastEventId ? { "Last-Event-ID": lastEventId } : {};
      let response;
      try {
        response = await fetch("/api/whatsapp/events", { headers: headers(extra) });
      } catch (e) {
        await new Promise((r) => setTimeout(r, 2000));
        continue;
      }
      if ([400, 401, 403, 404, 422].includes(response.status)) {
        auth = null;
        $("panel").hidden = true;
        $("login").hidden = false;
        showError("The tenant id or key is not valid.");
        streaming = false;
        return;
      }
      if (!response.ok || !response.body) {
        // 503 (Redis down, or this API process serves its most streams): wait as told.
        const wait = parseInt(response.headers.get("Retry-After") || "2", 10);
        await new Promise((r) => setTimeout(r, 1000 * Math.min(60, Math.max(1, wait))));
        continue;
      }
      if (firstResponse) {
        firstResponse = false;
        refresh(); // the stream is open: nothing after this read can be missed
      }
      const reader = response.body.getReader();
      const decoder = new TextDecoder();
      let buffer = "";
      for (;;) {
        const { value, done } = await reader.read().catch(() => ({ done: true }));
        if (done) break;
        buffer += decoder.decode(value, { stream: true }).replace(/\r\n/g, "\n");
        let end;
        while ((end = buffer.indexOf("\n\n")) >= 0) {
          parseBlock(buffer.slice(0, end));
          buffer = buffer.slice(end + 2);
        }
      }
    }
    streaming = false;
  }

  async function refresh() {
    const status = await api("GET", "/api/whatsapp/status");
    if (status.status !== 200) {
      showError((status.json && status.json.error.message) || "could not read the status");
      return;
    }
    showState(status.json.state, status.json.device);
    if (status.json.state === "pairing") {
      const qr = await api("GET", "/api/whatsapp/qr");
      if (qr.status === 200) showQr(qr.json);
      const code = await api("GET", "/api/whatsapp/pair-code");
      if (code.status === 200) showPairCode(code.json);
    }
  }

  $("connect").addEventListener("click", () => {
    const tenant = $("tenant").value.trim();
    const key = $("key").value.trim();
    if (!tenant || !key) { showError("Enter the tenant id and its key."); return; }
    auth = { tenant: tenant, key: key };
    showError("");
    $("key").value = "";
    $("login").hidden = true;
    $("panel").hidden = false;
    stream();
  });

  document.querySelectorAll("input[name=method]").forEach((radio) => {
    radio.addEventListener("change", () => {
      $("phone").hidden = document.querySelector("input[name=method]:checked").value !== "phone";
    });
  });

  $("start").addEventListener("click", async () => {
    showError("");
    const method = document.querySelector("input[name=method]:checked").value;
    const body = method === "phone" ? { method: "phone", phone: $("phone").value.trim() }
                                    : { method: "qr" };
    const result = await api("POST", "/api/whatsapp/pair", body);
    if (result.status === 429) showError("A pairing is already running; watch it below.");
    else if (result.status !== 202) {
      showError((result.json && result.json.error.message) || "pairing refused");
    }
  });

  $("reset").addEventListener("click", async () => {
    const result = await api("POST", "/api/whatsapp/reset");
    if (result.status !== 202) showError((result.json && result.json.error.message) || "reset refused");
  });

  setInterval(tick, 250);
})();
