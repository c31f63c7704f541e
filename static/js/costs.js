// Cost dashboard: fetches /costs/data.json (URL from the json_script config) and draws it with the
// vendored Chart.js; re-fetches when the `budgets` live group says spend moved (at most every 2 s) and on
// every socket (re)connect. Text goes in with textContent only (agent and session names are untrusted).
(function () {
  "use strict";
  var PALETTE = ["#2f5bea", "#1b8a4b", "#b7791f", "#c53030", "#6b46c1", "#2b6cb0", "#d53f8c", "#319795", "#718096", "#dd6b20"];
  var MIN_INTERVAL = 2000;
  var charts = {};
  var config, lastFetch = 0, timer = null, inFlight = false, again = false;

  function $(id) { return document.getElementById(id); }
  // Words from the djangojs catalog (gettext() of /jsi18n/, loaded first by base.html); numbers keep "," and "." in both languages.
  function fill(format, values) { return interpolate(format, values, true); }
  function color(i) { return PALETTE[i % PALETTE.length]; }
  function usd(value, digits) {
    // the same money as agentops/lib/display.py's usd(): "$1,234.56", "US$1,234.56" in Chinese
    var amount = Number(value || 0).toLocaleString("en-US", { minimumFractionDigits: digits === undefined ? 2 : digits, maximumFractionDigits: digits === undefined ? 4 : digits });
    return fill(gettext("$%(amount)s"), { amount: amount });
  }
  function count(value) { return Number(value || 0).toLocaleString("en-US"); }
  function text(tag, value, className) {
    var el = document.createElement(tag);
    el.textContent = value === null || value === undefined ? "" : String(value);
    if (className) { el.className = className; }
    return el;
  }

  function draw(key, canvasId, spec) {
    var canvas = $(canvasId);
    if (!canvas || !window.Chart) { return; }
    if (charts[key]) {
      charts[key].data = spec.data;
      charts[key].update("none");
      return;
    }
    spec.options = Object.assign({ responsive: true, maintainAspectRatio: false, animation: false }, spec.options || {});
    charts[key] = new window.Chart(canvas, spec);
  }

  function moneyAxis() { return { beginAtZero: true, ticks: { callback: function (v) { return usd(v); } } }; }

  function drawDaily(data) {
    draw("daily", "chart-daily", {
      type: "bar",
      data: {
        labels: data.days.map(function (d) { return d.slice(5); }),
        datasets: data.spend_by_day.map(function (s, i) { return { label: s.model, data: s.usd, backgroundColor: color(i), stack: "usd" }; })
      },
      options: {
        scales: { x: { stacked: true }, y: Object.assign(moneyAxis(), { stacked: true }) },
        plugins: { tooltip: { callbacks: { label: function (c) { return c.dataset.label + ": " + usd(c.parsed.y); } } } }
      }
    });
  }

  function drawBreakdown(key, canvasId, rows, field) {
    var top = rows.slice(0, 12);
    draw(key, canvasId, {
      type: "bar",
      data: {
        labels: top.map(function (r) { return r[field] || gettext("(none)"); }),
        datasets: [{ label: gettext("USD"), data: top.map(function (r) { return r.usd; }), backgroundColor: top.map(function (r, i) { return color(i); }) }]
      },
      options: {
        indexAxis: "y",
        scales: { x: moneyAxis() },
        plugins: { legend: { display: false }, tooltip: { callbacks: { label: function (c) { var r = top[c.dataIndex]; return usd(r.usd) + " · " + fill(gettext("%(calls)s calls · %(tokens)s tokens"), { calls: count(r.calls), tokens: count(r.tokens) }); } } } }
      }
    });
  }

  function drawTokens(data) {
    draw("tokens", "chart-tokens", {
      type: "line",
      data: {
        labels: data.days.map(function (d) { return d.slice(5); }),
        datasets: [
          { label: gettext("tokens (input + output)"), data: data.tokens_by_day.tokens, borderColor: color(0), backgroundColor: "rgba(47,91,234,.15)", fill: true, tension: 0.2 },
          { label: gettext("cached input tokens"), data: data.tokens_by_day.cached_tokens, borderColor: color(1), backgroundColor: "rgba(27,138,75,.15)", fill: true, tension: 0.2 }
        ]
      },
      options: { scales: { y: { beginAtZero: true } } }
    });
  }

  function fillTotals(totals) {
    $("total-usd").textContent = usd(totals.usd);
    $("total-calls").textContent = count(totals.calls);
    $("total-tokens").textContent = count(totals.tokens);
    $("total-cached").textContent = count(totals.cached_tokens);
  }

  function fillForecasts(rows) {
    var list = $("forecast-list");
    list.replaceChildren();
    if (!rows.length) { list.appendChild(text("li", gettext("No enabled day budget with a token or dollar limit."), "hint")); return; }
    rows.forEach(function (f) {
      var li = document.createElement("li");
      li.setAttribute("data-state", f.state);
      li.setAttribute("data-budget", f.budget);
      var badge = { ok: ["ok", gettext("on track")], runs_out: ["warn", fill(gettext("runs out %(time)s"), { time: f.runs_out_local })], exhausted: ["bad", gettext("exhausted")] }[f.state] || ["", f.state];
      li.appendChild(text("span", badge[1], "badge " + badge[0]));
      var message = text("span", "", "forecast-message");
      var named = f.who && f.message.indexOf(f.who) === 0;
      if (named) { message.appendChild(text("span", f.who)).setAttribute("data-agent-content", ""); } // the budget's name is data
      message.appendChild(document.createTextNode(named ? f.message.slice(f.who.length) : f.message));
      li.appendChild(message);
      li.appendChild(text("span", fill(gettext("used %(used)s of %(limit)s · last hour %(rate)s"), { used: f.used, limit: f.limit, rate: f.rate_per_hour }), "detail"));
      list.appendChild(li);
    });
  }

  // One table body from rows: each column is [class, value of a row]; an empty list shows `emptyText`.
  function fillTable(id, rows, emptyText, key, columns) {
    var body = $(id);
    body.replaceChildren();
    if (!rows.length) {
      var empty = document.createElement("tr");
      var cell = text("td", emptyText, "empty");
      cell.colSpan = columns.length;
      empty.appendChild(cell);
      body.appendChild(empty);
      return;
    }
    rows.forEach(function (row) {
      var tr = document.createElement("tr");
      tr.setAttribute(key[0], row[key[1]]);
      columns.forEach(function (column) {
        var cell = text("td", column[1](row), column[0]);
        if (column[2]) { cell.setAttribute("data-agent-content", ""); } // agent data, never translated
        tr.appendChild(cell);
      });
      body.appendChild(tr);
    });
  }

  function fillSessions(rows) {
    fillTable("top-session-rows", rows, gettext("No session spend in this window."), ["data-session", "session_id"], [
      ["mono clip", function (s) { return s.session_id; }, true],
      ["clip", function (s) { return s.agent || "—"; }, true],
      ["num", function (s) { return count(s.calls); }],
      ["num", function (s) { return count(s.tokens); }],
      ["num", function (s) { return usd(s.usd); }],
    ]);
  }

  // The latest ledger rows: the model that answered and the price row that applied (dated names match
  // their family's row).
  function fillCalls(rows) {
    fillTable("recent-call-rows", rows, gettext("No calls yet."), ["data-call", "id"], [
      ["mono", function (c) { return new Date(c.at).toLocaleTimeString(document.documentElement.lang || undefined); }],
      ["clip", function (c) { return c.agent || "—"; }, true],
      ["mono clip", function (c) { return c.model; }, true],
      ["priced-as", function (c) { return c.priced_as; }],
      ["num", function (c) { return count(c.input_tokens) + " / " + count(c.output_tokens); }],
      ["num", function (c) { return usd(c.usd); }],
    ]);
  }

  function render(data) {
    fillTotals(data.totals);
    fillForecasts(data.forecasts);
    fillSessions(data.top_sessions);
    fillCalls(data.recent_calls || []);
    drawDaily(data);
    drawBreakdown("agents", "chart-agents", data.by_agent, "agent");
    drawBreakdown("operations", "chart-operations", data.by_operation, "operation");
    drawTokens(data);
    $("costs-updated").textContent = fill(gettext("Updated %(time)s"), { time: new Date(data.generated_at).toLocaleTimeString(document.documentElement.lang || undefined) });
    $("costs-page").setAttribute("data-state", "ready");
    $("costs-page").setAttribute("data-generated", data.generated_at);
  }

  function load() {
    if (inFlight) { again = true; return; }
    inFlight = true;
    lastFetch = Date.now();
    fetch(config.data_url, { credentials: "same-origin", headers: { Accept: "application/json" } })
      .then(function (r) { if (!r.ok) { throw new Error("HTTP " + r.status); } return r.json(); })
      .then(function (data) { $("costs-error").hidden = true; render(data); })
      .catch(function (err) {
        var box = $("costs-error");
        box.textContent = fill(gettext("Could not load the cost data (%(error)s); retrying on the next update."), { error: err.message });
        box.hidden = false;
        $("costs-page").setAttribute("data-state", "error");
      })
      .finally(function () { inFlight = false; if (again) { again = false; schedule(); } });
  }

  function schedule() {
    if (timer) { return; }
    var wait = Math.max(0, MIN_INTERVAL - (Date.now() - lastFetch));
    timer = setTimeout(function () { timer = null; load(); }, wait);
  }

  function init() {
    var node = $("costs-config");
    if (!node) { return; }
    config = JSON.parse(node.textContent);
    load();
    document.body.addEventListener("live:" + config.live_group, schedule);
  }
  if (document.readyState === "loading") { document.addEventListener("DOMContentLoaded", init); } else { init(); }
})();
