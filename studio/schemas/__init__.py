"""Pydantic shapes: wire (OpenAI-compatible and the original design's paths) and stored documents."""
