// The review queue's selection, bulk bar and confirmations (templates/review/_bulk.html).
// A decision from the keyboard always takes two presses: a (or r) opens a confirmation — of the selected rows
// when there are any, else of the row under the cursor — and Enter, or the same key again, accepts it; Esc
// cancels. A held-down key never confirms (key repeats are ignored). The selection survives the live
// refreshes that re-render the rows: each picked row keeps the version it had when it was picked, so an item
// that changed since is skipped by the server rather than decided unseen.
// Everything agent-supplied is put in the DOM through textContent only.
(function () {
  "use strict";

  function $(selector, root) { return (root || document).querySelector(selector); }
  function $all(selector, root) { return Array.prototype.slice.call((root || document).querySelectorAll(selector)); }
  var KEYS = { approve: "a", reject: "r" };
  var picked = {}; // escalation id -> "id:version" as it was when picked

  function typing(evt) {
    var t = evt.target;
    if (evt.ctrlKey || evt.metaKey || evt.altKey) { return true; }
    return !!(t && t.closest && t.closest("input:not([type=checkbox]), textarea, select, [contenteditable]"));
  }
  function boxes() { return $all("#queue-rows input.bulk-pick"); }
  function count() { return Object.keys(picked).length; }

  function paint() {
    var present = {};
    boxes().forEach(function (box) {
      var pk = box.getAttribute("data-pk");
      present[pk] = true;
      if (picked[pk]) { box.value = picked[pk]; }
      box.checked = !!picked[pk];
      var row = box.closest("tr");
      if (row) { row.classList.toggle("picked", !!picked[pk]); }
    });
    // a picked row that left the page (decided elsewhere, filtered out) is no longer selected
    Object.keys(picked).forEach(function (pk) { if (!present[pk]) { delete picked[pk]; } });
    var n = count();
    var counter = $("#bulk-count");
    if (counter) { counter.textContent = String(n); }
    $all(".bulk-n").forEach(function (el) { el.textContent = String(n); });
    $all("#bulk-approve, #bulk-reject, #bulk-clear").forEach(function (b) { b.disabled = n === 0; });
    var bar = $("#bulk-form");
    if (bar) { bar.classList.toggle("active", n > 0); }
    var all = $("#bulk-all"), list = boxes();
    if (all) {
      all.checked = list.length > 0 && list.every(function (box) { return box.checked; });
      all.indeterminate = n > 0 && !all.checked;
    }
  }

  function pick(box, on) {
    var pk = box.getAttribute("data-pk");
    if (on) { picked[pk] = picked[pk] || box.value; } else { delete picked[pk]; }
  }
  function toggleRow(row) {
    var box = row && $("input.bulk-pick", row);
    if (!box) { return; }
    pick(box, !picked[box.getAttribute("data-pk")]);
    paint();
  }
  function toggleAll() {
    var list = boxes(), on = !list.every(function (box) { return picked[box.getAttribute("data-pk")]; });
    list.forEach(function (box) { pick(box, on); });
    paint();
  }

  // --- one row: the quick confirmation ------------------------------------------------------------
  function setStale(quick, stale) {
    quick.classList.toggle("stale", stale);
    $("#quick-confirm-changed").hidden = !stale;
    $all('button[value="confirm"]', quick).forEach(function (b) { b.disabled = stale; });
  }
  function openQuick(row, key) {
    var quick = $("#quick-confirm");
    var button = row.querySelector('button[data-key="' + key + '"]');
    if (!quick || !button) { return; } // e.g. approve on an LLM item: nothing proposed to approve
    var action = key === "a" ? "approve" : "reject";
    quick.setAttribute("data-key", key);
    quick.setAttribute("data-pk", row.getAttribute("data-escalation"));
    quick.setAttribute("data-version", row.getAttribute("data-version"));
    setStale(quick, false);
    $all("[data-for]", quick).forEach(function (el) { el.hidden = el.getAttribute("data-for") !== action; });
    var cells = $all("td", row), op = $(".open-link", row), args = $(".args", row);
    var agent = cells.filter(function (td) { return td.classList.contains("clip") && !td.classList.contains("mono"); })[0];
    $("#quick-confirm-what").textContent = [op, agent, args]
      .map(function (el) { return el ? el.textContent.trim() : ""; })
      .filter(Boolean)
      .join(" · ");
    $("#quick-confirm-held").hidden = !(row.classList.contains("held") && !row.classList.contains("mine"));
    quick.returnValue = "";
    quick.showModal();
    var ok = $('button[value="confirm"][data-for="' + action + '"]', quick);
    if (ok) { ok.focus(); }
  }
  function quickClosed() {
    var quick = $("#quick-confirm");
    if (quick.returnValue !== "confirm") { return; }
    var pk = quick.getAttribute("data-pk"), key = quick.getAttribute("data-key");
    var row = $('#queue-rows tr[data-escalation="' + pk + '"]');
    var button = row && row.querySelector('button[data-key="' + key + '"]');
    if (!button || row.getAttribute("data-version") !== quick.getAttribute("data-version")) {
      // it changed while the confirmation was open: show that instead of deciding what was not seen
      setStale(quick, true);
      quick.returnValue = "";
      quick.showModal();
      return;
    }
    button.click(); // the row's own form: its version, its answer in the queue's notice
  }

  // --- the selection: the bulk confirmation (rendered by the server) ----------------------------------
  function openBulk() {
    var dialog = $("#bulk-dialog"), confirm = $("#bulk-confirm");
    if (!dialog || !confirm) { return; }
    dialog.setAttribute("data-key", KEYS[confirm.getAttribute("data-action")] || "");
    if (!dialog.open) { dialog.showModal(); }
    var focus = $("[autofocus]", dialog);
    if (focus) { focus.focus(); }
  }

  function init() {
    var page = $("#queue-page");
    if (!page) { return; }
    paint();
    document.addEventListener("change", function (evt) {
      var t = evt.target;
      if (t.matches && t.matches("input.bulk-pick")) { pick(t, t.checked); paint(); }
      else if (t.id === "bulk-all") {
        boxes().forEach(function (box) { pick(box, t.checked); });
        paint();
      }
    });
    document.addEventListener("click", function (evt) {
      var t = evt.target;
      if (t.id === "bulk-clear") { picked = {}; paint(); }
      else if (t.closest && t.closest(".bulk-cancel")) { $("#bulk-dialog").close(); }
    });
    document.body.addEventListener("htmx:afterSwap", function (evt) {
      paint();
      var body = $("#bulk-dialog-body");
      if (body && (evt.detail.target === body || body.contains(evt.target))) { openBulk(); }
    });
    document.body.addEventListener("htmx:beforeRequest", function (evt) {
      var form = evt.detail.elt;
      if (form && form.id === "bulk-decide-form") {
        $all("button", form).forEach(function (b) { b.disabled = true; }); // sent once
        $("#bulk-dialog").close();
      }
    });
    document.body.addEventListener("review:bulk-done", function () { picked = {}; paint(); });
    $("#quick-confirm").addEventListener("close", quickClosed);

    document.addEventListener("review:decide-key", function (evt) {
      var key = evt.detail.key;
      if (count()) {
        var bulkButton = $(key === "a" ? "#bulk-approve" : "#bulk-reject");
        if (bulkButton) { bulkButton.click(); }
      } else {
        openQuick(evt.detail.row, key);
      }
    });

    document.addEventListener("keydown", function (evt) {
      if (evt.defaultPrevented) { return; } // review.js took it (the a / r that just opened a confirmation)
      var open = $("dialog[open]");
      if (open) {
        // the same key again accepts; Enter works natively on the focused confirm button, Esc cancels
        if (evt.repeat || typing(evt) || evt.key !== open.getAttribute("data-key")) { return; }
        var ok = open.id === "quick-confirm"
          ? (open.classList.contains("stale") ? null : $('button[value="confirm"]:not([hidden])', open))
          : $("#bulk-confirm-button", open);
        if (ok && !ok.disabled) { ok.click(); }
        evt.preventDefault();
        return;
      }
      if (typing(evt) || evt.repeat) { return; }
      if (evt.key === "x") {
        toggleRow($("#queue-rows tr.selected"));
        evt.preventDefault();
      } else if (evt.key === "*") {
        toggleAll();
        evt.preventDefault();
      }
    });
  }
  if (document.readyState === "loading") { document.addEventListener("DOMContentLoaded", init); } else { init(); }
})();
