// weitiao ui: plain JavaScript, no framework and nothing from a CDN. Every action posts JSON to the app's API;
// an error comes back as {"error": "..."}, the CLI's own message, and is shown at the top of the page.
"use strict";
// a text of the page in its language (window.UI_TEXT, from ui/i18n.py; English where it has none)
const t = (text) => (window.UI_TEXT || {})[text] || text;

const $ = (id) => document.getElementById(id);

function showError(message) {
  const box = $("error");
  box.textContent = message || "";
  box.hidden = !message;
  if (message) box.scrollIntoView({block: "nearest"});
}

// `report`: where an error goes (the box at the top of the page by default). A success clears nothing: the
// action a person starts clears the box first (`act`), so a background request cannot hide another's error.
async function api(path, body, report = showError) {
  const response = await fetch(path, body === undefined ? {} : {
    method: "POST", headers: {"Content-Type": "application/json"}, body: JSON.stringify(body)});
  const data = await response.json().catch(() => ({error: `${path}: HTTP ${response.status}`}));
  if (!response.ok || data.error) { report(data.error || `${path}: HTTP ${response.status}`); return null; }
  return data;
}

function act(id, handler) {
  $(id).addEventListener("click", (event) => { showError(""); return handler(event); });
}

function escapeHtml(text) {
  return text.replace(/[&<>"]/g, (c) => ({"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;"}[c]));
}

// ---------------------------------------------------------------- New run

function formValues() {
  const values = {};
  for (const field of $("run-form").querySelectorAll("input[name], select[name], textarea[name]")) {
    values[field.name] = field.value;
  }
  return values;
}

function showCheck(result) {
  const report = result.report, rows = report.bad_rows || [];
  let html = `<p class="${result.ok ? "ok" : "bad"}">${result.ok ? t("data check passed") : rows.length + " " + t("bad row(s)")}</p>`;
  if (rows.length) {
    html += `<table class='bad-rows'><thead><tr><th>${t("where")}</th><th>${t("problem")}</th></tr></thead><tbody>` +
      rows.map((r) => `<tr><td>${escapeHtml(r.where)}</td><td>${escapeHtml(r.reason)}</td></tr>`).join("") +
      "</tbody></table>";
  }
  // the printed report; the trained tokens of the preview are wrapped in ⟦ ⟧
  html += "<pre class='check-text'>" + escapeHtml(result.text).replace(/⟦/g, "<mark>").replace(/⟧/g, "</mark>") +
    "</pre>";
  $("check-result").innerHTML = html;
}

let estimateTimer = null;
function scheduleEstimate() {
  clearTimeout(estimateTimer);
  estimateTimer = setTimeout(async () => {
    const values = formValues();
    if (!values.model || !values.train) return;
    const response = await fetch("/api/estimate", {method: "POST", headers: {"Content-Type": "application/json"},
                                                   body: JSON.stringify({...values, name: values.name || "estimate"})});
    const data = await response.json();
    const box = $("estimate");
    if (data.error) { box.innerHTML = `<span class="muted">${t("memory estimate:")} ${escapeHtml(data.error)}</span>`; return; }
    box.innerHTML = `<p class="${data.fits ? "ok" : "bad"}">${data.lines.map(escapeHtml).join("<br>")}</p>` +
      (data.advice ? `<p class="bad">${escapeHtml(data.advice)}</p>` : "") +
      `<span class='muted'>${t("(for rows of the full max length; the run estimates again from its longest row)")}</span>`;
  }, 500);
}

function newRunPage() {
  $("run-form").addEventListener("change", scheduleEstimate);
  const check = async (report) => {
    $("check-result").textContent = t("checking ...");
    const values = formValues();
    const result = await api("/api/check", {...values, name: values.name || "check"}, report);
    if (result) showCheck(result);
    else if (report === showError) $("check-result").textContent = "";
  };
  for (const id of ["train", "val", "test", "format"]) {  // the data check runs as soon as the data changes
    $(id).addEventListener("change", () => {
      if ($("train").value.trim() && $("model").value.trim()) {
        check((message) => { $("check-result").innerHTML = `<p class="bad">${escapeHtml(message)}</p>`; });
      }
    });
  }
  act("check", () => check(showError));
  $("upload").addEventListener("change", async (event) => {
    const file = event.target.files[0];
    if (!file) return;
    const saved = await api("/api/upload", {name: file.name, text: await file.text()});
    if (saved) { $("train").value = ($("train").value.trim() + "\n" + saved.path).trim(); scheduleEstimate(); }
  });
  act("show-config", async () => {
    const result = await api("/api/config", formValues());
    if (result) { $("config-yaml").hidden = false; $("config-yaml").textContent = `# ${result.path}\n${result.yaml}`; }
  });
  act("launch", async () => {
    const button = $("launch");
    button.disabled = true;  // a double click launches once (the server also refuses a second job for the run)
    try {
      const result = await api("/api/launch", formValues());
      if (result) {
        $("launched").innerHTML = `<p class="ok">${result.started ? t("launched") : t("already running")}: ` +
          `<a id="launched-run" href="/run?name=${encodeURIComponent(result.run)}">${escapeHtml(result.run)}</a> ` +
          `(${t("config")} ${escapeHtml(result.config)})</p>`;
      }
    } finally { button.disabled = false; }
  });
}

// ---------------------------------------------------------------- Runs and one run

function runsPage() {
  // a running run's row changes as it trains, and a job's run appears once it starts: reload the list every 3 s
  // while any run or job is running
  const live = [...document.querySelectorAll("#runs tr[data-status]")].some((r) => r.dataset.status === "running")
    || Number($("runs").dataset.jobsRunning) > 0;
  if (live) setTimeout(() => location.reload(), 3000);
}

async function refreshRun(name) {
  const data = await api(`/api/run?name=${encodeURIComponent(name)}`);
  if (!data) return true;
  const status = data.run.status;
  $("status").textContent = t(status);
  $("status").className = `status ${status}`;
  $("curve").innerHTML = data.curve;
  $("log").textContent = data.log;
  $("log").scrollTop = $("log").scrollHeight;
  const running = data.jobs.some((j) => j.running);
  if (status === "finished" && $("status").dataset.initial !== "finished" && !$("results").dataset.reloading) {
    $("results").dataset.reloading = "1";
    location.reload();  // the page was made before the run finished: the results and the report are there now
  }
  return running || status === "running" || status === "starting";
}

function runPage(name) {
  // poll every 2 s while a job runs; a failed request (the server busy or restarting) is tried again
  const tick = async () => { if (await refreshRun(name).catch(() => true)) setTimeout(tick, 2000); };
  tick();
  act("stop", async () => { if (await api(`/api/stop?name=${encodeURIComponent(name)}`, {})) tick(); });
  act("resume", async () => { if (await api(`/api/resume?name=${encodeURIComponent(name)}`, {})) tick(); });
  act("export", async () => {
    const result = await api("/api/export", {name, format: $("export-format").value, quant: $("export-quant").value});
    if (result) { $("ship").innerHTML = `<p class="ok">${t("exporting to")} ${escapeHtml(result.out)} ${t("(see the log)")}</p>`; tick(); }
  });
  act("serve", async () => {
    const result = await api("/api/serve", {name, port: $("serve-port").value});
    if (result) { $("ship").innerHTML = `<p class="ok">${t("serving at")} ${escapeHtml(result.url)} ${t("(OpenAI API; see the log)")}</p>`; tick(); }
  });
}

// ---------------------------------------------------------------- Chat

async function streamInto(element, body) {
  element.textContent = "";
  const response = await fetch("/api/chat", {method: "POST", headers: {"Content-Type": "application/json"},
                                             body: JSON.stringify(body)});
  if (!response.ok) {
    const data = await response.json().catch(() => ({}));
    showError(data.error || `chat: HTTP ${response.status}`);
    return;
  }
  const reader = response.body.getReader(), decoder = new TextDecoder();
  for (;;) {
    const {done, value} = await reader.read();
    if (done) break;
    element.textContent += decoder.decode(value, {stream: true});
  }
  element.dataset.done = "1";
}

function chatPage(name) {
  act("send", async () => {
    const prompt = $("prompt").value;
    $("send").disabled = true;
    for (const id of ["answer-base", "answer-tuned"]) delete $(id).dataset.done;
    try {
      // one model at a time: the server decodes one request at a time anyway
      await streamInto($("answer-base"), {name, prompt, model: "base"});
      await streamInto($("answer-tuned"), {name, prompt, model: "tuned"});
    } finally { $("send").disabled = false; }
  });
}

// ---------------------------------------------------------------- Preferences

function preferencesPage(name) {
  let pairId = null, busy = false;
  const ask = async (fromTest) => {
    $("pair").hidden = true; $("pick-tie").hidden = true;
    for (const b of ["ask", "from-test"]) $(b).disabled = true;
    try {
      const pair = await api("/api/pair", {name, mode: $("mode").value, other: $("other").value,
                                           prompt: $("prompt").value, from_test: fromTest});
      if (!pair) return;
      pairId = pair.id;
      $("prompt").value = pair.prompt;
      $("answer-A").textContent = pair.A;
      $("answer-B").textContent = pair.B;
      $("pair").hidden = false; $("pick-tie").hidden = false;
    } finally { for (const b of ["ask", "from-test"]) $(b).disabled = false; }
  };
  const showOther = () => { $("other-label").hidden = $("mode").value !== "runs"; };
  $("mode").addEventListener("change", showOther);
  showOther();
  act("ask", () => ask(false));
  act("from-test", () => ask(true));
  for (const choice of ["A", "B", "tie"]) {
    act(`pick-${choice}`, async () => {
      if (!pairId || busy) return;
      busy = true;  // one choice per pair, however often it is clicked (the server refuses a second one too)
      const result = await api("/api/prefer", {name, id: pairId, choice}).finally(() => { busy = false; });
      if (result) {
        pairId = null;
        $("pairs").textContent = result.counts.pairs;
        $("ties").textContent = result.counts.ties;
        $("pair").hidden = true; $("pick-tie").hidden = true;
      }
    });
  }
  act("train-dpo", async () => {
    const result = await api("/api/train-preferences", {name, task: "dpo"});
    if (result) $("trained").innerHTML = `${result.started ? t("launched") : t("already running")}: ` +
      `<a href="/run?name=${encodeURIComponent(result.run)}">${escapeHtml(result.run)}</a>`;
  });
}
