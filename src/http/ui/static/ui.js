// registryd web UI: copy buttons. Every page works without this file; with it, the buttons that
// copy a full digest or a pull command to the clipboard appear.
"use strict";
(function () {
  function copied(button, ok) {
    var label = button.textContent;
    button.textContent = ok ? "Copied" : "Copy failed";
    if (ok) button.setAttribute("data-copied", "");
    setTimeout(function () {
      button.textContent = label;
      button.removeAttribute("data-copied");
    }, 1500);
  }
  function fallback(text) {
    // Without the asynchronous clipboard (plain HTTP on another host than localhost).
    var area = document.createElement("textarea");
    area.value = text;
    area.setAttribute("readonly", "");
    area.className = "vh";
    document.body.appendChild(area);
    area.select();
    var ok = false;
    try { ok = document.execCommand("copy"); } catch (e) { ok = false; }
    document.body.removeChild(area);
    return ok;
  }
  document.querySelectorAll("button[data-copy]").forEach(function (button) {
    button.hidden = false;
    button.addEventListener("click", function () {
      var text = button.getAttribute("data-copy");
      if (navigator.clipboard && window.isSecureContext) {
        navigator.clipboard.writeText(text).then(
          function () { copied(button, true); },
          function () { copied(button, fallback(text)); });
      } else {
        copied(button, fallback(text));
      }
    });
  });
})();
