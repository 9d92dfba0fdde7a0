// Downwatch dashboard: the report form over the JSON API, and live updates
// from /api/v1/stream. No framework, no build step; the pages read fine
// without it.
(function () {
  "use strict";

  var LABELS = { ok: "No problems", warning: "Possible problems", outage: "Outage" };
  var body = document.body;
  var slug = body.getAttribute("data-service") || "";
  var name = body.getAttribute("data-service-name") || "";

  function setBadge(el, level) {
    el.className = el.className.replace(/\bbadge-(ok|warning|outage)\b/, "badge-" + level);
    el.textContent = LABELS[level] || level;
  }

  function pad(n) { return (n < 10 ? "0" : "") + n; }
  function hhmm(iso) {
    var d = new Date(iso);
    if (isNaN(d.getTime())) { return ""; }
    return pad(d.getUTCHours()) + ":" + pad(d.getUTCMinutes()) + " UTC";
  }

  function setBanner(level, since) {
    var banner = document.getElementById("status-banner");
    var text = document.getElementById("banner-text");
    if (!banner || !text) { return; }
    banner.className = banner.className.replace(/\bbanner-(ok|warning|outage)\b/, "banner-" + level);
    if (level === "outage") {
      text.textContent = "User reports indicate problems at " + name + (since ? " since " + hhmm(since) : "");
    } else if (level === "warning") {
      text.textContent = "User reports indicate possible problems at " + name;
    } else {
      text.textContent = "No current problems at " + name;
    }
  }

  var chartTimer = null;
  function refreshChart() {
    var img = document.getElementById("chart");
    if (!img || chartTimer) { return; }
    chartTimer = setTimeout(function () {
      chartTimer = null;
      var src = img.getAttribute("data-src");
      img.src = src + (src.indexOf("?") >= 0 ? "&" : "?") + "_=" + Date.now();
    }, 500);
  }

  // ---- the report form, answered inline
  var form = document.getElementById("report-form");
  var result = document.getElementById("report-result");
  if (form && result && window.fetch) {
    form.addEventListener("submit", function (ev) {
      ev.preventDefault();
      var data = new FormData(form);
      var problem = data.get("problem");
      if (!problem) {
        show(false, "Choose what is not working.");
        return;
      }
      var payload = { problem: String(problem) };
      var country = String(data.get("country") || "").trim().toUpperCase();
      var city = String(data.get("city") || "").trim();
      if (country) { payload.country = country; }
      if (city) { payload.city = city; }
      var button = form.querySelector("button[type=submit]");
      if (button) { button.disabled = true; }
      show(true, "Sending…");
      fetch(form.getAttribute("data-api"), {
        method: "POST",
        headers: { "Content-Type": "application/json", "Accept": "application/json" },
        body: JSON.stringify(payload)
      }).then(function (resp) {
        return resp.json().catch(function () { return {}; }).then(function (json) {
          if (resp.status === 201) {
            show(true, json.counted
              ? "Thanks — your report counted."
              : "Thanks — your report was already counted: one report per person every 15 minutes counts.");
          } else if (resp.status === 429) {
            var wait = resp.headers.get("Retry-After") || "a few";
            show(false, "Too many reports, try again in " + wait + " s.");
          } else if (json && json.errors && json.errors.length) {
            show(false, json.errors.map(function (e) { return e.field + ": " + e.message; }).join(" "));
          } else {
            show(false, (json && json.detail) || "Your report could not be sent; try again in a moment.");
          }
        });
      }).catch(function () {
        show(false, "Your report could not be sent; check your connection and try again.");
      }).then(function () {
        if (button) { button.disabled = false; }
      });
    });
  }
  function show(good, text) {
    result.className = "result " + (good ? "result-good" : "result-bad");
    result.textContent = text;
  }

  // ---- live updates
  if (!window.EventSource) { return; }
  var es = new EventSource("/api/v1/stream");
  // Says on the page whether live updates are flowing (for styles and tests).
  es.addEventListener("open", function () { document.documentElement.setAttribute("data-live", "on"); });
  es.addEventListener("error", function () { document.documentElement.setAttribute("data-live", "off"); });
  function parse(ev) {
    try { return JSON.parse(ev.data); } catch (e) { return null; }
  }
  es.addEventListener("status", function (ev) {
    var d = parse(ev);
    if (!d || d.scope !== "global") { return; }
    var badges = document.querySelectorAll("[data-level-for]");
    for (var i = 0; i < badges.length; i++) {
      if (badges[i].getAttribute("data-level-for") === d.service) { setBadge(badges[i], d.level); }
    }
    if (d.service === slug) {
      setBanner(d.level, d.level === "outage" ? d.at : null);
      refreshChart();
    }
  });
  es.addEventListener("incident", function (ev) {
    var d = parse(ev);
    if (!d || !d.incident || d.incident.service !== slug || d.incident.scope !== "global") { return; }
    if (d.incident.status === "open") {
      setBanner("outage", d.incident.started_at);
    }
    refreshChart();
  });
  es.addEventListener("counts", function (ev) {
    var d = parse(ev);
    if (!d || !d.services || !slug) { return; }
    for (var i = 0; i < d.services.length; i++) {
      if (d.services[i].service === slug) { refreshChart(); return; }
    }
  });
})();
