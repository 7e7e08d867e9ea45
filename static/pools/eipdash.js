// The dashboard's own script: show htmx failures. htmx swaps nothing on a 4xx/5xx answer or a network
// error, so a refused action or an expired permission would otherwise look like nothing happened.
// A file under /static/ (no inline script) so that the Content-Security-Policy can forbid inline code.
(function () {
  "use strict";

  function banner() {
    return document.getElementById("htmx-error");
  }

  function verbOf(event) {
    return event.detail && event.detail.requestConfig ? event.detail.requestConfig.verb : "";
  }

  function show(text, verb) {
    var box = banner();
    if (!box) {
      return;
    }
    box.querySelector(".htmx-error-text").textContent = text;  // textContent: the answer is never parsed as HTML
    box.dataset.verb = verb;
    box.hidden = false;
  }

  function hide() {
    var box = banner();
    if (box) {
      box.hidden = true;
    }
  }

  function describe(event) {
    var xhr = event.detail && event.detail.xhr;
    var status = xhr ? xhr.status : 0;
    var what = status === 403 ? "not allowed for your account"
      : status === 400 ? "the request was refused"
      : status === 404 ? "not found"
      : status === 429 ? "too many requests"
      : status >= 500 ? "the server failed"
      : "the request failed";
    var body = xhr && typeof xhr.responseText === "string" ? xhr.responseText : "";
    var type = xhr ? xhr.getResponseHeader("Content-Type") || "" : "";
    // A short plain-text answer says what went wrong; an HTML error page does not fit in a banner.
    var detail = type.indexOf("text/plain") === 0 && body.length < 300 ? ": " + body.trim() : "";
    return "Could not update this page (" + (status || "no answer") + ", " + what + ")" + detail + ".";
  }

  document.addEventListener("htmx:responseError", function (event) {
    show(describe(event), verbOf(event));
  });
  document.addEventListener("htmx:sendError", function (event) {
    show("Could not reach eipdash: the server did not answer. The page shows the last data it got.", verbOf(event));
  });
  document.addEventListener("htmx:afterRequest", function (event) {
    // A poll that works again clears the banner of a failed poll; a failed action (a POST) stays until
    // dismissed, so that its message is read.
    var box = banner();
    if (box && !box.hidden && box.dataset.verb === "get" && event.detail && event.detail.successful &&
        verbOf(event) === "get") {
      hide();
    }
  });
  document.addEventListener("click", function (event) {
    if (!(event.target instanceof Element)) {
      return;
    }
    if (event.target.closest(".htmx-error-close")) {
      hide();
    }
    // data-dismiss="ID": remove that element (e.g. a dialog's Cancel). A link keeps its href for pages
    // without JavaScript; the CSP forbids inline onclick handlers, so the behaviour lives here.
    var dismiss = event.target.closest("[data-dismiss]");
    var target = dismiss ? document.getElementById(dismiss.getAttribute("data-dismiss")) : null;
    if (target) {
      target.remove();
      event.preventDefault();
    }
  });
})();
