"""`m1lite simulate`: simulated website visitors sending events like the browser script.

N concurrent visitors in one asyncio process. Each arrives (sessionStart and a view of
its landing page), reads pages for lognormal think times, sends a heartbeat every
--heartbeat-ms (upserted into a session store, or as events), and leaves; a new visitor
takes its place, so N stay on the site. The events have the shape M1Events.js sends.

- site.py      the simulated site: pages, links, titles, referrers, screens, addresses
- visitor.py   one visit's plan (seeded) and the documents a visitor sends
- config.py    the command line and the guide's config.json form
- sender.py    per-address logins, what each visitor (or address) sends, retries, back-off
- http.py      a small keep-alive HTTP/1.1 client (httpx costs too much CPU per request here)
- stats.py     counters, latency histograms, the progress line and the summary
- run.py       the asyncio driver: arrivals, the schedule, signals, the end
"""

from __future__ import annotations
