// m1.js: the one-tag embed. The server serves /m1.js as js/M1Events.js followed by this file,
// both without comments. Put on every page:
//   <script src="https://m1.example.com/m1.js" data-user="instrument" data-password="..."></script>
// Attributes: data-user + data-password (a user with only the publish right, plus
// sessionUpdate for a session store) or data-token; data-session-store (heartbeats go to
// that session store instead of becoming events); data-heartbeat-ms (default 5000, 0 = none);
// data-async (default true; "false" makes the server answer once events are on disk).
// The server's URL is taken from the script's own src. The tracker is window.m1:
// m1.event("signup", {plan: "pro"}) records an event of your own.
(function (d) {
  var s = d.currentScript || d.querySelector("script[src*='m1.js']");
  if (!s || window.m1) return;
  function a(name) {
    return s.getAttribute("data-" + name);
  }
  if (!a("token") && !(a("user") && a("password"))) {
    console.warn("m1.js: set data-user and data-password, or data-token");
    return;
  }
  window.m1 = M1Events.start({
    url: new URL(".", s.src).href,
    user: a("user"),
    password: a("password"),
    token: a("token"),
    sessionStore: a("session-store"),
    heartbeatMs: a("heartbeat-ms") == null ? 5000 : +a("heartbeat-ms"),
    async: a("async") != "false"
  });
})(document);
