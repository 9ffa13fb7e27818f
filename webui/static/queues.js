// Call queues: the statistics charts (Chart.js, served from the box) and the live wallboard (SSE).
(function () {
  "use strict";
  var colors = {offered: "#2563eb", answered: "#16a34a", abandoned: "#dc2626", sl: "#7c3aed"};

  function charts() {
    var el = document.getElementById("queue-report");
    if (!el || !window.Chart) { return; }
    var report = JSON.parse(el.textContent);
    Chart.defaults.animation = false;
    Chart.defaults.maintainAspectRatio = false;
    function draw(id, config) {
      var canvas = document.getElementById(id);
      if (!canvas) { return; }
      new Chart(canvas, config);
      canvas.dataset.drawn = "1";
    }
    function series(rows) {
      return ["offered", "answered", "abandoned"].map(function (f) {
        return {label: f, data: rows.map(function (r) { return r[f]; }), backgroundColor: colors[f]};
      });
    }
    draw("chart-days", {type: "bar", data: {labels: report.days.map(function (d) { return d.day; }),
      datasets: series(report.days)}, options: {scales: {y: {beginAtZero: true, ticks: {precision: 0}}}}});
    draw("chart-hours", {type: "bar", data: {labels: report.hours.map(function (h) { return h.hour + ":00"; }),
      datasets: series(report.hours)}, options: {scales: {y: {beginAtZero: true, ticks: {precision: 0}}}}});
    draw("chart-sl", {type: "bar", data: {labels: report.queues.map(function (q) { return q.queue + " " + q.name; }),
      datasets: [{label: "service level %", backgroundColor: colors.sl,
        data: report.queues.map(function (q) { return q.service_level === null ? 0 : Math.round(q.service_level * 100); })}]},
      options: {plugins: {legend: {display: false}}, scales: {y: {beginAtZero: true, max: 100}}}});
    draw("chart-agents", {type: "bar", data: {labels: report.agents.map(function (a) { return a.agent + " " + a.name; }),
      datasets: [{label: "answered", backgroundColor: colors.answered, data: report.agents.map(function (a) { return a.answered; })},
                 {label: "not answered", backgroundColor: colors.abandoned, data: report.agents.map(function (a) { return a.not_answered; })}]},
      options: {indexAxis: "y", scales: {x: {beginAtZero: true, ticks: {precision: 0}}}}});
  }

  // "42 s", "3 min 5 s": the words of webui/timefmt.py
  function duration(seconds) {
    var s = Math.max(0, Math.floor(seconds));
    if (s < 60) { return s + " s"; }
    if (s < 3600) { return Math.floor(s / 60) + " min " + (s % 60) + " s"; }
    return Math.floor(s / 3600) + " h " + Math.floor((s % 3600) / 60) + " min";
  }

  function node(tag, cls, text) {
    var e = document.createElement(tag);
    if (cls) { e.className = cls; }
    if (text !== undefined) { e.textContent = text; }
    return e;
  }

  function figure(value, label, cls) {
    var f = node("div", "figure" + (cls ? " " + cls : ""));
    f.appendChild(node("span", "value", value));
    f.appendChild(node("span", "label", label));
    return f;
  }

  function wallboard() {
    var root = document.getElementById("wallboard");
    if (!root || !window.EventSource) { return; }
    var list = document.getElementById("wb-queues");
    var clock = document.getElementById("wb-clock");
    var received = 0, base = null;

    function render(s) {
      list.textContent = "";
      base = s; received = Date.now();
      if (!s.running) {
        list.appendChild(node("p", "down", "PBX not running" + (s.reason ? " (" + s.reason + ")" : "")));
      }
      (s.queues || []).forEach(function (q) {
        var card = node("section", "queue");
        card.id = "wb-queue-" + q.number;
        card.dataset.waiting = q.waiting;
        card.appendChild(node("h2", "", q.number + " " + q.name));
        var figs = node("div", "figures");
        figs.appendChild(figure(String(q.waiting), "waiting", q.waiting > 0 ? "alert" : ""));
        var longest = figure(duration(q.longest_wait), "longest wait", q.longest_wait >= q.service_level_s ? "alert" : "");
        longest.querySelector(".value").dataset.wait = q.longest_wait;
        longest.querySelector(".value").dataset.waiting = q.waiting;
        figs.appendChild(longest);
        var sl = q.service_level === null || q.service_level === undefined ? "–" : Math.round(q.service_level * 100) + " %";
        figs.appendChild(figure(sl, "answered in " + q.service_level_s + " s today",
                                q.service_level !== null && q.service_level >= 0.8 ? "good" : ""));
        figs.appendChild(figure(q.answered + " / " + q.offered, "answered today"));
        card.appendChild(figs);
        var agents = node("ul", "agents");
        (q.agents || []).forEach(function (a) {
          var li = node("li", "agent " + a.state, a.extension + (a.name ? " " + a.name : "") + " · " + a.label +
                        (a.reason ? " (" + a.reason + ")" : "") + (a.state === "wrap_up" && a.wrap_up_left ? " " + a.wrap_up_left + " s" : ""));
          li.dataset.extension = a.extension;
          li.dataset.state = a.state;
          agents.appendChild(li);
        });
        if (!(q.agents || []).length) { agents.appendChild(node("li", "agent logged_out", "no agents logged in")); }
        card.appendChild(agents);
        list.appendChild(card);
      });
      tick();
    }

    function tick() {
      clock.textContent = new Date().toLocaleTimeString();
      if (!base) { return; }
      var extra = (Date.now() - received) / 1000;
      document.querySelectorAll("#wb-queues .value[data-wait]").forEach(function (v) {
        if (parseInt(v.dataset.waiting, 10) > 0) { v.textContent = duration(parseFloat(v.dataset.wait) + extra); }
      });
    }
    setInterval(tick, 1000);
    var source = new EventSource(root.dataset.stream);
    source.addEventListener("queues", function (ev) { render(JSON.parse(ev.data)); root.dataset.live = "1"; });
  }

  charts();
  wallboard();
})();
