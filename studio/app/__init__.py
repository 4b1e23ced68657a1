"""Composition root: the only place that names concrete classes (stores, Ray actors, Serve)."""
