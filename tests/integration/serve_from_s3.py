"""A Ray driver on the private two-node cluster (`two_node_cluster.py`): serve a base and its adapter.

Run as its own process (`python -m` this module, the job of one JSON line on stdin): the test process is
connected to the session's cluster, and a process connects to one cluster only. Through the real Serve
backend (`ServeModelServers`) it deploys the base model's server, which the head (no CPUs) cannot hold,
so its replica runs on the second node; attaches the adapter from its deployment record (a directory that
is not on that node and its `s3://` copy); asks it one chat request; prints one line, `RESULT_PREFIX` and JSON
(`attached`: what the replica answered to the attach, `answer`: the chat response), then removes Serve.

Input: `gcs` (the cluster's address), `http_port`, `scratch_dir`, `models_dir`, `store` (a `ModelStore`'s
fields), `env` (the replicas' S3 credentials), `base` and `adapter` (stored `Deployment` records).
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from typing import Any

import ray
from ray import serve

from studio.backends.serve_models import ServeModelServers
from studio.ports import InferenceCall
from studio.schemas.deployments import Deployment
from studio.serving.spec import ModelStore

START_TIMEOUT_S = 600
# Marks the result line among what Ray prints on the driver's stdout.
RESULT_PREFIX = "served: "


async def serve_adapter(spec: dict[str, Any]) -> dict[str, Any]:
    """Deploy the base, attach the adapter, chat with it; return what the replica said."""
    servers = ServeModelServers(
        scratch_dir=spec["scratch_dir"],
        models_dir=spec["models_dir"],
        timeout_s=120,
        store=ModelStore(**spec["store"]),
        store_env=spec["env"],
    )
    base = Deployment.model_validate(spec["base"])
    adapter = Deployment.model_validate(spec["adapter"])
    await servers.deploy(base)
    deadline = time.monotonic() + START_TIMEOUT_S
    while (state := await servers.state(base))[0] != "running":
        if state[0] == "failed" or time.monotonic() > deadline:
            raise RuntimeError(f"the base model server did not start: {state}")
        await asyncio.sleep(1)
    await servers.ready(base)
    handle = servers._call_handle(adapter, stream=False)
    attached: dict[str, Any] = await handle.attach.remote(adapter.adapter_path, adapter.adapter_uri)
    body = {"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4, "temperature": 0}
    answer = await servers.complete(
        InferenceCall(kind="chat", model=adapter.model, body=body, deployment=adapter)
    )
    return {"attached": attached, "answer": answer}


def main() -> None:
    spec = json.loads(sys.stdin.readline())
    ray.init(address=spec["gcs"], namespace="ms-two-nodes", log_to_driver=False)
    serve.start(http_options={"host": "127.0.0.1", "port": spec["http_port"]})
    try:
        print(RESULT_PREFIX + json.dumps(asyncio.run(serve_adapter(spec))), flush=True)
    finally:
        serve.shutdown()  # type: ignore[no-untyped-call]
        ray.shutdown()


if __name__ == "__main__":
    main()
