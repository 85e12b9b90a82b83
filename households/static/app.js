// The small script layer: the live figures (Server-Sent Events) and the charts (uPlot).
// Every page works without it; it only adds the live updates and the drawn charts.
(function () {
  "use strict";
  window.quartierCharts = {};

  function width(el) { return Math.max(280, el.clientWidth || 320); }

  function liveSection() {
    var section = document.querySelector("[data-live-url]");
    if (!section || !window.EventSource) return;
    var el = document.getElementById("live-chart");
    var times = [], powers = [];
    var chart = null;
    if (window.uPlot && el) {
      chart = new uPlot({ width: width(el), height: 200, series: [{}, { label: "VA", stroke: "#0b5394" }],
                          axes: [{}, { label: "VA" }] }, [times, powers], el);
      window.quartierCharts.live = chart;
    }
    var source = new EventSource(section.getAttribute("data-live-url"));
    window.quartierLiveEvents = 0;
    source.addEventListener("reading", function (event) {
      var d = JSON.parse(event.data);
      window.quartierLiveEvents += 1;
      section.querySelectorAll("[data-field]").forEach(function (node) {
        var key = node.getAttribute("data-field");
        if (d[key] === null || d[key] === undefined) return;
        node.textContent = key === "eur_per_hour" ? d[key].toFixed(2) : String(d[key]);
      });
      if (chart) {
        times.push(d.meter_time_ms / 1000); powers.push(d.power_va);
        if (times.length > 300) { times.shift(); powers.shift(); }
        chart.setData([times, powers]);
      }
    });
  }

  function consumptionChart() {
    var el = document.getElementById("consumption-chart");
    var data = document.getElementById("consumption-data");
    if (!el || !data || !window.uPlot) return;
    var chart = JSON.parse(data.textContent);
    var xs = chart.points.map(function (p) { return p.start_ms / 1000; });
    var ys = chart.points.map(function (p) { return p.value; });
    var unit = el.getAttribute("data-unit") === "eur" ? "€" : "kWh";
    window.quartierCharts.consumption = new uPlot({
      width: width(el), height: 240,
      series: [{}, { label: unit, stroke: "#0b5394", fill: "rgba(11,83,148,.15)" }], axes: [{}, { label: unit }],
    }, [xs, ys], el);
  }

  document.addEventListener("DOMContentLoaded", function () { liveSection(); consumptionChart(); });
})();
