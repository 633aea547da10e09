// Refusals are answers too: show a 4xx/5xx response's line in its target (a 409 reads "409 Conflict: ...").
document.addEventListener("htmx:beforeSwap", function (event) {
  if (event.detail.xhr.status >= 400) {
    event.detail.shouldSwap = true;
    event.detail.isError = false;
  }
});
// The server is unreachable: say so in the flash area instead of failing silently.
document.addEventListener("htmx:sendError", function () {
  var flash = document.getElementById("flash");
  if (flash) { flash.innerHTML = '<p class="error">the control plane does not answer</p>'; }
});
