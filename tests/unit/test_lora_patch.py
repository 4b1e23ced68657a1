"""The LoRA row fix's guard (it patches only the vLLM code it was written for) and how a model server's
engine arguments follow from it. Its effect in a real engine: tests/integration/test_lora_rows.py."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from studio.serving import lora_patch
from studio.serving.engine import ENGINE_MODEL_NAME, LORA_ROWS_EXTENSION, engine_args, zero_adapter_reason
from studio.serving.spec import ServerSpec


def spec(**changes: Any) -> ServerSpec:
    base = ServerSpec(
        model_name="acme/base", model_source="/models/base", adapters=True, scratch_dir="/tmp/s"
    )
    return dataclasses.replace(base, **changes)


def test_the_fix_fits_the_installed_vllm() -> None:
    assert lora_patch.check() is None
    assert lora_patch.source_hashes() == lora_patch.EXPECTED_SOURCES


def test_other_vllm_code_is_left_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    from vllm.lora.punica_wrapper.punica_cpu import PunicaWrapperCPU

    lora_patch.uninstall()
    before = PunicaWrapperCPU.add_lora_linear
    monkeypatch.setitem(lora_patch.EXPECTED_SOURCES, "PunicaWrapperBase.update_metadata", "0" * 16)
    reason = lora_patch.check()
    assert reason is not None and "PunicaWrapperBase.update_metadata" in reason
    assert lora_patch.install() is False and not lora_patch.active()
    assert PunicaWrapperCPU.add_lora_linear is before
    assert zero_adapter_reason(spec()) == reason  # the model server falls back to the zero adapter
    monkeypatch.setattr(lora_patch, "SUPPORTED_VLLM", "0.31.0")
    assert "0.31.0" in (lora_patch.check() or "")


def test_install_and_uninstall() -> None:
    from vllm.lora.punica_wrapper.punica_base import PunicaWrapperBase
    from vllm.lora.punica_wrapper.punica_cpu import PunicaWrapperCPU

    original = PunicaWrapperCPU.add_lora_linear
    try:
        assert lora_patch.install() and lora_patch.install() and lora_patch.active()
        assert PunicaWrapperCPU.add_lora_linear is not original
    finally:
        lora_patch.uninstall()
    assert PunicaWrapperCPU.add_lora_linear is original
    assert PunicaWrapperCPU.update_metadata is PunicaWrapperBase.update_metadata


def test_rows_without_adapter() -> None:
    import torch

    assert lora_patch.rows_without_adapter(torch.tensor([0, 1, 1])) is None
    assert lora_patch.rows_without_adapter(torch.tensor([-1, -1])) == lora_patch.NO_ADAPTER
    mask = lora_patch.rows_without_adapter(torch.tensor([0, -1, 1, -1]))
    assert mask.tolist() == [False, True, False, True]


def test_engine_arguments_follow_the_base_route() -> None:
    fixed = engine_args(spec(max_adapters=3))
    assert fixed["served_model_name"] == ["acme/base"] and fixed["max_loras"] == 3
    assert fixed["worker_extension_cls"] == LORA_ROWS_EXTENSION
    zero = engine_args(spec(max_adapters=3), zero_adapter=True)
    assert zero["served_model_name"] == [ENGINE_MODEL_NAME] and zero["max_loras"] == 4  # + its slot
    assert "worker_extension_cls" not in zero
    gpu = engine_args(spec(use_gpu=True))  # vLLM's GPU kernels skip rows without an adapter
    assert "worker_extension_cls" not in gpu and gpu["served_model_name"] == ["acme/base"]
    assert zero_adapter_reason(spec(use_gpu=True)) is None
    plain = engine_args(spec(adapters=False), zero_adapter=True)
    assert "enable_lora" not in plain and plain["served_model_name"] == ["acme/base"]
