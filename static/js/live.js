// Live updates: the WebSocket only says "something changed in <group>". We turn each message into a
// `live:<group>` event on <body>; page regions listen with hx-trigger="live:<group> from:body" and
// re-read their fragment from the server. On every connect and reconnect we fire the same event so a
// page reconciles whatever it missed while disconnected (channel layers deliver at most once).
(function () {
  "use strict";
  // htmx's default back-off ("full-jitter") waits up to 64 s after six failed tries, so a page that lost
  // its socket during a Redis restart could stay offline for a minute after Redis was back. A reviewer
  // should see the queue live again within seconds: double from 0.5 s, capped at 5 s, jittered by half.
  if (window.htmx) {
    htmx.config.wsReconnectDelay = function (retryCount) {
      var ceiling = Math.min(500 * Math.pow(2, retryCount), 5000);
      return ceiling / 2 + Math.random() * ceiling / 2;
    };
  }
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
