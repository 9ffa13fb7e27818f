/* Browser phone (webui/phone): JsSIP registers as the extension over the edge's WebSocket and
   makes/takes calls; media is DTLS-SRTP to the box's rtpengine. No inline script (CSP). */
(function () {
  'use strict';
  var root = document.getElementById('phone-app');
  if (!root) return;
  var $ = function (id) { return document.getElementById(id); };
  var ext = root.dataset.ext;
  var HISTORY_KEY = 'pbx-phone-history-' + ext;
  var ua = null, session = null, held = false, muted = false, timer = null, ringer = null;
  var MEDIA = { audio: true, video: false };
  var PC = { iceServers: [] };   // the box and the browser share a LAN: no STUN/TURN

  function setState(el, text, cls) {
    el.textContent = text;
    el.className = 'state' + (cls ? ' ' + cls : '');
  }
  function note(text, bad) {
    var n = $('phone-note');
    n.textContent = text;
    n.className = bad ? 'phone-error' : 'hint';
  }

  // ----- call history, in this browser only ----------------------------------
  function history() {
    try { return JSON.parse(localStorage.getItem(HISTORY_KEY)) || []; } catch (e) { return []; }
  }
  function remember(entry) {
    var list = history();
    list.unshift(entry);
    localStorage.setItem(HISTORY_KEY, JSON.stringify(list.slice(0, 50)));
    showHistory();
  }
  function showHistory() {
    var body = $('history').tBodies[0];
    body.textContent = '';
    if (!history().length) {
      var empty = document.createElement('tr'), cell = document.createElement('td');
      cell.colSpan = 4;
      cell.className = 'hint';
      cell.textContent = 'No calls yet.';
      empty.appendChild(cell);
      body.appendChild(empty);
    }
    history().slice(0, 20).forEach(function (h) {
      var tr = document.createElement('tr');
      [new Date(h.at).toLocaleString(), (h.dir === 'in' ? '← ' : '→ ') + h.peer, h.result,
       h.seconds ? fmt(h.seconds) : ''].forEach(function (text, i) {
        var td = document.createElement('td');
        td.setAttribute('data-label', ['When', 'Call', 'Result', 'Time'][i]);
        td.textContent = text;
        tr.appendChild(td);
      });
      tr.addEventListener('click', function () { $('phone-number').value = h.number; });
      body.appendChild(tr);
    });
  }
  function fmt(s) {
    s = Math.round(s);
    return Math.floor(s / 60) + ':' + ('0' + (s % 60)).slice(-2);
  }

  // ----- ringing: a UK double ring made by WebAudio (no sound file) ---------
  function startRinging() {
    stopRinging();
    try {
      var ctx = new (window.AudioContext || window.webkitAudioContext)();
      var gain = ctx.createGain();
      gain.gain.value = 0;
      gain.connect(ctx.destination);
      [400, 450].forEach(function (f) {
        var o = ctx.createOscillator();
        o.frequency.value = f;
        o.connect(gain);
        o.start();
      });
      var t = ctx.currentTime;
      for (var i = 0; i < 20; i++) {                 // 0.4 on 0.2 off 0.4 on 2.0 off, a minute
        var c = t + i * 3;
        gain.gain.setValueAtTime(0.15, c); gain.gain.setValueAtTime(0, c + 0.4);
        gain.gain.setValueAtTime(0.15, c + 0.6); gain.gain.setValueAtTime(0, c + 1.0);
      }
      ringer = ctx;
    } catch (e) { ringer = null; }
    $('incoming').classList.add('ringing');
  }
  function stopRinging() {
    if (ringer) { ringer.close(); ringer = null; }
    $('incoming').classList.remove('ringing');
  }

  // ----- one call at a time ---------------------------------------------------
  function peerOf(s) {
    var id = s.remote_identity;
    var number = id && id.uri ? id.uri.user : '';
    var name = id && id.display_name ? id.display_name : '';
    return { number: number, label: name && name !== number ? name + ' (' + number + ')' : number };
  }

  function attachAudio(pc) {
    var audio = $('remote-audio');
    pc.addEventListener('track', function (ev) {
      audio.srcObject = ev.streams && ev.streams[0] ? ev.streams[0] : new MediaStream([ev.track]);
      var p = audio.play();
      if (p && p.catch) p.catch(function () { note('Click anywhere on the page to hear the call.', false); });
    });
  }

  function track(s, dir) {
    session = s;
    held = false; muted = false;
    var peer = peerOf(s);
    var began = 0, answered = false;
    $('call-peer').textContent = peer.label;
    $('hold-btn').textContent = 'Hold';
    $('mute-btn').textContent = 'Mute';
    $('call-panel').hidden = dir === 'in';
    setState($('call-state'), dir === 'in' ? 'ringing' : 'calling', 'off');
    if (s.connection) attachAudio(s.connection);
    s.on('peerconnection', function (e) { attachAudio(e.peerconnection); });
    s.on('progress', function () { if (dir === 'out') setState($('call-state'), 'ringing', 'off'); });
    s.on('accepted', function () {
      answered = true;
      began = Date.now();
      stopRinging();
      $('incoming').hidden = true;
      $('call-panel').hidden = false;
      setState($('call-state'), 'connected', 'ok');
      timer = setInterval(function () { $('call-timer').textContent = fmt((Date.now() - began) / 1000); }, 500);
    });
    s.on('hold', function () { setState($('call-state'), 'on hold', 'off'); });
    s.on('unhold', function () { setState($('call-state'), 'connected', 'ok'); });
    function done(e, result) {
      stopRinging();
      clearInterval(timer);
      $('call-timer').textContent = '0:00';
      $('incoming').hidden = true;
      $('call-panel').hidden = true;
      session = null;
      var cause = e && e.cause ? e.cause : '';
      remember({ at: Date.now(), dir: dir, number: peer.number, peer: peer.label,
                 result: result || (answered ? 'answered' : (dir === 'in' ? 'missed' : cause.toLowerCase() || 'failed')),
                 seconds: answered ? (Date.now() - began) / 1000 : 0 });
      note(answered ? 'Call ended.' : 'Call ended: ' + (cause || 'no answer') + '.', false);
    }
    s.on('ended', function (e) { done(e); });
    s.on('failed', function (e) {
      var cause = e && e.cause ? e.cause : '';
      done(e, dir === 'in' && cause === JsSIP.C.causes.REJECTED ? 'declined'
               : (dir === 'in' && cause === JsSIP.C.causes.CANCELED ? 'missed' : null));
    });
  }

  function call(number) {
    number = (number || '').replace(/[\s()-]/g, '');
    if (!/^[0-9*#+]{1,32}$/.test(number)) { note('Type a number to call (digits, * and #).', true); return; }
    if (!ua || !ua.isRegistered()) { note('Not registered yet: wait for "registered".', true); return; }
    if (session) { note('Hang up the current call first.', true); return; }
    var target = 'sip:' + number + '@' + ua.configuration.uri.host;
    track(ua.call(target, { mediaConstraints: MEDIA, pcConfig: PC, sessionTimersExpires: 1800 }), 'out');
  }

  // ----- controls ------------------------------------------------------------
  $('dial-form').addEventListener('submit', function (e) { e.preventDefault(); call($('phone-number').value); });
  $('keypad').addEventListener('click', function (e) {
    var key = e.target && e.target.dataset ? e.target.dataset.key : null;
    if (!key) return;
    if (session && session.isEstablished()) {
      session.sendDTMF(key, { transportType: 'RFC2833', duration: 160, interToneGap: 80 });
      note('Sent ' + key, false);
    } else {
      $('phone-number').value += key;
    }
  });
  $('hangup-btn').addEventListener('click', function () { if (session) session.terminate(); });
  $('hold-btn').addEventListener('click', function () {
    if (!session || !session.isEstablished()) return;
    if (held) { session.unhold(); $('hold-btn').textContent = 'Hold'; }
    else { session.hold(); $('hold-btn').textContent = 'Resume'; }
    held = !held;
  });
  $('mute-btn').addEventListener('click', function () {
    if (!session || !session.isEstablished()) return;
    if (muted) { session.unmute({ audio: true }); $('mute-btn').textContent = 'Mute'; }
    else { session.mute({ audio: true }); $('mute-btn').textContent = 'Unmute'; }
    muted = !muted;
  });
  $('transfer-form').addEventListener('submit', function (e) {
    e.preventDefault();
    var number = $('transfer-to').value.replace(/[\s()-]/g, '');
    if (!session || !session.isEstablished() || !/^[0-9*#+]{1,32}$/.test(number)) {
      note('Type the number to transfer to.', true);
      return;
    }
    session.refer('sip:' + number + '@' + ua.configuration.uri.host, {
      eventHandlers: {
        accepted: function () { note('Transferred to ' + number + '.', false); },
        failed: function () { note('Transfer to ' + number + ' failed.', true); }
      }
    });
  });
  $('answer-btn').addEventListener('click', function () {
    if (session && !session.isEstablished()) session.answer({ mediaConstraints: MEDIA, pcConfig: PC });
  });
  $('decline-btn').addEventListener('click', function () {
    if (session && !session.isEstablished()) session.terminate({ status_code: 486, reason_phrase: 'Busy Here' });
  });
  $('history-clear').addEventListener('click', function () { localStorage.removeItem(HISTORY_KEY); showHistory(); });

  // ----- registration ---------------------------------------------------------
  function start() {
    if (!window.isSecureContext || !navigator.mediaDevices) {
      setState($('phone-state'), 'unavailable', 'bad');
      note('The browser allows the microphone only on HTTPS pages (or http://localhost): open the box over https://.', true);
      return;
    }
    if (!window.JsSIP) { setState($('phone-state'), 'unavailable', 'bad'); note('The SIP library did not load.', true); return; }
    var body = new URLSearchParams({ ext: ext });
    fetch(root.dataset.credentials, {
      method: 'POST', credentials: 'same-origin', body: body,
      headers: { 'X-CSRF-Token': root.dataset.csrf }
    }).then(function (r) {
      return r.json().then(function (j) { if (!r.ok) throw new Error(j.error || r.statusText); return j; });
    }).then(function (c) {
      ua = new JsSIP.UA({
        sockets: [new JsSIP.WebSocketInterface(c.ws_url)], uri: c.uri, authorization_user: c.user,
        password: c.password, display_name: c.name, register: true, register_expires: 600,
        session_timers: false, user_agent: 'OfficePBX browser phone (JsSIP ' + JsSIP.version + ')'
      });
      ua.on('connecting', function () { setState($('phone-state'), 'connecting', 'off'); });
      ua.on('disconnected', function () { setState($('phone-state'), 'disconnected', 'bad');
        note('No connection to the box (' + c.ws_url + '): it retries on its own. Away from the office, connect its VPN first.', true); });
      ua.on('registered', function () { setState($('phone-state'), 'registered', 'ok'); note('Ready: type a number or wait for a call.', false); });
      ua.on('unregistered', function () { setState($('phone-state'), 'not registered', 'off'); });
      ua.on('registrationFailed', function (e) { setState($('phone-state'), 'refused', 'bad');
        note('Registration refused (' + (e.cause || 'error') + ').', true); });
      ua.on('newRTCSession', function (e) {
        if (e.originator !== 'remote') return;
        if (session) { e.session.terminate({ status_code: 486, reason_phrase: 'Busy Here' }); return; }
        track(e.session, 'in');
        $('incoming-from').textContent = peerOf(e.session).label;
        $('incoming').hidden = false;
        startRinging();
      });
      ua.start();
    }).catch(function (err) {
      setState($('phone-state'), 'unavailable', 'bad');
      note(err.message, true);
    });
  }
  window.addEventListener('beforeunload', function () { if (ua) ua.stop(); });

  // For the page's own tests and for support: what the current call is receiving and sending.
  window.pbxPhone = {
    stats: function () {
      if (!session || !session.connection) return Promise.resolve(null);
      return session.connection.getStats().then(function (report) {
        var out = {};
        report.forEach(function (s) {
          if (s.type === 'inbound-rtp' && s.kind === 'audio') {
            out.packetsReceived = s.packetsReceived; out.audioLevel = s.audioLevel;
            out.totalAudioEnergy = s.totalAudioEnergy;
          }
          if (s.type === 'outbound-rtp' && s.kind === 'audio') out.packetsSent = s.packetsSent;
          if (s.type === 'codec' && s.mimeType) out.codecs = (out.codecs || []).concat([s.mimeType]);
        });
        return out;
      });
    },
    state: function () { return session ? (session.isEstablished() ? 'connected' : 'ringing') : 'idle'; }
  };

  showHistory();
  start();
})();
