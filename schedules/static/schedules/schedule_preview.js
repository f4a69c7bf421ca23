/*
 * Next-runs preview of a schedule while its cron and time zone are edited.
 *
 * 300 ms after the last change of either field, asks the admin's preview URL (given on
 * #schedule-next-runs as data-preview-url) for the next five ticks of what is typed and shows
 * them, or the error naming the field. Nothing is saved. Answers are set as text, never as
 * markup. Without JavaScript the area keeps the saved schedule's next runs.
 */
(function () {
  "use strict";

  var DELAY_MS = 300;

  function init() {
    var area = document.getElementById("schedule-next-runs");
    var url = area && area.dataset.previewUrl;
    var form = document.getElementById("schedule_form");
    var cron = form && form.elements.namedItem("cron");
    var zone = form && form.elements.namedItem("timezone");
    if (!url || !cron || !zone) {
      return; // a read-only page: the saved preview is all there is
    }
    var timer = null;
    var controller = null;
    var latest = 0;

    function showRuns(runs) {
      var list = document.createElement("ul");
      runs.forEach(function (run) {
        var item = document.createElement("li");
        item.textContent = run.local + " (" + run.utc + ")";
        list.appendChild(item);
      });
      area.replaceChildren(list);
    }

    function showError(message) {
      var list = document.createElement("ul");
      list.className = "errorlist";
      var item = document.createElement("li");
      item.textContent = message;
      list.appendChild(item);
      area.replaceChildren(list);
    }

    function refresh() {
      if (controller) {
        controller.abort(); // an older answer must never overwrite a newer one
      }
      controller = new AbortController();
      var request = ++latest;
      var query = new URLSearchParams({ cron: cron.value, timezone: zone.value });
      area.setAttribute("aria-busy", "true");
      fetch(url + "?" + query.toString(), {
        credentials: "same-origin",
        headers: { Accept: "application/json", "X-Requested-With": "XMLHttpRequest" },
        signal: controller.signal,
      })
        .then(function (response) {
          var type = response.headers.get("Content-Type") || "";
          if (type.indexOf("application/json") === -1 || (!response.ok && response.status !== 400)) {
            // A 403, or the login page after the session expired.
            throw new Error(
              "The preview could not be updated (HTTP " + response.status + "). " +
              "Reload the page; you may need to log in again."
            );
          }
          return response.json();
        })
        .then(function (data) {
          if (request !== latest) {
            return;
          }
          if (data.error) {
            showError(data.error);
          } else {
            showRuns(data.next_runs);
          }
        })
        .catch(function (error) {
          if (error.name !== "AbortError" && request === latest) {
            showError(error.message);
          }
        })
        .finally(function () {
          if (request === latest) {
            area.removeAttribute("aria-busy");
          }
        });
    }

    function later() {
      window.clearTimeout(timer);
      timer = window.setTimeout(refresh, DELAY_MS);
    }

    [cron, zone].forEach(function (input) {
      input.addEventListener("input", later);
      input.addEventListener("change", later);
    });
    // After a refused save the form holds what was typed, not what is saved: start from it.
    if (cron.value.trim()) {
      refresh();
    }
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", init);
  } else {
    init();
  }
})();
