/*
 * Live preview of an email template while it is edited.
 *
 * Posts the form's current subject, HTML, text, variables and sample context to the admin's
 * preview URL (given on #template-preview as data-preview-url) 300 ms after the last keystroke,
 * and shows the answer: each rendered part, the errors (the failing field highlighted) and the
 * warnings. Nothing is saved. Rendered HTML only ever goes into the sandboxed iframe's srcdoc;
 * everything else is set as text, never as markup.
 */
(function () {
  "use strict";

  var DELAY_MS = 300;
  var FIELDS = ["subject", "html", "text", "variables", "sample_context"];
  var PARTS = ["subject", "html", "text"];
  var LABELS = {
    subject: "Subject",
    html: "HTML",
    text: "Text",
    variables: "Variables",
    sample_context: "Sample context",
  };

  function init() {
    var panel = document.getElementById("template-preview");
    var url = panel && panel.dataset.previewUrl;
    var form = document.getElementById("emailtemplate_form");
    if (!url || !form) {
      return; // read-only page: the server-rendered preview is all there is
    }
    var inputs = {};
    FIELDS.forEach(function (name) {
      inputs[name] = form.elements.namedItem(name);
    });
    if (!inputs.subject || !inputs.html || !inputs.text) {
      return;
    }
    var csrfInput = form.querySelector("input[name=csrfmiddlewaretoken]");
    var status = document.getElementById("template-preview-status");
    var idleStatus = status.textContent;
    var unsavedNote = document.getElementById("test-send-unsaved");
    var timer = null;
    var controller = null;
    var latest = 0;

    function partBlock(part) {
      return panel.querySelector('.mq-preview-part[data-part="' + part + '"]');
    }

    function fieldRow(name) {
      return form.querySelector(".form-row.field-" + name);
    }

    function showPart(part, value) {
      var output = document.getElementById("template-preview-" + part);
      var empty = document.getElementById("template-preview-" + part + "-empty");
      if (part === "html") {
        // Reassigning srcdoc reloads the frame: skip it when nothing changed.
        if (output.getAttribute("srcdoc") !== value) {
          output.setAttribute("srcdoc", value);
        }
      } else {
        output.textContent = value;
      }
      if (empty) {
        empty.hidden = value !== "";
      }
    }

    function fillList(id, items) {
      var list = document.getElementById(id);
      list.replaceChildren();
      items.forEach(function (item) {
        var li = document.createElement("li");
        li.textContent = item.text;
        if (item.field) {
          li.dataset.field = item.field;
        }
        list.appendChild(li);
      });
    }

    function show(data) {
      var errors = data.errors || {};
      PARTS.forEach(function (part) {
        var value = data[part];
        var failed = typeof value !== "string";
        // A part that did not render keeps its last output, dimmed, so the page does not jump.
        partBlock(part).classList.toggle("mq-stale", failed);
        if (!failed) {
          showPart(part, value);
        }
      });
      FIELDS.forEach(function (name) {
        var row = fieldRow(name);
        var failed = Object.prototype.hasOwnProperty.call(errors, name);
        if (row) {
          row.classList.toggle("mq-field-error", failed);
        }
        if (inputs[name]) {
          if (failed) {
            inputs[name].setAttribute("aria-invalid", "true");
          } else {
            inputs[name].removeAttribute("aria-invalid");
          }
        }
      });
      fillList(
        "template-preview-errors",
        Object.keys(errors).map(function (name) {
          return { field: name, text: (LABELS[name] || name) + ": " + errors[name] };
        })
      );
      fillList(
        "template-preview-warnings",
        (data.warnings || []).map(function (text) {
          return { text: text };
        })
      );
      status.textContent = idleStatus;
    }

    function showFailure(message) {
      PARTS.forEach(function (part) {
        partBlock(part).classList.add("mq-stale");
      });
      fillList("template-preview-errors", [{ text: message }]);
    }

    function refresh() {
      var body = new FormData();
      FIELDS.forEach(function (name) {
        body.append(name, inputs[name] ? inputs[name].value : "");
      });
      if (controller) {
        controller.abort(); // an older answer must never overwrite a newer one
      }
      controller = new AbortController();
      var request = ++latest;
      panel.setAttribute("aria-busy", "true");
      fetch(url, {
        method: "POST",
        body: body,
        credentials: "same-origin",
        headers: {
          "X-CSRFToken": csrfInput ? csrfInput.value : "",
          "X-Requested-With": "XMLHttpRequest",
          Accept: "application/json",
        },
        signal: controller.signal,
      })
        .then(function (response) {
          var type = response.headers.get("Content-Type") || "";
          if (!response.ok || type.indexOf("application/json") === -1) {
            // A 403, or the login page after the session expired.
            throw new Error(
              "The preview could not be updated (HTTP " + response.status + "). " +
              "Reload the page; you may need to log in again."
            );
          }
          return response.json();
        })
        .then(function (data) {
          if (request === latest) {
            show(data);
          }
        })
        .catch(function (error) {
          if (error.name !== "AbortError" && request === latest) {
            showFailure(error.message);
          }
        })
        .finally(function () {
          if (request === latest) {
            panel.removeAttribute("aria-busy");
          }
        });
    }

    function schedule() {
      if (unsavedNote) {
        unsavedNote.hidden = false;
      }
      window.clearTimeout(timer);
      timer = window.setTimeout(refresh, DELAY_MS);
    }

    FIELDS.forEach(function (name) {
      if (inputs[name]) {
        inputs[name].addEventListener("input", schedule);
      }
    });
    // The form may hold values other than the saved ones (a failed save, a browser restoring
    // what was typed): start from what is on screen.
    refresh();
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", init);
  } else {
    init();
  }
})();
