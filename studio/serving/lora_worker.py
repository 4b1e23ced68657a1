"""The vLLM worker extension that puts `lora_patch` into the engine's worker processes.

vLLM imports the class named by the engine argument `worker_extension_cls` in every worker process
(the engine core's own process with the "uni" executor, each child with "mp") before it loads the
model; importing this module installs the patch there. The model server then asks every worker
whether it took (`collective_rpc("mini_studio_lora_rows_fixed")`) before serving base requests
without an adapter.
"""

from __future__ import annotations

from studio.serving import lora_patch

lora_patch.install()


class LoraRowsFix:
    """Mixed into vLLM's worker class; its one method name must not clash with the worker's own."""

    def mini_studio_lora_rows_fixed(self) -> bool:
        """Return whether the LoRA row fix is active in this worker process (installing it if something
        removed it since the import: it patches classes, so it holds for the loaded model too)."""
        return lora_patch.install()
