"""Model-only throughput per runtime and precision, side by side with HoVer-Net's own network, and where the time
of one region task goes.

Prints, on one thread (as each default worker process runs):
1. Mpx/s of ``Predictor.predict`` for pathoseg-light and for HoVer-Net's encoder (preact-ResNet-50, untrained
   weights: timing only) on the same patches, in each runtime and precision, and their ratio;
2. one region task (a 4352 x 4352 px window of a synthetic slide: 4096 px core + margins) in each runtime and
   precision, split into read-free stages: inference, post-processing, measurements, outlines.

    python benchmarks/bench_speed.py [--seconds 5]
"""

from __future__ import annotations

import argparse

import torch

from pathoseg.config import load_config
from pathoseg.geometry import Box
from pathoseg.models.hovernet import HoVerNet
from pathoseg.models.infer import Predictor
from pathoseg.models.weights import load_model
from pathoseg.region import RegionSettings, segment_region
from pathoseg.synthetic import SyntheticSlide
from pathoseg.system import cpu_capability, model_mpx_per_second, runtimes_here

PRECISIONS = ("fp32", "bf16")


def model_only(seconds: float) -> None:
    cpu = torch.device("cpu")
    light = load_model().network
    hovernet = HoVerNet("preact-resnet50").eval()
    print("model only, Mpx/s on one thread (960 x 960 px image, 512 px patches):")
    print(f"  {'runtime/precision':<18} {'pathoseg-light':>15} {'HoVer-Net (R50)':>16} {'ratio':>7}")
    for runtime in runtimes_here(cpu):
        for precision in PRECISIONS:
            ours = model_mpx_per_second(light, cpu, precision, runtime, seconds)
            peer = model_mpx_per_second(hovernet, cpu, precision, runtime, seconds)
            print(f"  {runtime + '/' + precision:<18} {ours:15.3f} {peer:16.3f} {ours / peer:6.1f}x", flush=True)


def region_stages() -> None:
    cpu = torch.device("cpu")
    side = 4352
    rgb = SyntheticSlide(8192, 8192, 0.25, 0).render(2048, 2048, side, side)
    window, core = Box(0, 0, side, side), Box(128, 128, side - 256, side - 256)
    network = load_model().network
    settings = RegionSettings.from_config(load_config(), 0.25)
    print(f"one region task ({side} x {side} px window, {core.width} x {core.height} px core), seconds per stage:")
    for runtime in runtimes_here(cpu):
        for precision in PRECISIONS:
            seconds: dict[str, float] = {}
            predictor = Predictor(network, cpu, precision=precision, runtime=runtime)
            result = segment_region(0, rgb, window, core, predictor, settings, seconds)
            total = sum(seconds.values())
            stages = "  ".join(
                f"{stage} {value:5.1f} ({100 * value / total:2.0f}%)" for stage, value in seconds.items()
            )
            print(
                f"  {runtime + '/' + precision:<15} {total:5.1f} s = {stages}; {len(result)} nuclei, "
                f"{core.width * core.height / total / 1e6:.3f} core Mpx/s",
                flush=True,
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="seconds per model-only measurement")
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(f"CPU: {cpu_capability()}; torch {torch.__version__}")
    model_only(args.seconds)
    region_stages()


if __name__ == "__main__":
    main()
