"""The model server: a Serve deployment running a vLLM engine, added at runtime for each deployed model.

Runs inside Serve replicas and imports nothing from the API server (`studio.api`, `services`, `stores`,
`app`): `studio.backends.serve_models` deploys it and calls it through deployment handles.
"""
