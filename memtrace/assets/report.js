// memtrace's HTML report: draws the trace embedded as TRACE with Chart.js
// (assets/chartjs). When done it records what it drew on <body>
// (data-rendered, data-series) and any script error (data-error), which the
// headless-browser test reads.
(function () {
  'use strict';
  var done = { rendered: [], series: [] };
  window.addEventListener('error', function (e) {
    document.body.dataset.error = String(e.message || e);
  });

  function fmt(b) {
    if (b === null || b === undefined) return '-';
    var units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
    var v = Math.abs(b), i = 0;
    while (v >= 1024 && i < units.length - 1) { v /= 1024; i++; }
    return (b < 0 ? '-' : '') + v.toFixed(1) + ' ' + units[i];
  }

  function signed(b) {
    return (b > 0 ? '+' : '') + fmt(b);
  }

  function el(tag, text, cls) {
    var e = document.createElement(tag);
    if (text !== undefined) e.textContent = text;
    if (cls) e.className = cls;
    return e;
  }

  // Memory over time, phases shaded behind the lines.
  function timeline() {
    var samples = (TRACE.timeline && TRACE.timeline.samples) || [];
    if (!samples.length) {
      document.getElementById('timeline-note').textContent = 'No timeline samples in this trace.';
      return;
    }
    var series = [
      ['RSS file (kernel truth)', function (s) { return s.rss_file_bytes; }, '#1f77b4'],
      ['RSS anon (kernel truth)', function (s) { return s.rss_anon_bytes; }, '#ff7f0e'],
      ['RSS shmem (kernel truth)', function (s) { return s.rss_shmem_bytes; }, '#2ca02c'],
      ['heap live (measured)', function (s) { return s.heap_live_bytes; }, '#d62728']
    ];
    var phases = TRACE.phases || [];
    var shade = {
      id: 'phases',
      beforeDatasetsDraw: function (chart) {
        var ctx = chart.ctx, area = chart.chartArea, x = chart.scales.x;
        ctx.save();
        phases.forEach(function (p, i) {
          var x0 = Math.max(area.left, x.getPixelForValue(p.start_s));
          var x1 = Math.min(area.right, x.getPixelForValue(p.end_s));
          ctx.fillStyle = i % 2 ? 'rgba(90, 90, 160, 0.10)' : 'rgba(90, 160, 90, 0.12)';
          ctx.fillRect(x0, area.top, Math.max(1, x1 - x0), area.bottom - area.top);
          ctx.fillStyle = '#444';
          ctx.fillText(p.name, x0 + 2, area.top + 10 + 11 * (p.depth || 0));
        });
        ctx.restore();
      }
    };
    var datasets = series.map(function (s) {
      var points = samples
        .filter(function (x) { return s[1](x) !== null && s[1](x) !== undefined; })
        .map(function (x) { return { x: x.t_s, y: s[1](x) }; });
      return { label: s[0], data: points, borderColor: s[2], backgroundColor: s[2], pointRadius: 0, borderWidth: 1.5 };
    }).filter(function (d) { return d.data.length > 0; });
    new Chart(document.getElementById('timeline'), {
      type: 'line',
      data: { datasets: datasets },
      options: {
        animation: false,
        maintainAspectRatio: false,
        scales: {
          x: { type: 'linear', title: { display: true, text: 'seconds since tracing started' } },
          y: { ticks: { callback: function (v) { return fmt(v); } } }
        },
        plugins: { tooltip: { callbacks: { label: function (c) { return c.dataset.label + ': ' + fmt(c.parsed.y); } } } }
      },
      plugins: [shade]
    });
    datasets.forEach(function (d) { done.series.push(d.label); });
    done.rendered.push('timeline');
  }

  // Per file: the usual estimates beside what memtrace measured.
  function files() {
    var table = document.getElementById('files');
    var head = ['file', 'size', 'loaded (measured)', 'resident at end (smaps)', 'estimate 80 %', 'error', 'estimate RSS growth', 'error'];
    var tr = el('tr');
    head.forEach(function (h) { tr.appendChild(el('th', h)); });
    table.appendChild(tr);
    var rows = (TRACE.files || []).slice().sort(function (a, b) { return b.measured_loaded_bytes - a.measured_loaded_bytes; });
    rows.slice(0, 30).forEach(function (f) {
      var e = f.estimates || {};
      var r = el('tr');
      [f.path, fmt(f.size_bytes), fmt(f.measured_loaded_bytes), fmt(f.kernel_rss_bytes), fmt(e.fixed_ratio_bytes),
        signed(e.fixed_ratio_error_bytes), fmt(e.rss_growth_bytes), signed(e.rss_growth_error_bytes)]
        .forEach(function (v, i) { r.appendChild(el('td', v, i ? 'num' : '')); });
      table.appendChild(r);
    });
    done.rendered.push('files');
  }

  // Anonymous memory by origin: measured beside smaps, with who made it.
  function anon() {
    var a = TRACE.anon;
    if (!a || !(a.origins || []).length) {
      document.getElementById('anon-note').textContent = 'No anonymous memory by origin in this trace.';
      done.rendered.push('anon');
      return;
    }
    var table = document.getElementById('anon');
    var tr = el('tr');
    ['origin', 'resident (measured)', 'peak (measured)', 'smaps at stop', 'mmaps', 'made by'].forEach(function (h) { tr.appendChild(el('th', h)); });
    table.appendChild(tr);
    a.origins.forEach(function (o) {
      var r = el('tr');
      var by = (o.stack || []).slice(0, 4).map(function (f) {
        return f.function || ((f.module || '?').split('/').pop() + '+0x' + (f.offset || 0).toString(16));
      }).join(' \u2190 ');
      [o.origin, fmt(o.rss_bytes), fmt(o.peak_rss_bytes), o.kernel_anon_bytes === null ? '-' : fmt(o.kernel_anon_bytes), String(o.mappings), by]
        .forEach(function (v, i) { r.appendChild(el('td', v, i > 0 && i < 5 ? 'num' : '')); });
      table.appendChild(r);
    });
    done.rendered.push('anon');
  }

  // Leak stacks as a flame graph: outermost frame at the bottom, widths in
  // bytes, drawn as floating bars (one row per stack depth).
  function flame() {
    var leaks = TRACE.leaks || [];
    if (!leaks.length) {
      document.getElementById('flame-note').textContent = 'No leak candidates in this trace.';
      return;
    }
    var root = { name: 'all leak candidates', value: 0, children: {} };
    leaks.forEach(function (l) {
      root.value += l.bytes;
      var node = root;
      l.stack.slice().reverse().forEach(function (f) {
        var name = f.function || ((f.module || '?') + '+0x' + (f.offset || 0).toString(16));
        if (!node.children[name]) node.children[name] = { name: name, value: 0, children: {} };
        node = node.children[name];
        node.value += l.bytes;
      });
    });
    var bars = [], depthMax = 0;
    (function lay(node, x0, depth) {
      bars.push({ x: [x0, x0 + node.value], y: String(depth), name: node.name, bytes: node.value });
      depthMax = Math.max(depthMax, depth);
      var x = x0;
      Object.keys(node.children).sort().forEach(function (k) {
        lay(node.children[k], x, depth + 1);
        x += node.children[k].value;
      });
    })(root, 0, 0);
    var labels = [];
    for (var d = depthMax; d >= 0; d--) labels.push(String(d));
    // Each frame's name inside its bar, where it fits.
    var names = {
      id: 'frameNames',
      afterDatasetsDraw: function (chart) {
        var ctx = chart.ctx;
        ctx.save();
        ctx.fillStyle = '#222';
        ctx.font = '11px sans-serif';
        ctx.textBaseline = 'middle';
        chart.getDatasetMeta(0).data.forEach(function (bar, i) {
          var left = Math.min(bar.x, bar.base), width = Math.abs(bar.x - bar.base);
          var text = bars[i].name;
          if (width < 30) return;
          while (text.length > 3 && ctx.measureText(text).width > width - 6) text = text.slice(0, -2);
          ctx.fillText(text, left + 3, bar.y);
        });
        ctx.restore();
      }
    };
    var canvas = document.getElementById('flame');
    canvas.parentNode.style.height = Math.max(200, 22 * (depthMax + 1)) + 'px';
    new Chart(canvas, {
      type: 'bar',
      data: {
        labels: labels,
        datasets: [{
          label: 'bytes live at the stop',
          data: bars,
          backgroundColor: bars.map(function (b, i) { return 'hsl(' + (20 + (i * 37) % 40) + ', 85%, ' + (55 + (i % 3) * 6) + '%)'; }),
          borderColor: '#fff',
          borderWidth: 1,
          grouped: false,
          barPercentage: 1,
          categoryPercentage: 0.95
        }]
      },
      options: {
        indexAxis: 'y',
        animation: false,
        maintainAspectRatio: false,
        scales: { x: { min: 0, max: root.value, ticks: { callback: function (v) { return fmt(v); } } }, y: { ticks: { display: false } } },
        plugins: {
          legend: { display: false },
          tooltip: { callbacks: { label: function (c) { var b = c.raw; return b.name + ': ' + fmt(b.bytes); } } }
        }
      },
      plugins: [names]
    });
    done.series.push('leak flame graph');
    done.rendered.push('flame');
  }

  [timeline, files, anon, flame].forEach(function (part) {
    try { part(); } catch (e) { document.body.dataset.error = part.name + ': ' + e; }
  });
  document.body.dataset.rendered = done.rendered.join(',');
  document.body.dataset.series = done.series.join('|');
})();
