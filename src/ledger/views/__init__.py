"""Rendering, the only place that prints: rich renderables for people and JSON-ready dicts for machines.

`console` owns the two consoles and every print; the other modules turn one room's results into
renderables and documents (`log`, `recording`, `audit`, `lineage`, `bundle`)."""
