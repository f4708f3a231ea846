"""The HTTP/JSON API: the app (`app`), its door (`door`: keys, scopes, bounds), its contract
(`contract`: every body, answer and error typed), answers and errors (`answers`), the route
table and its hot path (`table`, `fast`), the other routes (`routes`, `key_routes`), the
replica's own server's bounds (`bounds`), how it is served (`options`), Serve's HAProxy made
private (`haproxy`) and the Serve entry (`serving`, the one module here that imports Ray)."""
