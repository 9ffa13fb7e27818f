// Mail page: the outbox table follows the sender (queued -> retrying -> sent) without a reload.
(function () {
  "use strict";
  var card = document.getElementById("outbox-card");
  if (!card || !window.fetch) { return; }
  var body = document.querySelector("#outbox tbody");
  var token = document.querySelector("#mail-test input[name=csrf_token]");

  function td(label, text, cls) {
    var el = document.createElement("td");
    if (label) { el.dataset.label = label; }
    if (cls) { el.className = cls; }
    el.textContent = text;
    return el;
  }

  function retryForm(id) {
    var form = document.createElement("form");
    form.method = "post"; form.className = "inline";
    form.action = card.dataset.poll.replace(/messages\.json$/, encodeURIComponent(id) + "/retry");
    var t = document.createElement("input");
    t.type = "hidden"; t.name = "csrf_token"; t.value = token ? token.value : "";
    var b = document.createElement("button");
    b.type = "submit"; b.className = "secondary"; b.textContent = "Retry now";
    form.appendChild(t); form.appendChild(b);
    return form;
  }

  function row(m) {
    var tr = document.createElement("tr");
    tr.id = "m-" + m.id; tr.dataset.id = m.id; tr.dataset.state = m.state;
    tr.appendChild(td("", m.created, "nowrap"));
    tr.appendChild(td("To", m.to));
    var subject = td("Subject", m.subject);
    if (m.ref) {
      var ref = document.createElement("span"); ref.className = "hint"; ref.textContent = " (" + m.ref + ")";
      subject.appendChild(ref);
    }
    tr.appendChild(subject);
    var state = td("State", ""), span = document.createElement("span");
    span.className = "state " + m.state_class; span.textContent = m.state;
    state.appendChild(span); tr.appendChild(state);
    tr.appendChild(td("Tries", String(m.attempts)));
    tr.appendChild(td("Why", m.why, "why"));
    tr.appendChild(td("Sent", m.sent_at, "nowrap"));
    var action = td("", "", "nowrap");
    if (m.can_retry) { action.appendChild(retryForm(m.id)); }
    tr.appendChild(action);
    return tr;
  }

  function render(data) {
    var s = data.summary;
    document.getElementById("mail-summary").textContent =
      s.queued + " queued · " + s.retrying + " retrying · " + s.failed + " failed in the last week.";
    body.textContent = "";
    if (!data.messages.length) {
      var tr = document.createElement("tr"), cell = td("", "No messages yet.");
      cell.colSpan = 8; tr.appendChild(cell); body.appendChild(tr);
    }
    data.messages.forEach(function (m) { body.appendChild(row(m)); });
    card.dataset.live = "1";
  }

  var last = null;
  function poll() {
    fetch(card.dataset.poll, {credentials: "same-origin", headers: {"Accept": "application/json"}})
      .then(function (r) { return r.ok ? r.text() : null; })
      .then(function (text) {
        if (text !== null && text !== last) { last = text; render(JSON.parse(text)); }
      })
      .catch(function () { /* the next poll tries again */ })
      .then(function () { setTimeout(poll, 1500); });
  }
  poll();
})();
