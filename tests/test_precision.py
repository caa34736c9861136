"""Precision per device: the `auto` decision for every kind of hardware, forced precisions on this CPU, and the
configuration key of older versions."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch

from pathoseg.config import ConfigError, load_config
from pathoseg.errors import SettingsError
from pathoseg.geometry import Box
from pathoseg.models.engines import choose_runtime, openvino_available
from pathoseg.models.hovernet import HoVerNet
from pathoseg.models.infer import Predictor
from pathoseg.models.precision import (
    DeviceFacts,
    choose_precision,
    cpu_has_native_bf16,
    device_facts,
    resolve_precision,
)


@pytest.mark.parametrize(
    "facts, expected",
    [
        (DeviceFacts("cpu", cpu_native_bf16=False), "fp32"),  # AVX2 laptops: bf16 runs ~10x slower there
        (DeviceFacts("cpu", cpu_native_bf16=True), "bf16"),  # AVX-512 BF16 / AMX
        (DeviceFacts("cuda", cuda_capability=(7, 5)), "fp16"),  # T4, V100 (7.0)
        (DeviceFacts("cuda", cuda_capability=(8, 0)), "bf16"),  # A100
        (DeviceFacts("cuda", cuda_capability=(9, 0)), "bf16"),  # H100
        (DeviceFacts("mps"), "fp32"),
    ],
)
def test_auto_picks_the_native_precision(facts, expected):
    assert choose_precision("auto", facts) == expected


@pytest.mark.parametrize("forced", ["fp32", "bf16", "fp16"])
def test_a_forced_precision_is_kept_on_any_device(forced):
    for facts in (DeviceFacts("cpu"), DeviceFacts("cpu", True), DeviceFacts("cuda", cuda_capability=(7, 0))):
        assert choose_precision(forced, facts) == forced


def test_auto_picks_int8_on_cpus_where_the_model_has_it():
    assert choose_precision("auto", DeviceFacts("cpu"), int8_available=True) == "int8"  # AVX2: 1.5x fp32
    # AVX-512 BF16 + VNNI (Zen 4): int8 1.5-1.8x bf16 in OpenVINO
    assert choose_precision("auto", DeviceFacts("cpu", cpu_native_bf16=True), int8_available=True) == "int8"
    assert choose_precision("auto", DeviceFacts("cuda", cuda_capability=(9, 0)), int8_available=True) == "bf16"
    assert choose_precision("int8", DeviceFacts("cpu"), int8_available=True) == "int8"
    with pytest.raises(SettingsError, match="int8"):
        choose_precision("int8", DeviceFacts("cpu"))  # a model without an int8 version, or the torch runtime


def test_unknown_precision_is_refused():
    with pytest.raises(SettingsError, match="fp8"):
        choose_precision("fp8", DeviceFacts("cpu"))
    with pytest.raises(ConfigError, match="model.precision"):
        load_config(overrides={"model": {"precision": "fp8"}})


@pytest.mark.parametrize("cap", ["AVX2", "avx512_core_vnni", "SSE41"])
def test_an_instruction_set_cap_below_bf16_means_no_native_bf16(monkeypatch, cap):
    # How users emulate an AVX2 CPU, and how some containers run: oneDNN then has no bf16 kernels.
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", cap)
    assert not cpu_has_native_bf16()
    assert choose_precision("auto", device_facts(torch.device("cpu"))) == "fp32"


def test_an_instruction_set_cap_at_or_above_bf16_leaves_the_cpu_as_it_is(monkeypatch):
    native = cpu_has_native_bf16()
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX512_CORE_BF16")
    assert cpu_has_native_bf16() == native


def test_auto_on_this_cpu_follows_its_capability():
    assert resolve_precision("auto", torch.device("cpu")) == ("bf16" if cpu_has_native_bf16() else "fp32")


@pytest.mark.parametrize("forced", ["bf16", "fp16"])
def test_forced_precision_runs_here_and_agrees_with_fp32(forced):
    torch.manual_seed(0)
    network = HoVerNet("light").eval()
    image = (np.random.default_rng(0).random((96, 96, 3)) * 255).astype(np.uint8)
    reference = Predictor(network, torch.device("cpu"), patch_px=64, context_px=8, precision="fp32").predict(image)
    predictor = Predictor(network, torch.device("cpu"), patch_px=64, context_px=8, precision=forced)
    assert predictor.precision == forced
    maps = predictor.predict(image)
    assert np.abs(maps.np_prob - reference.np_prob).max() < 0.05
    assert np.abs(maps.hv - reference.hv).max() < 0.05


@pytest.mark.parametrize("bf16, expected", [(True, "auto"), (False, "fp32")])
def test_configs_with_the_old_bf16_key_keep_working(tmp_path, bf16, expected):
    path = tmp_path / "old.yaml"
    path.write_text(f"model:\n  bf16: {str(bf16).lower()}\n")
    assert load_config(path).model.precision == expected


def test_runtime_choice():
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert choose_runtime("auto", cpu) == ("openvino" if openvino_available() else "torch")
    assert choose_runtime("auto", cuda) == "torch"
    assert choose_runtime("torch", cpu) == "torch"
    with pytest.raises(SettingsError, match="CPU"):
        choose_runtime("openvino", cuda)
    with pytest.raises(SettingsError, match="tensorrt"):
        choose_runtime("tensorrt", cpu)


@pytest.mark.parametrize("runtime, precision", [("auto", "auto"), ("torch", "fp32"), ("auto", "bf16")])
def test_run_facts_are_what_the_built_predictor_runs(runtime, precision):
    """The summary's device/runtime/precision are resolved without building a predictor (a resumed slide needs
    none); they must be what a built one runs."""
    from pathoseg.distributed import predictor_facts
    from pathoseg.models.infer import predictor_for
    from pathoseg.models.weights import int8_ir_of

    model = load_config(overrides={"model": {"runtime": runtime, "precision": precision}}).model
    predictor = predictor_for(HoVerNet("light").eval(), model, int8_ir=int8_ir_of(model.name))
    assert predictor_facts(model) == {
        "device": str(predictor.device),
        "runtime": predictor.runtime,
        "precision": predictor.precision,
    }


@pytest.mark.skipif(not openvino_available(), reason="openvino is not installed")
@pytest.mark.parametrize("np_classes", [2, 3])
def test_openvino_gives_pytorchs_maps(np_classes):
    torch.manual_seed(0)
    network = HoVerNet("light", np_classes=np_classes).eval()
    image = (np.random.default_rng(1).random((200, 150, 3)) * 255).astype(np.uint8)
    frame, window = Box(0, 0, 150, 200), Box(5, 7, 140, 190)  # patches on the frame's grid, not the window's
    maps = {}
    for runtime in ("torch", "openvino"):
        predictor = Predictor(
            network, torch.device("cpu"), patch_px=64, context_px=8, batch_size=3, precision="fp32", runtime=runtime
        )
        reads = predictor.patches.reads(window, frame)
        maps[runtime] = predictor.predict_window(image[reads.slices], reads, window, frame)
    for name in ("np_prob", "hv", "nc_prob", "interior_prob"):
        expected, got = getattr(maps["torch"], name), getattr(maps["openvino"], name)
        if expected is None:
            assert got is None and np_classes == 2
            continue
        assert got.shape == expected.shape
        assert np.abs(got.astype(np.float32) - expected.astype(np.float32)).max() < 2e-3, name


def test_flip_tta_makes_the_maps_flip_equivariant():
    torch.manual_seed(0)
    network = HoVerNet("light", np_classes=3).eval()
    image = (np.random.default_rng(2).random((96, 96, 3)) * 255).astype(np.uint8)
    predictor = Predictor(
        network, torch.device("cpu"), patch_px=96, context_px=8, precision="fp32", runtime="torch", tta=True
    )
    maps, mirrored = predictor.predict(image), predictor.predict(np.ascontiguousarray(image[:, ::-1]))
    assert np.allclose(mirrored.np_prob[:, ::-1], maps.np_prob, atol=1e-4)
    assert np.allclose(mirrored.interior_prob[:, ::-1], maps.interior_prob, atol=2e-3)
    assert np.allclose(-mirrored.hv[0, :, ::-1], maps.hv[0], atol=1e-4)  # the horizontal map changes sign
    assert np.allclose(mirrored.hv[1, :, ::-1], maps.hv[1], atol=1e-4)
    plain = Predictor(network, torch.device("cpu"), patch_px=96, context_px=8, precision="fp32", runtime="torch")
    assert not np.allclose(plain.predict(image).np_prob, maps.np_prob, atol=1e-4)  # TTA did change the maps


def test_info_system_reports_the_machine_and_measures_each_precision():
    from click.testing import CliRunner

    from pathoseg.cli import main
    from pathoseg.cli.info import system_lines
    from pathoseg.models.weights import load_model

    result = CliRunner().invoke(main, ["info", "--system", "--seconds", "0.1", "--json"])
    assert result.exit_code == 0, result.output
    facts = json.loads(result.output)
    int8_here = facts["cpu_auto"]["runtime"] == "openvino" and load_model("pathoseg-light").int8_ir is not None
    assert facts["cpu_auto"]["precision"] == choose_precision(
        "auto", DeviceFacts("cpu", cpu_native_bf16=cpu_has_native_bf16()), int8_here
    )
    assert facts["cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    speeds = facts["model_mpx_per_second_per_thread"]
    assert {"torch/fp32", "torch/bf16"} <= set(speeds) and all(value > 0 for value in speeds.values())
    text = "\n".join(system_lines(facts))  # the text form of the same facts (measuring twice costs minutes on AVX2)
    assert "auto picks: runtime" in text and text.count("<- auto") == 1


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_info_system_measures_each_gpu():
    from click.testing import CliRunner

    from pathoseg.cli import main

    result = CliRunner().invoke(main, ["info", "--system", "--seconds", "0.5", "--json"])
    assert result.exit_code == 0, result.output
    gpus = json.loads(result.output)["cuda"]
    assert len(gpus) == torch.cuda.device_count() and all(gpu["model_mpx_per_second"] > 0 for gpu in gpus)


@pytest.mark.skipif(not openvino_available(), reason="needs OpenVINO")
def test_bf16_under_an_instruction_set_cap_runs_in_openvino_as_fp32():
    """With oneDNN capped at AVX2 (an emulated AVX2 CPU), OpenVINO refused to compile bf16 ('object is not
    initialized') on CPUs that have it; it now runs fp32, as it does on a real AVX2 CPU. A fresh interpreter: the
    cap is read when oneDNN starts."""
    import subprocess
    import sys

    script = (
        "import numpy as np, torch\n"
        "from pathoseg.models.hovernet import HoVerNet\n"
        "from pathoseg.models.engines import build_engine\n"
        "torch.manual_seed(0)\n"
        "engine = build_engine(HoVerNet('light').eval(), torch.device('cpu'), 'bf16', 'openvino', 1, 64)\n"
        "print(engine(np.zeros((1, 64, 64, 3), np.uint8)).shape)\n"
    )
    env = {**os.environ, "ONEDNN_MAX_CPU_ISA": "AVX2", "ATEN_CPU_CAPABILITY": "avx2"}
    run = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    assert "(1, " in run.stdout and "bf16 here, it runs as fp32" in run.stderr
