"""Use cases, written only against `studio.ports` and `studio.domain`."""
