// Parking page: refresh the slots table every 2 s from /parking/slots.json (no page reload).
(function () {
  const table = document.getElementById('slots');
  if (!table) return;
  function fmt(s) { const m = Math.floor(s / 60); return m ? `${m} min ${s % 60} s` : `${s} s`; }
  async function tick() {
    try {
      const r = await fetch(table.dataset.src, {headers: {Accept: 'application/json'}});
      if (!r.ok) return;
      const parked = Object.fromEntries((await r.json()).parked.map(p => [p.slot, p]));
      for (const row of table.querySelectorAll('tbody tr[data-slot]')) {
        const p = parked[row.dataset.slot];
        row.classList.toggle('busy', !!p);
        row.querySelector('.who').textContent = p ? `${p.name ? p.name + ' ' : ''}${p.caller}` : 'free';
        row.querySelector('.by').textContent = p ? (p.parker || '—') : '';
        row.querySelector('.for').textContent = p ? fmt(p.seconds) : '';
      }
      document.getElementById('parked-count').textContent = Object.keys(parked).length;
    } catch (e) { /* the next tick tries again */ }
  }
  setInterval(tick, 2000);
})();
