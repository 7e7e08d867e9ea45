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
      if (target instanceof HTMLDialogElement && target.open) {
        target.close();  // the close handler below removes it and gives focus back
      } else {
        target.remove();
      }
      event.preventDefault();
    }
    var copy = event.target.closest("[data-copy]");
    if (copy) {
      copyText(copy.getAttribute("data-copy") || "", copy);
    }
  });

  // --- Copy buttons: an IP, an allocation id or a new token's secret to the clipboard. -------------------
  // The word of feedback is also said in a status line outside every live part (a refresh never wipes it, a
  // screen reader announces it), and a button that has copied no longer holds the live refresh, although a
  // click leaves focus on it (see actionDone).
  var copyStatusTimer = 0;

  function copyStatus() {
    var status = document.getElementById("copy-status");
    if (!status) {
      status = document.createElement("p");
      status.id = "copy-status";
      status.className = "copy-status";
      status.setAttribute("role", "status");
      document.body.appendChild(status);
    }
    return status;
  }

  function sayCopied(text) {
    var status = copyStatus();
    status.textContent = text;
    window.clearTimeout(copyStatusTimer);
    copyStatusTimer = window.setTimeout(function () { status.textContent = ""; }, 2500);
  }

  function copyText(text, button) {
    function done(ok) {
      var before = button.getAttribute("data-label") || button.textContent;
      button.setAttribute("data-label", before);
      button.textContent = ok ? "Copied" : "Copy failed";
      actionDone(button);
      sayCopied(ok ? "Copied " + (button.getAttribute("data-copy-name") || text) + "."
        : "Could not copy: select the text and copy it by hand.");
      window.setTimeout(function () { button.textContent = before; }, 1500);
    }
    if (navigator.clipboard && window.isSecureContext) {
      navigator.clipboard.writeText(text).then(function () { done(true); }, function () { done(false); });
    } else {
      done(false);
    }
  }

  // --- Live refresh that never fights the reader. --------------------------------------------------------
  // Every live part ([data-live]) polls with hx-swap="morph" (idiomorph), which patches the DOM in place.
  // A poll is skipped while the reader paused refresh, while the tab is hidden, and while focus or a text
  // selection is inside the part: a swap there could move what the reader is working with.
  var PAUSE_KEY = "eipdash.live.paused";
  var paused = false;
  try {
    paused = window.sessionStorage.getItem(PAUSE_KEY) === "1";
  } catch (err) {
    paused = false;
  }

  function holdReason(element) {
    if (paused) {
      return "paused";
    }
    if (document.hidden) {
      return "the tab is hidden";
    }
    var active = document.activeElement;
    if (active && active !== document.body && element.contains(active) && !active.hasAttribute("data-action-done")) {
      return "focus is inside";
    }
    var selection = window.getSelection ? window.getSelection() : null;
    if (selection && !selection.isCollapsed && selection.rangeCount > 0 &&
        (element.contains(selection.anchorNode) || element.contains(selection.focusNode))) {
      return "text is selected";
    }
    return "";
  }

  // A button whose action is over (it copied; the dialog it opened closed and gave focus back) keeps focus,
  // so that the keyboard keeps its place, but holds no refresh: there is nothing on it a swap could lose.
  // Focus that moves elsewhere ends that; coming back to it by keyboard holds again.
  function actionDone(button) {
    button.setAttribute("data-action-done", "");
  }

  document.addEventListener("focusin", function (event) {
    document.querySelectorAll("[data-action-done]").forEach(function (done) {
      if (done !== event.target) {
        done.removeAttribute("data-action-done");
      }
    });
  });

  function markHeld(element, reason) {
    var line = element.querySelector(".refresh");
    if (!line) {
      return;
    }
    var note = line.querySelector(".held-note");
    if (!reason) {
      if (note) {
        note.remove();
      }
      return;
    }
    if (!note) {
      note = document.createElement("span");
      note.className = "held-note";
      line.appendChild(note);
    }
    note.textContent = reason === "paused" ? " · live refresh paused" : " · refresh on hold: " + reason;
  }

  document.addEventListener("htmx:beforeRequest", function (event) {
    var element = event.detail && event.detail.elt;
    if (!(element instanceof Element) || !element.hasAttribute("data-live")) {
      return;
    }
    var reason = holdReason(element);
    if (reason) {
      event.preventDefault();
      markHeld(element, reason);
      // How many polls were held: lets a test (or a curious reader) see that polling goes on, held.
      element.setAttribute("data-held-polls", String(Number(element.getAttribute("data-held-polls") || 0) + 1));
    }
  });

  function renderToggle() {
    var toggle = document.getElementById("live-toggle");
    if (!toggle) {
      return;
    }
    toggle.hidden = !document.querySelector("[data-live]");
    toggle.setAttribute("aria-pressed", paused ? "true" : "false");
    toggle.textContent = paused ? "Resume live refresh" : "Pause live refresh";
    document.querySelectorAll("[data-live]").forEach(function (element) {
      markHeld(element, paused ? "paused" : "");
    });
  }

  document.addEventListener("click", function (event) {
    if (event.target instanceof Element && event.target.closest("#live-toggle")) {
      paused = !paused;
      try {
        window.sessionStorage.setItem(PAUSE_KEY, paused ? "1" : "0");
      } catch (err) {
        // private mode: the choice lasts until the page changes
      }
      renderToggle();
    }
  });

  // --- Disclosures: a <details> the reader opened (an overview alert row) stays open across live refreshes. --
  // The server renders them closed; without this, the morph of the next poll would take the reader's `open` away.
  // The same for a done action's mark (actionDone): the server never renders it, and a morph that took it away
  // would hold every later refresh while the focus stays on that button.
  if (window.Idiomorph && window.Idiomorph.defaults) {
    var beforeAttribute = window.Idiomorph.defaults.callbacks.beforeAttributeUpdated;
    window.Idiomorph.defaults.callbacks.beforeAttributeUpdated = function (name, node, mutation) {
      if (name === "open" && node instanceof HTMLDetailsElement) {
        return false;
      }
      if (name === "data-action-done" && mutation === "remove") {
        return false;
      }
      return beforeAttribute ? beforeAttribute(name, node, mutation) : undefined;
    };
  }

  // --- Modal dialogs: <dialog data-modal> arriving in a swap opens with showModal(). ----------------------
  // showModal() moves focus in, makes the page behind inert and closes on Escape; Tab is kept inside here.
  var FOCUSABLE = "a[href], button:not([disabled]), input:not([disabled]):not([type=hidden]), select:not([disabled]), " +
    "textarea:not([disabled]), [tabindex]:not([tabindex='-1'])";

  function openModals(root) {
    var scope = root instanceof Element || root instanceof Document ? root : document;
    var dialogs = scope.querySelectorAll ? scope.querySelectorAll("dialog[data-modal]") : [];
    if (scope instanceof HTMLDialogElement && scope.hasAttribute("data-modal")) {
      dialogs = [scope];
    }
    Array.prototype.forEach.call(dialogs, function (dialog) {
      if (dialog.open || !dialog.isConnected) {
        return;
      }
      // A step of a dialog arrives as a new dialog that replaces the last one (the reassign dialog's steps):
      // focus goes back, in the end, to what opened the first step.
      var active = document.activeElement;
      if (active instanceof HTMLElement && active !== document.body && !active.closest("dialog")) {
        openers[dialog.id] = active;
      }
      showAsModal(dialog, true);
    });
  }

  var openers = {};  // dialog id -> the element that opened it

  function showAsModal(dialog, removeOnClose) {
    dialog.addEventListener("close", function () {
      var opener = openers[dialog.id];
      delete openers[dialog.id];
      if (removeOnClose) {
        dialog.remove();
      }
      if (opener && opener.isConnected) {
        opener.focus();
        actionDone(opener);
      }
    }, { once: true });
    dialog.showModal();
    // autofocus marks the safe first stop (Cancel, a choice), never the destructive button.
    var first = dialog.querySelector("[autofocus]") || dialog.querySelector(FOCUSABLE);
    if (first) {
      first.focus();
    }
  }

  // --- Confirmations: a button [data-opens=ID] shows <dialog id=ID data-confirm> of its page as a modal. ----
  // The button submits a GET form: without JavaScript the page comes back with that dialog open in it. Only
  // the dialog's own form posts the action.
  document.addEventListener("click", function (event) {
    var opener = event.target instanceof Element ? event.target.closest("[data-opens]") : null;
    var dialog = opener ? document.getElementById(opener.getAttribute("data-opens") || "") : null;
    if (!(dialog instanceof HTMLDialogElement)) {
      return;
    }
    event.preventDefault();
    if (dialog.open) {
      // Shown open in the page (the GET's answer): a modal now. Not close(): its close event, which comes
      // later, would end the modal about to open.
      dialog.removeAttribute("open");
    }
    openers[dialog.id] = opener;
    showAsModal(dialog, false);
  });

  function modalDialog() {
    var open = document.querySelectorAll("dialog[open]");
    for (var i = 0; i < open.length; i++) {
      var modal;
      try {
        modal = open[i].matches(":modal");
      } catch (err) {
        modal = open[i].hasAttribute("data-modal");  // a browser without :modal
      }
      if (modal) {
        return open[i];
      }
    }
    return null;
  }

  document.addEventListener("keydown", function (event) {
    if (event.key !== "Tab") {
      return;
    }
    var dialog = modalDialog();
    if (!dialog) {
      return;
    }
    var items = Array.prototype.filter.call(dialog.querySelectorAll(FOCUSABLE), function (item) {
      return item.offsetParent !== null || item === document.activeElement;
    });
    if (!items.length) {
      event.preventDefault();
      return;
    }
    var first = items[0];
    var last = items[items.length - 1];
    var inside = dialog.contains(document.activeElement);
    if (event.shiftKey && (document.activeElement === first || !inside)) {
      last.focus();
      event.preventDefault();
    } else if (!event.shiftKey && (document.activeElement === last || !inside)) {
      first.focus();
      event.preventDefault();
    }
  });

  document.addEventListener("htmx:load", function (event) {
    openModals(event.detail && event.detail.elt);
  });
  document.addEventListener("DOMContentLoaded", function () {
    renderToggle();
    openModals(document);
    if (document.querySelector("[data-copy]")) {
      copyStatus();  // in the page before its first words: a status region added and filled at once is not always read
    }
  });
})();
