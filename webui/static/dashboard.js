// Live dashboard: the server pushes a "status" event whenever phones, calls or trunks change.
(function () {
  "use strict";
  var root = document.getElementById("dashboard");
  if (!root || !window.EventSource) { return; }
  var stateLine = document.getElementById("pbx-state");
  var uptimeBase = null, uptimeAt = 0;

  function cell(tr, text, cls) {
    var td = document.createElement("td");
    if (cls) {
      var span = document.createElement("span");
      span.className = "state " + cls;
      span.textContent = text;
      td.appendChild(span);
    } else {
      td.textContent = text;
    }
    tr.appendChild(td);
  }

  function fill(tableId, rows, empty, columns) {
    var body = document.querySelector("#" + tableId + " tbody");
    body.textContent = "";
    if (!rows.length) {
      var tr = document.createElement("tr");
      var td = document.createElement("td");
      td.colSpan = columns;
      td.textContent = empty;
      tr.appendChild(td);
      body.appendChild(tr);
      return;
    }
    rows.forEach(function (make) { var tr = document.createElement("tr"); make(tr); body.appendChild(tr); });
  }

  // The same words as webui/timefmt.py: "42 s", "12 min 5 s", "3 h 12 min", "2 d 5 h".
  function duration(seconds) {
    var s = Math.max(0, Math.floor(seconds));
    if (s < 60) { return s + " s"; }
    if (s < 3600) { return Math.floor(s / 60) + " min " + (s % 60) + " s"; }
    if (s < 86400) { return Math.floor(s / 3600) + " h " + Math.floor((s % 3600) / 60) + " min"; }
    return Math.floor(s / 86400) + " d " + Math.floor((s % 86400) / 3600) + " h";
  }

  function since(t) { return t ? duration(Date.now() / 1000 - t) : ""; }

  function render(s) {
    if (s.running) {
      uptimeBase = s.uptime || 0; uptimeAt = Date.now();
      stateLine.className = "ok";
      stateLine.textContent = "PBX running · version " + (s.version || "?") + " · up ";
      var up = document.createElement("span"); up.id = "uptime"; stateLine.appendChild(up);
      tick();
    } else {
      uptimeBase = null;
      stateLine.className = "warn";
      stateLine.textContent = "PBX not running" + (s.reason ? " (" + s.reason + ")" : "");
    }
    fill("phones", (s.extensions || []).map(function (e) {
      return function (tr) {
        tr.dataset.number = e.number;
        cell(tr, e.number); cell(tr, e.name);
        cell(tr, e.registered ? "registered" : "not registered", e.registered ? "ok" : "off");
      };
    }), "No extensions.", 3);
    fill("calls", (s.calls || []).map(function (c) {
      return function (tr) {
        cell(tr, c.src); cell(tr, c.dst); cell(tr, c.state); cell(tr, since(c.answer || c.start));
        tr.lastChild.dataset.since = c.answer || c.start || "";
        cell(tr, c.cost !== undefined ? c.cost + (c.currency ? " " + c.currency : "") : "");
        tr.lastChild.className = "cost";
      };
    }), "No calls.", 5);
    chargingAlerts(s.alerts || []);
    failover(s.ha);
    var mail = s.mail || {}, banner = document.getElementById("mail-banner");
    if (banner) {  // outgoing mail retrying or failed (the Mail page says why)
      banner.hidden = !(mail.retrying || mail.failed);
      document.getElementById("mail-counts").textContent =
        (mail.retrying || 0) + " retrying, " + (mail.failed || 0) + " failed in the last week";
      document.getElementById("mail-error").textContent = mail.last_error || "";
    }
    fill("trunks", (s.trunks || []).map(function (t) {
      return function (tr) { cell(tr, t.name); cell(tr, t.state, t.state === "registered" ? "ok" : "off"); };
    }), "No trunks.", 2);
  }

  // failover (webui/ha): this box's state, the peer's, late replication, the last takeover
  function failover(ha) {
    var card = document.getElementById("failover-card");
    if (!card || !ha) { return; }
    var state = document.getElementById("failover-state");
    state.textContent = ha.state; state.className = "state " + (ha.ok ? "ok" : "off");
    document.getElementById("failover-headline").textContent = ha.headline;
    document.getElementById("failover-peer").textContent = ha.peer;
    var late = document.getElementById("failover-late");
    late.hidden = !(ha.late && ha.late.length);
    late.textContent = "Late: " + (ha.late || []).join(", ");
    document.getElementById("failover-takeover").textContent = "This box " + ha.takeover + ".";
  }

  // call charging: the banner of spend-limit and unusual-pattern alerts
  function chargingAlerts(list) {
    var banner = document.getElementById("charging-banner");
    if (!banner) { return; }
    var ul = document.getElementById("charging-alerts");
    ul.textContent = "";
    list.forEach(function (a) { var li = document.createElement("li"); li.textContent = a.when + " · " + a.text; ul.appendChild(li); });
    banner.hidden = !list.length;
  }

  function tick() {
    var up = document.getElementById("uptime");
    if (up && uptimeBase !== null) { up.textContent = duration(uptimeBase + (Date.now() - uptimeAt) / 1000); }
    document.querySelectorAll("#calls td[data-since]").forEach(function (td) {
      td.textContent = since(parseFloat(td.dataset.since));
    });
  }
  setInterval(tick, 1000);

  var source = new EventSource(root.dataset.stream);
  source.addEventListener("status", function (ev) { render(JSON.parse(ev.data)); root.dataset.live = "1"; });
})();
