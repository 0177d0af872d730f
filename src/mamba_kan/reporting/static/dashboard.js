// The dashboard's task/variant filters: hide unselected blocks and the variant's plotly traces.
(function () {
  var VARIANTS = window.MK_VARIANTS || [];
  function selected(kind) {
    var out = new Set();
    document.querySelectorAll('input[data-filter="' + kind + '"]').forEach(function (el) {
      if (el.checked) { out.add(el.value); }
    });
    return out;
  }
  function apply() {
    var tasks = selected('task'), variants = selected('variant');
    document.querySelectorAll('[data-task],[data-variant]').forEach(function (el) {
      var t = el.getAttribute('data-task'), v = el.getAttribute('data-variant');
      var hide = (t !== null && !tasks.has(t)) || (v !== null && !variants.has(v));
      el.classList.toggle('filtered', hide);
    });
    if (!window.Plotly) { return; }
    document.querySelectorAll('.plotly-graph-div').forEach(function (div) {
      if (!div.data || div.offsetParent === null) { return; }
      var vis = div.data.map(function (tr) {
        return (tr.legendgroup && VARIANTS.indexOf(tr.legendgroup) >= 0) ? variants.has(tr.legendgroup) : true;
      });
      window.Plotly.restyle(div, {visible: vis});
      window.Plotly.Plots.resize(div);
    });
  }
  document.querySelectorAll('input[data-filter]').forEach(function (el) { el.addEventListener('change', apply); });
  document.querySelectorAll('button[data-select]').forEach(function (btn) {
    btn.addEventListener('click', function () {
      var kind = btn.getAttribute('data-select'), on = btn.getAttribute('data-state') === 'all';
      document.querySelectorAll('input[data-filter="' + kind + '"]').forEach(function (el) { el.checked = on; });
      apply();
    });
  });
})();
