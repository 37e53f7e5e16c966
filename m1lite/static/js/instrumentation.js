// instrumentation.js: what your site records, and where it sends it. Copy this file and
// M1Events.js into your site's JavaScript folder, set the REQUIRED PARAMETERS below, and
// load both from the <head> of every page (either order works; jQuery is not needed):
//
//   <script src="js/instrumentation.js" type="text/javascript" charset="utf-8"></script>
//   <script src="js/M1Events.js" type="text/javascript" charset="utf-8"></script>
//
// With the defaults, every visitor session gets one sessionStart event, every page view a
// view event (links, reloads, and history-API navigation in single-page apps), and a visible
// page a heartbeat event every HEARTBEAT_INTERVAL_MS. Every event carries session.id,
// user.id, event.id, event.time, url.*, page.title, page.referrer, screen.* and language.
// Further down are optional samples (custom events, click capture): uncomment to use them.
(function () {
  "use strict";

  // ---------------------------------------------------------------- REQUIRED PARAMETERS
  // Your m1lite server (the environment), as your visitors' browsers reach it.
  var M1_ENVIRONMENT_URL = "http://127.0.0.1:8080";
  // A user with only the publish right (and sessionUpdate when you use a session store):
  // its password is visible to anyone who reads your page, so it must be able to do
  // nothing else. Create it with:
  //   m1 ENV user/add -username instrument -password 'ChangeMeNow!' -rights '["publish"]'
  var M1_USER = "instrument";
  var M1_PASSWORD = "ChangeMeNow!";
  // How often a visible page sends a heartbeat, in milliseconds; 0 sends none. 5 seconds
  // gives a fine time series; a longer interval costs less.
  var HEARTBEAT_INTERVAL_MS = 5000;
  // null: every heartbeat is stored as an event (the guide's "Heartbeats"). A session store's
  // name, e.g. "stash": heartbeats only update that visitor's document in the session store,
  // and when they stop (the tab closed) the server writes one sessionTimeout event (the
  // guide's "Heartbeats on a Budget"). The user then also needs the sessionUpdate right:
  //   m1 ENV user/update -username instrument -rights '["publish", "sessionUpdate"]'
  var M1_SESSION_STORE = null;
  // false while you try things out: the server answers once the events are on disk. Set it
  // to true in production: the server then answers as soon as they are queued.
  var M1_ASYNC = false;
  // ---------------------------------------------------------- END OF REQUIRED PARAMETERS

  function instrument(M1Events) {
    var m1 = M1Events.start({
      url: M1_ENVIRONMENT_URL,
      user: M1_USER,
      password: M1_PASSWORD,
      heartbeatMs: HEARTBEAT_INTERVAL_MS,
      sessionStore: M1_SESSION_STORE,
      async: M1_ASYNC
    });
    // Your own code can record events too: window.m1.event("signup", {plan: "pro"}).
    window.m1 = m1;

    // BEGIN SAMPLE custom-events
    // // Custom events: an element with data-m1-event="NAME" sends an event of type NAME when
    // // clicked; its other data-m1-* attributes become event.data. For example
    // //   <button data-m1-event="addToCart" data-m1-sku="A-42">Add to cart</button>
    // // is stored as {"type": "addToCart", "event": {"data": {"sku": "A-42"}, ...}, ...}.
    // document.addEventListener("click", function (e) {
    //   var el = e.target.closest && e.target.closest("[data-m1-event]");
    //   if (!el) return;
    //   var data = {};
    //   for (var i = 0; i < el.attributes.length; i++) {
    //     var name = el.attributes[i].name;
    //     if (name.indexOf("data-m1-") == 0 && name != "data-m1-event") {
    //       data[name.slice(8)] = el.attributes[i].value;
    //     }
    //   }
    //   m1.event(el.getAttribute("data-m1-event"), data);
    // });
    // END SAMPLE custom-events

    // BEGIN SAMPLE click-capture
    // // Click capture: every click on a link or button becomes a click event with what was
    // // clicked. Handy to start with; on a busy site prefer the custom events above.
    // document.addEventListener("click", function (e) {
    //   var el = e.target.closest && e.target.closest("a, button, input[type=submit]");
    //   if (!el) return;
    //   m1.event("click", {
    //     tag: el.tagName.toLowerCase(),
    //     id: el.id,
    //     text: (el.innerText || el.value || "").trim().slice(0, 100),
    //     href: el.href || ""
    //   });
    // });
    // END SAMPLE click-capture
  }

  // M1Events.js may load before or after this file.
  if (window.M1Events) instrument(window.M1Events);
  else (window.M1EventsReady = window.M1EventsReady || []).push(instrument);
})();
