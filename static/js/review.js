// Review queue and approval screen: SLA countdowns, keyboard, browser notifications, the live JSON diff
// of edited arguments, and swapping the server's 409/422 answers (conflict and validation messages).
// Everything agent-supplied is put in the DOM through textContent only.
(function () {
  "use strict";

  var INVISIBLE = /[\u00ad\u061c\u180e\u200b-\u200f\u202a-\u202e\u2060-\u2064\u2066-\u2069\ufeff]/g;
  var skew = 0; // server clock minus ours, in ms, so countdowns agree with the server's deadlines

  function $(selector, root) { return (root || document).querySelector(selector); }
  function $all(selector, root) { return Array.prototype.slice.call((root || document).querySelectorAll(selector)); }
  function now() { return Date.now() + skew; }
  function reveal(text) {
    return String(text).replace(INVISIBLE, function (c) { return "\\u" + ("000" + c.charCodeAt(0).toString(16)).slice(-4); });
  }

  function readServerClock(root) {
    var el = root && root.matches && root.matches("[data-server-now]") ? root : $("[data-server-now]", root);
    if (!el) { return; }
    var server = Date.parse(el.getAttribute("data-server-now"));
    if (!isNaN(server)) { skew = server - Date.now(); }
  }

  // --- clocks: "m:ss" to the deadline (red when overdue) and ages, same labels as agentops/lib/display.py (time_left, age) ---
  // Words come from the djangojs catalog: gettext() and interpolate() of /jsi18n/, which base.html loads first.
  function fill(format, values) { return interpolate(format, values, true); }
  function pad(n) { return (n < 10 ? "0" : "") + n; }
  function slaLabel(ms) {
    var whole = Math.floor(Math.abs(ms) / 1000);
    var h = Math.floor(whole / 3600), m = Math.floor((whole % 3600) / 60), s = whole % 60;
    var clock = h ? h + ":" + pad(m) + ":" + pad(s) : m + ":" + pad(s);
    return ms < 0 ? fill(gettext("overdue %(clock)s"), { clock: clock }) : clock;
  }
  function ageLabel(ms) {
    var s = Math.floor(Math.abs(ms) / 1000);
    if (s < 60) { return fill(gettext("%(s)s s"), { s: s }); }
    if (s < 3600) { return fill(gettext("%(min)s min"), { min: Math.floor(s / 60) }); }
    return fill(gettext("%(h)s h %(min)s min"), { h: Math.floor(s / 3600), min: Math.floor((s % 3600) / 60) });
  }
  function tick() {
    var t = now();
    $all("[data-deadline]").forEach(function (el) {
      var deadline = Date.parse(el.getAttribute("data-deadline"));
      if (isNaN(deadline)) { return; }
      var left = deadline - t;
      el.textContent = slaLabel(left);
      el.classList.toggle("overdue", left < 0);
      el.classList.toggle("soon", left >= 0 && left < 60000);
    });
    $all("[data-since]").forEach(function (el) {
      var since = Date.parse(el.getAttribute("data-since"));
      if (!isNaN(since)) { el.textContent = ageLabel(t - since); }
    });
  }

  // --- refused decisions: the server answers 409 (conflict) / 422 (invalid) with the form or notice to show
  document.addEventListener("htmx:beforeSwap", function (evt) {
    var status = evt.detail.xhr ? evt.detail.xhr.status : 0;
    var elt = evt.detail.elt || evt.target;
    if ((status === 409 || status === 422) && elt && elt.closest && elt.closest("[data-review]")) {
      evt.detail.shouldSwap = true;
      evt.detail.isError = false;
    }
  });

  function typing(evt) {
    var t = evt.target;
    if (evt.ctrlKey || evt.metaKey || evt.altKey) { return true; }
    if (!t || !t.closest) { return false; }
    // a ticked row checkbox keeps the focus, and the queue's keys must keep working after it
    return !!t.closest("input:not([type=checkbox]), textarea, select, [contenteditable], [contenteditable=''], [contenteditable=true]");
  }

  // --- the queue ---------------------------------------------------------------------------------
  function initQueue(page) {
    var selectedId = null, selectedIndex = -1;
    var known = {};
    var openedAt = now();

    function rows() { return $all("#queue-rows tr[data-escalation]"); }
    function paint() {
      var list = rows(), found = false;
      list.forEach(function (row, i) {
        var on = row.getAttribute("data-escalation") === selectedId;
        row.classList.toggle("selected", on);
        row.setAttribute("aria-selected", on ? "true" : "false");
        if (on) { found = true; selectedIndex = i; }
      });
      if (!found && selectedId !== null) {
        // the selected item left the queue (decided elsewhere): select the one that took its place
        if (list.length) { select(list[Math.min(Math.max(selectedIndex, 0), list.length - 1)]); } else { selectedId = null; selectedIndex = -1; }
      }
    }
    function select(row) {
      if (!row) { return; }
      selectedId = row.getAttribute("data-escalation");
      paint();
      row.scrollIntoView({ block: "nearest" });
    }
    function selected() {
      return selectedId === null ? null : $('#queue-rows tr[data-escalation="' + selectedId + '"]');
    }
    function move(step) {
      var list = rows();
      if (!list.length) { return; }
      var current = selected();
      var i = current ? list.indexOf(current) + step : (step > 0 ? 0 : list.length - 1);
      select(list[Math.min(Math.max(i, 0), list.length - 1)]);
    }
    function remember(notify) {
      rows().forEach(function (row) {
        var id = row.getAttribute("data-escalation");
        if (known[id]) { return; }
        known[id] = true;
        var created = Date.parse(row.getAttribute("data-created"));
        if (!notify || isNaN(created) || created < openedAt - 2000) { return; }
        row.classList.add("arrived");
        if (row.getAttribute("data-priority") === "high") { notifyHigh(row); }
      });
    }
    function notifyHigh(row) {
      if (!("Notification" in window) || Notification.permission !== "granted") { return; }
      var cells = row.querySelectorAll("td:not(.pick)"); // priority, reason, agent, operation, …
      var body = reveal((cells[1] ? cells[1].textContent : "") + " · " + (cells[3] ? cells[3].textContent : "")).trim();
      try {
        var note = new Notification(gettext("High-priority escalation"), { body: body.slice(0, 200), tag: "escalation-" + row.getAttribute("data-escalation") });
        var href = row.getAttribute("data-href");
        note.onclick = function () { window.focus(); if (href) { window.location.assign(href); } };
      } catch (e) { /* some browsers only allow notifications from a service worker */ }
    }

    var notifyButton = $("#notify-enable");
    function showNotifyButton() {
      if (!notifyButton) { return; }
      notifyButton.hidden = !("Notification" in window) || Notification.permission !== "default";
    }
    if (notifyButton) {
      notifyButton.addEventListener("click", function () {
        // asked only on this click, never on load
        var asked = Notification.requestPermission();
        if (asked && asked.then) { asked.then(showNotifyButton); }
      });
      showNotifyButton();
    }

    readServerClock($("#queue-live"));
    openedAt = now();
    remember(false);
    move(1); // the cursor starts on the first row, the most urgent (it stays with that item as rows come and go)
    document.body.addEventListener("htmx:afterSwap", function (evt) {
      var live = $("#queue-live");
      if (!live || !(evt.target === live || live.contains(evt.target) || evt.detail.target === live)) { return; }
      readServerClock(live);
      paint();
      if (selectedId === null) { move(1); } // the queue was empty: the first item to arrive gets the cursor
      remember(true);
      tick();
    });
    page.addEventListener("click", function (evt) {
      var row = evt.target.closest ? evt.target.closest("tr[data-escalation]") : null;
      if (row && !evt.target.closest("a, button, input, form")) { select(row); }
    });

    document.addEventListener("keydown", function (evt) {
      if (typing(evt) || $("dialog[open]")) { return; } // an open confirmation has the keys (review_bulk.js)
      var key = evt.key, row;
      if (key === "j" || key === "ArrowDown" && evt.shiftKey) { move(1); evt.preventDefault(); return; }
      if (key === "k" || key === "ArrowUp" && evt.shiftKey) { move(-1); evt.preventDefault(); return; }
      row = selected();
      if (!row) { return; }
      if (key === "Enter") {
        if (evt.target.closest && evt.target.closest("a, button")) { return; }
        window.location.assign(row.getAttribute("data-href"));
        evt.preventDefault();
      } else if (key === "a" || key === "r") {
        // never decide on one key: review_bulk.js opens a confirmation (of the selection, or of this row)
        // that Enter or the same key again accepts
        if (!evt.repeat) { document.dispatchEvent(new CustomEvent("review:decide-key", { detail: { key: key, row: row } })); }
        evt.preventDefault();
      } else if (key === "m" || key === "t" || key === "e") {
        var focus = { m: "#modify", t: "#take-over", e: "#escalate" }[key];
        window.location.assign(row.getAttribute("data-href") + focus);
        evt.preventDefault();
      }
    });
  }

  // --- the approval screen -----------------------------------------------------------------------
  function canonical(value) {
    if (Array.isArray(value)) { return "[" + value.map(canonical).join(",") + "]"; }
    if (value && typeof value === "object") {
      return "{" + Object.keys(value).sort().map(function (k) { return JSON.stringify(k) + ":" + canonical(value[k]); }).join(",") + "}";
    }
    return JSON.stringify(value);
  }
  function short(value) {
    var text = reveal(typeof value === "string" ? value : JSON.stringify(value));
    text = text.replace(/\s+/g, " ");
    return text.length > 200 ? text.slice(0, 199) + "…" : text;
  }
  function el(tag, className, text) {
    var node = document.createElement(tag);
    if (className) { node.className = className; }
    if (text !== undefined) { node.textContent = text; }
    return node;
  }
  function renderDiff(textarea) {
    var box = $("#arguments-diff");
    if (!box) { return; }
    var proposed, edited;
    try { proposed = JSON.parse(textarea.getAttribute("data-proposed") || "{}"); } catch (e) { proposed = {}; }
    box.replaceChildren();
    try { edited = JSON.parse(textarea.value); } catch (e) {
      box.appendChild(el("p", "diff-error", fill(gettext("Not valid JSON yet: %(error)s"), { error: e.message })));
      return;
    }
    if (!edited || typeof edited !== "object" || Array.isArray(edited)) {
      box.appendChild(el("p", "diff-error", gettext("The arguments must be a JSON object.")));
      return;
    }
    var keys = Object.keys(proposed).concat(Object.keys(edited).filter(function (k) { return !(k in proposed); })).sort();
    var list = el("ul", "plain diff-list");
    keys.forEach(function (k) {
      var change = !(k in edited) ? "removed" : !(k in proposed) ? "added" : canonical(proposed[k]) !== canonical(edited[k]) ? "changed" : null;
      if (!change) { return; }
      var item = el("li", "diff-" + change);
      item.appendChild(el("span", "badge", { added: gettext("added"), removed: gettext("removed"), changed: gettext("changed") }[change]));
      item.appendChild(document.createTextNode(" "));
      item.appendChild(el("code", "agent-text", reveal(k)));
      if (change !== "added") { item.appendChild(el("del", "mono", short(proposed[k]))); }
      if (change !== "removed") { item.appendChild(el("ins", "mono", short(edited[k]))); }
      list.appendChild(item);
    });
    if (list.children.length) {
      box.appendChild(el("p", "hint", gettext("Changes against the proposed arguments:")));
      box.appendChild(list);
    } else {
      box.appendChild(el("p", "hint", gettext("Same as the proposed arguments.")));
    }
  }

  function initDetail(page) {
    var id = page.getAttribute("data-escalation");
    readServerClock($(".sla[data-server-now]"));

    // queue events about this item (and reconnects) refresh its status and audit log
    document.body.addEventListener("live:review.queue", function (evt) {
      var msg = evt.detail || {};
      if (msg.event === "reconnected" || (msg.data && String(msg.data.escalation) === id)) {
        document.body.dispatchEvent(new CustomEvent("review:item"));
      }
    });

    var diffTimer = null;
    document.addEventListener("input", function (evt) {
      var t = evt.target;
      if (t.id === "id_confidence") {
        var out = $("#confidence-value");
        if (out) { out.textContent = t.value; }
      } else if (t.id === "id_arguments") {
        // the server's verdict was about the old text
        t.removeAttribute("aria-invalid");
        $all("#modify-box .field-error").forEach(function (e) { e.remove(); });
        clearTimeout(diffTimer);
        diffTimer = setTimeout(function () { renderDiff(t); }, 120);
      }
    });

    function focusFor(hash) {
      var target = { "#modify": "#id_arguments", "#take-over": "#id_result", "#escalate": "#act-escalate" }[hash];
      var node = target ? $(target) : null;
      if (node) { node.focus(); node.scrollIntoView({ block: "center" }); }
      return !!node;
    }
    focusFor(window.location.hash);

    document.addEventListener("keydown", function (evt) {
      if (evt.key === "Escape" && evt.target.closest && evt.target.closest("textarea, input")) { evt.target.blur(); return; }
      if (evt.key === "Enter" && evt.target.id === "id_confidence") { evt.preventDefault(); return; }
      if (typing(evt)) { return; }
      var click = { a: "#act-approve", r: "#act-reject" }[evt.key];
      if (click) {
        // one key never decides: the first press puts the focus on the button ("armed"), Enter or the same key
        // again presses it (a held-down key does not)
        var button = $(click);
        if (!button) { return; }
        if (document.activeElement === button && !evt.repeat) { button.click(); } else if (!evt.repeat) { button.focus(); }
        evt.preventDefault();
        return;
      }
      var hash = { m: "#modify", t: "#take-over", e: "#escalate" }[evt.key];
      if (hash && focusFor(hash)) { evt.preventDefault(); }
    });

    // leaving the page gives the item back unless the lease changed since (a reload claims it again)
    window.addEventListener("pagehide", function () {
      var status = $("#escalation-status"), form = $("#beacon-release");
      if (!status || !status.hasAttribute("data-mine") || !form || !navigator.sendBeacon) { return; }
      navigator.sendBeacon(form.getAttribute("action"), new FormData(form)); // names the lease this page holds
    });
  }

  // the page root says whether its socket is up (tests and the offline hint read it)
  function markLive(evt, state) {
    var root = evt.target && evt.target.closest ? evt.target.closest("[data-review]") : null;
    if (root) { root.setAttribute("data-live", state); }
  }
  document.addEventListener("htmx:wsOpen", function (evt) { markLive(evt, "open"); });
  document.addEventListener("htmx:wsClose", function (evt) { markLive(evt, "closed"); });

  function init() {
    var queuePage = $("#queue-page"), detailPage = $("#review-page");
    if (queuePage) { initQueue(queuePage); }
    if (detailPage) { initDetail(detailPage); }
    tick();
    setInterval(tick, 1000);
  }
  if (document.readyState === "loading") { document.addEventListener("DOMContentLoaded", init); } else { init(); }
})();
