// M1Events.js: sends a website's visitor events to an m1lite (MinusOneDB-compatible) server.
// No dependencies (no jQuery). instrumentation.js configures it; the server's one-tag /m1.js
// is this file plus a few lines that read the <script> tag's data-* attributes.
//
// M1Events.start({url, user, password | token, heartbeatMs, sessionStore, async}) returns a
// tracker with event(type, data), view(), flush() and sessionId(). From then on it sends:
//   sessionStart  once per visitor session (the session lives in sessionStorage: it is kept
//                 across the tab's page loads and ends after 30 idle minutes),
//   view          on every page view, history-API navigation (pushState, replaceState,
//                 popstate) included; a change of the #fragment alone is not a view,
//   heartbeat     every heartbeatMs while the page is visible: upserted into the session
//                 store when one is named, else sent as an event like the others.
// Each event: {type, event: {id, time, type, data}, session: {id, start}, user: {id},
// url: {href, host, path, query, hash}, page: {title, referrer}, screen, language}.
//
// Delivery: events wait in a queue (at most 500; the oldest go first, counted in the next
// batch's event.dropped) and leave in batches once 10 are waiting or a second has passed.
// A batch that got no answer at all (server down, network gone) is sent again later, with
// exponential backoff from 1 s up to 30 s. A batch the server answered is never sent again:
// events have ids but the server does not deduplicate, so an answered batch (even an error
// other than 401/408/429/502/503/504/507) counts as delivered, and no request is ever
// abandoned on a timer (a timeout is how a stored batch gets sent twice). On pagehide the
// queue leaves by navigator.sendBeacon; if the server was failing, it is handed to the
// tab's next page load instead (sessionStorage), which sends it.
(function (w, d) {
  "use strict";
  if (w.M1Events) return;
  var FLUSH_MS = 1000, FLUSH_AT = 10, BATCH = 50, QUEUE_MAX = 500;
  var RETRY_MS = 1000, RETRY_MAX_MS = 30000, IDLE_MS = 1800000;
  // Answers that mean "not stored, try again later".
  var RETRY = [0, 401, 408, 429, 502, 503, 504, 507];
  var started = {};

  // Storage can be missing or throw (privacy modes, sandboxed frames): then state is per page.
  function load(kind, key) {
    try {
      return JSON.parse(w[kind].getItem(key));
    } catch (e) {
      return null;
    }
  }
  function save(kind, key, value) {
    try {
      if (value == null) w[kind].removeItem(key);
      else w[kind].setItem(key, JSON.stringify(value));
    } catch (e) {}
  }

  // crypto.randomUUID needs a secure context; http://localhost.somethingunique is not one.
  function uuid() {
    var b = new Uint8Array(16), h = "", i;
    if (w.crypto && crypto.getRandomValues) crypto.getRandomValues(b);
    else for (i = 0; i < 16; i++) b[i] = Math.random() * 256;
    b[6] = (b[6] & 15) | 64;
    b[8] = (b[8] & 63) | 128;
    for (i = 0; i < 16; i++) {
      h += (i == 4 || i == 6 || i == 8 || i == 10 ? "-" : "") + (b[i] + 256).toString(16).slice(1);
    }
    return h;
  }

  function start(cfg) {
    var base = String(cfg.url || "").replace(/\/*$/, "/");
    if (base == "/") throw new Error("M1Events.start: url is required");
    if (started[base]) return started[base];
    var SS = "sessionStorage", P = "m1 " + base + " ";
    var store = cfg.sessionStore || null;
    var hbMs = cfg.heartbeatMs == null ? 5000 : +cfg.heartbeatMs;
    var async = cfg.async !== false;
    var token = cfg.token || load(SS, P + "token " + cfg.user);
    var uid = load("localStorage", "m1 user") || uuid();
    var sess = load(SS, P + "session");
    var q = takePending();
    var inflight = null, hold = 0, timer = 0, fails = 0, dropped = 0, dead = false;
    var waiters = null, beating = false, href = null, ref = d.referrer, navT = 0, navU;
    save("localStorage", "m1 user", uid);

    function takePending() {
      var p = load(SS, P + "pending") || [];
      save(SS, P + "pending", null);
      return p;
    }

    function stop(why) {
      dead = true;
      q = [];
      console.warn("M1Events: " + why + "; no more events are sent");
    }

    function setToken(t) {
      token = t;
      if (!cfg.token) save(SS, P + "token " + cfg.user, t);
    }

    // One login at a time; everyone who needs the token waits for it.
    function login(cb) {
      if (cfg.token || dead) return cb(false);
      if (waiters) return waiters.push(cb);
      waiters = [cb];
      fetch(base + "auth", {
        method: "POST",
        credentials: "omit",
        body: new URLSearchParams({ username: cfg.user, password: cfg.password })
      })
        .then(function (r) {
          return r.text().then(function (t) {
            if (r.ok) setToken(t.trim());
            else if ([400, 401, 403, 404].indexOf(r.status) >= 0) {
              stop("login as " + cfg.user + " refused (" + r.status + ")");
            }
          });
        })
        .catch(function () {})
        .then(function () {
          var ws = waiters;
          waiters = null;
          ws.forEach(function (f) { f(!!token); });
        });
    }

    // POST a JSON body with the token in the header; cb(status), 0 when nothing answered.
    function call(path, body, cb, again) {
      if (!token) return login(function (ok) { if (ok) call(path, body, cb, again); else cb(0); });
      var s = JSON.stringify(body);
      fetch(base + path, {
        method: "POST",
        credentials: "omit",
        // keepalive lets a request under way when the page goes away still finish.
        keepalive: s.length < 60000,
        headers: { "Content-Type": "application/json", "m1-auth-token": token },
        body: s
      }).then(
        function (r) {
          if (r.status == 401 && !again) {
            if (cfg.token) return stop("the token was refused");
            setToken(null);
            return call(path, body, cb, 1);
          }
          cb(r.status);
        },
        function () { cb(0); }
      );
    }

    function kick() {
      if (q.length >= FLUSH_AT) pump();
      else if (q.length && !timer) timer = setTimeout(pump, FLUSH_MS);
    }

    function push(e) {
      if (dead) return;
      q.push(e);
      if (q.length > QUEUE_MAX) {
        q.shift();
        dropped++;
      }
      kick();
    }

    // One batch in flight at a time, so events arrive in order.
    function pump() {
      clearTimeout(timer);
      timer = 0;
      if (inflight || hold || dead || !q.length) return;
      var b = (inflight = q.splice(0, BATCH));
      if (dropped) {
        b[0].event.dropped = dropped;
        dropped = 0;
      }
      call("write", { items: b, async: async }, function (st) {
        inflight = null;
        if (dead) return;
        if (RETRY.indexOf(st) < 0) {
          fails = 0;
        } else {
          q = b.concat(q);
          while (q.length > QUEUE_MAX) {
            q.shift();
            dropped++;
          }
          fails++;
          // Jitter, so that a server coming back is not hit by every tab at the same moment.
          var wait = Math.min(RETRY_MAX_MS, RETRY_MS * Math.pow(2, fails - 1));
          hold = setTimeout(function () {
            hold = 0;
            pump();
          }, wait * (0.8 + Math.random() * 0.4));
        }
        kick();
      });
    }

    // Heartbeats to a session store replace each other, so one that fails is not retried:
    // the next one carries the newer state.
    function upsert(e) {
      if (beating) return;
      beating = true;
      call("session/update", { store: store, ops: [{ upsert: [e] }] }, function (st) {
        beating = false;
        if (st == 400 || st == 403 || st == 404) {
          store = null;
          hbMs = 0;
          console.warn("M1Events: session store refused heartbeats (" + st + ")");
        }
      });
    }

    function event(type, data, at) {
      var now = Date.now();
      if (!sess || now - sess.last > IDLE_MS) {
        sess = { id: uuid(), start: now };
        push(doc("sessionStart", null, now, at));
      }
      sess.last = now;
      save(SS, P + "session", sess);
      var e = doc(type, data, now, at);
      if (type == "heartbeat" && store) upsert(e);
      else push(e);
    }

    function doc(type, data, now, at) {
      var l = new URL(at || location.href), ev = { id: uuid(), time: now, type: type };
      if (data != null) ev.data = data;
      return {
        type: type,
        event: ev,
        session: { id: sess.id, start: sess.start },
        user: { id: uid },
        url: { href: l.href, host: l.host, path: l.pathname, query: l.search, hash: l.hash },
        page: { title: d.title, referrer: ref },
        screen: { width: screen.width, height: screen.height },
        language: navigator.language
      };
    }

    function view(force, at) {
      var u = at || location.href, h = u.split("#")[0];
      if (h == href && force !== true) return;
      if (href) ref = href;
      href = h;
      event("view", null, u);
    }

    // Routers set the new title after pushState, so a view is recorded a moment later; a
    // view still waiting when the next navigation comes is recorded at once (its title has
    // not changed yet: this code runs before the router's).
    function navNow() {
      clearTimeout(navT);
      navT = 0;
      view(false, navU);
    }
    function nav() {
      if (navT) navNow();
      navU = location.href;
      navT = setTimeout(navNow, 100);
    }
    ["pushState", "replaceState"].forEach(function (m) {
      var f = history[m];
      history[m] = function () {
        var r = f.apply(this, arguments);
        nav();
        return r;
      };
    });
    w.addEventListener("popstate", nav);

    d.addEventListener("visibilitychange", function () {
      if (d.visibilityState == "hidden") pump();
      else if (sess && Date.now() - sess.last > IDLE_MS) view(true);
    });

    w.addEventListener("pagehide", function () {
      if (navT) navNow();
      while (token && !fails && q.length && navigator.sendBeacon) {
        var b = q.slice(0, BATCH);
        // The beacon's answer is never read, so there is nothing to wait for: async.
        var s = JSON.stringify({ "m1-auth-token": token, items: b, async: true });
        if (!navigator.sendBeacon(base + "write", s)) break;
        q.splice(0, b.length);
      }
      save(SS, P + "pending", q.length ? q : null);
      q = [];
    });

    // Back from the back/forward cache: the page lives again and is viewed again.
    w.addEventListener("pageshow", function (e) {
      if (!e.persisted) return;
      q = takePending().concat(q);
      view(true);
    });

    w.addEventListener("online", function () {
      if (!hold) return;
      clearTimeout(hold);
      hold = 0;
      pump();
    });

    if (hbMs > 0) {
      setInterval(function () {
        if (hbMs > 0 && d.visibilityState == "visible") event("heartbeat");
      }, Math.max(hbMs, 100));
    }
    view(true);
    // Log in now, so that a visitor who leaves within the first second is still counted.
    if (!token) login(kick);

    return (started[base] = {
      event: function (type, data) { event(String(type), data); },
      view: function () { view(true); },
      flush: pump,
      sessionId: function () { return sess.id; }
    });
  }

  w.M1Events = { start: start };
  // instrumentation.js may run first: it leaves its start function in M1EventsReady.
  (w.M1EventsReady || []).forEach(function (f) { f(w.M1Events); });
  w.M1EventsReady = { push: function (f) { f(w.M1Events); } };
})(window, document);
