// Live updates: the WebSocket only says "something changed in <group>". We turn each message into a
// `live:<group>` event on <body>; page regions listen with hx-trigger="live:<group> from:body" and
// re-read their fragment from the server. On every connect and reconnect we fire the same event so a
// page reconciles whatever it missed while disconnected (channel layers deliver at most once).
(function () {
  "use strict";
  function announce(group, detail) {
    document.body.dispatchEvent(new CustomEvent("live:" + group, { detail: detail || {} }));
  }
  function groupOf(evt) {
    var socketElt = evt.detail && evt.detail.elt ? evt.detail.elt : evt.target;
    return socketElt && socketElt.closest ? (socketElt.closest("[data-live-group]") || {}).dataset : null;
  }
  document.addEventListener("htmx:wsBeforeMessage", function (evt) {
    evt.preventDefault(); // messages are JSON signals, never HTML to swap
    var message;
    try { message = JSON.parse(evt.detail.message); } catch (e) { return; }
    if (message && typeof message.group === "string") { announce(message.group, message); }
  });
  var seenOpen = {};
  document.addEventListener("htmx:wsOpen", function (evt) {
    var data = groupOf(evt);
    if (!data || !data.liveGroup) { return; }
    document.body.classList.remove("live-offline");
    // first open too: changes between rendering the page and the socket joining its group are re-read
    announce(data.liveGroup, { event: seenOpen[data.liveGroup] ? "reconnected" : "connected" });
    seenOpen[data.liveGroup] = true;
  });
  document.addEventListener("htmx:wsClose", function () { document.body.classList.add("live-offline"); });
})();
