// Budget pages: mark each live socket element open/closed (tests and the offline hint read
// data-live), and ask before a destructive form (data-confirm) is sent.
(function () {
  "use strict";
  function socketOf(evt) {
    var elt = evt.detail && evt.detail.elt ? evt.detail.elt : evt.target;
    return elt && elt.closest ? elt.closest("[data-live-group]") : null;
  }
  function mark(state) {
    return function (evt) {
      var socket = socketOf(evt);
      if (socket) { socket.setAttribute("data-live", state); }
    };
  }
  document.addEventListener("htmx:wsOpen", mark("open"));
  document.addEventListener("htmx:wsClose", mark("closed"));
  document.addEventListener("submit", function (evt) {
    var form = evt.target;
    var question = form && form.getAttribute ? form.getAttribute("data-confirm") : null;
    if (question && !window.confirm(question)) { evt.preventDefault(); }
  }, true);
})();
