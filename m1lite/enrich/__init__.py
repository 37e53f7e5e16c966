"""Event enrichment: client-IP resolution and GeoIP lookup."""
