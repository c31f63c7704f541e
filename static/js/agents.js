// The Agents screen: the copy button of a new key (the key is shown once). A file, not inline script, for
// the strict CSP; delegated, so it works on a keys section htmx swapped in.
(function () {
  "use strict";
  document.addEventListener("click", function (evt) {
    var button = evt.target && evt.target.closest ? evt.target.closest("button[data-copy]") : null;
    if (!button) { return; }
    var source = document.getElementById(button.getAttribute("data-copy"));
    if (!source) { return; }
    var text = source.textContent.trim();
    function copied() { button.textContent = button.getAttribute("data-copied") || "Copied"; }
    function selectIt() {  // no clipboard (plain HTTP, or refused): select it for Ctrl-C
      var range = document.createRange();
      range.selectNodeContents(source);
      var selection = window.getSelection();
      selection.removeAllRanges();
      selection.addRange(range);
    }
    if (navigator.clipboard && navigator.clipboard.writeText) {
      navigator.clipboard.writeText(text).then(copied, selectIt);
    } else {
      selectIt();
    }
  });
})();
