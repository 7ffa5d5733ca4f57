// otpguard dashboard: refresh the page every data-refresh seconds while it is visible.
// Everything else is rendered by the server; this file is optional progressive enhancement.
(function () {
  "use strict";
  var seconds = parseInt(document.body.getAttribute("data-refresh") || "0", 10);
  if (!seconds || seconds < 10) {
    return;
  }
  window.setInterval(function () {
    if (document.visibilityState === "visible") {
      window.location.reload();
    }
  }, seconds * 1000);
})();
