// Reports: draw the charts from the report JSON in #report-data with Chart.js (served from the box).
(function () {
  "use strict";
  var el = document.getElementById("report-data");
  if (!el || !window.Chart) { return; }
  var report = JSON.parse(el.textContent);
  var printing = document.body.classList.contains("print");
  var colors = ["#2563eb", "#16a34a", "#d97706", "#dc2626", "#7c3aed", "#0891b2", "#db2777", "#65a30d", "#475569", "#ea580c"];
  Chart.defaults.animation = false;          // charts are ready when drawn (and print as they look)
  Chart.defaults.maintainAspectRatio = false;
  var currency = report.currency ? " (" + report.currency + ")" : "";

  function num(v) { return parseFloat(v); }
  function draw(id, config) {
    var canvas = document.getElementById(id);
    if (!canvas) { return; }
    new Chart(canvas, config);
    canvas.dataset.drawn = "1";
  }
  function bar(id, rows, field, label, horizontal) {
    var top = rows.slice(0, 12);
    draw(id, {type: "bar", data: {labels: top.map(function (r) { return r.key + (r.name ? " " + r.name : ""); }),
      datasets: [{label: label, data: top.map(function (r) { return num(r[field]); }), backgroundColor: colors[0]}]},
      options: {indexAxis: horizontal ? "y" : "x", plugins: {legend: {display: false}}}});
  }

  draw("chart-periods", {type: "bar", data: {labels: report.periods.map(function (p) { return p.key; }),
    datasets: [
      {type: "bar", label: "Cost" + currency, data: report.periods.map(function (p) { return num(p.cost); }),
       backgroundColor: colors[0], yAxisID: "cost"},
      {type: "line", label: "Calls", data: report.periods.map(function (p) { return p.calls; }),
       borderColor: colors[2], backgroundColor: colors[2], yAxisID: "calls", pointRadius: 2}]},
    options: {scales: {cost: {position: "left", beginAtZero: true, title: {display: true, text: "Cost" + currency}},
                       calls: {position: "right", beginAtZero: true, grid: {drawOnChartArea: false},
                               title: {display: true, text: "Calls"}}}}});
  bar("chart-extensions", report.extensions, "cost", "Cost" + currency, true);
  bar("chart-departments", report.departments || [], "cost", "Cost" + currency, true);
  var types = report.dest_types.filter(function (t) { return num(t.cost) > 0; });
  draw("chart-dest-types", {type: "doughnut", data: {labels: types.map(function (t) { return t.key; }),
    datasets: [{data: types.map(function (t) { return num(t.cost); }), backgroundColor: colors}]},
    options: {plugins: {legend: {position: "right"}}}});
  bar("chart-trunks", report.trunks, "calls", "Calls", false);
  draw("chart-hours", {type: "bar", data: {labels: report.hours.map(function (h) { return h.key; }),
    datasets: [{label: "Calls", data: report.hours.map(function (h) { return h.calls; }), backgroundColor: colors[1]}]},
    options: {plugins: {legend: {display: false}}}});
  document.body.dataset.chartsReady = "1";
  if (printing && window.matchMedia) { window.addEventListener("beforeprint", function () {
    Object.values(Chart.instances).forEach(function (c) { c.resize(); });
  }); }
})();
