"""The query engine behind `/query` and `/session/query`.

- `parser`: Solr standard syntax (`q`, `fq`) → the AST in `ast`, with depth and clause
  limits; also `sort` and `fl` parameters.
- `datemath`: ISO dates and Solr date math (`NOW/DAY-7DAYS`) → epoch milliseconds, and
  range-facet gaps such as `+1HOUR`.
- `execute`: the AST → bitmaps of matching event keys.
"""
