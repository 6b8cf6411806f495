// ztbridge console: the live tail of the events page (server-sent
// events).  Event content is attacker-controlled: it is only ever set as
// text (textContent), never parsed as HTML.
"use strict";
(function () {
  function cell(text) {
    var td = document.createElement("td");
    td.textContent = text == null ? "" : String(text).slice(0, 200);
    return td;
  }
  function start() {
    var tail = document.getElementById("tail");
    if (!tail || tail.getAttribute("data-live") !== "on" || !window.EventSource) return;
    var source = new EventSource("/api/stream");
    source.addEventListener("delivery", function (e) {
      var r;
      try { r = JSON.parse(e.data); } catch (_) { return; }
      var tr = document.createElement("tr");
      tr.className = "row live";
      tr.setAttribute("data-receipt", r.receipt_id);
      tr.setAttribute("data-route", r.route);
      tr.setAttribute("data-state", r.delivery);
      tr.appendChild(cell(r.received_at));
      var id = cell("");
      var a = document.createElement("a");
      a.href = "/events/" + encodeURIComponent(r.receipt_id);
      a.textContent = r.receipt_id;
      id.appendChild(a);
      tr.appendChild(id);
      [r.event_id, r.severity, r.state, r.route, r.delivery, r.attempts, r.last_status, r.reason]
        .forEach(function (v) { tr.appendChild(cell(v)); });
      tail.insertBefore(tr, tail.firstChild);
      while (tail.children.length > 200) tail.removeChild(tail.lastChild);
    });
    source.addEventListener("attempt", function (e) {
      var p;
      try { p = JSON.parse(e.data); } catch (_) { return; }
      var live = document.getElementById("live");
      if (live) live.textContent = "live: last attempt on " + p.route + " at " + p.at + (p.ok ? " (ok)" : " (failed)");
    });
  }
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();

// An event's page follows its open deliveries: it reloads every two
// seconds while one is pending or in flight.
(function () {
  function follow() {
    if (document.querySelector('section.delivery[data-open="true"]')) {
      setTimeout(function () { window.location.reload(); }, 2000);
    }
  }
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", follow);
  else follow();
})();
