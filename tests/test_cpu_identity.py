"""The CPU a benchmark records: model name and the instruction-set flags that change TensorFlow's kernels."""

from pathlib import Path

from kfac_repro.benchmarks.arm_costs.cpu_identity import cpu_flags, cpu_model


def test_model_and_flags_are_read_from_cpuinfo(tmp_path: Path) -> None:
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nmodel name\t: AMD EPYC 9B14\nflags\t\t: fpu sse avx2 fma avx512f avx512_bf16 x\n"
                    "processor\t: 1\nmodel name\t: AMD EPYC 9B14\n")
    assert cpu_model(info) == "AMD EPYC 9B14"
    assert cpu_flags(info) == "avx2 fma avx512f avx512_bf16"


def test_an_unreadable_cpuinfo_gives_no_flags(tmp_path: Path) -> None:
    assert cpu_flags(tmp_path / "absent") == ""
    assert cpu_model(tmp_path / "absent")  # platform's answer instead
