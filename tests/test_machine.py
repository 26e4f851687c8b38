"""A benchmark line says which CPU it ran on: the int8 kernels give other results and speeds on
an AVX2-only CPU than on one with AVX-512/VNNI, so figures without it cannot be compared."""

from __future__ import annotations

from agent.machine import machine


def test_an_avx2_only_epyc_is_told_apart_from_an_avx512_xeon(tmp_path):
    epyc = tmp_path / "epyc"
    epyc.write_text("processor\t: 0\nmodel name\t: AMD EPYC\nflags\t\t: fpu sse2 avx2 fma\n\n"
                    "processor\t: 1\nmodel name\t: AMD EPYC\nflags\t\t: fpu sse2 avx2 fma\n")
    xeon = tmp_path / "xeon"
    xeon.write_text("model name\t: Intel(R) Xeon(R) Platinum\nflags\t\t: avx2 fma avx512f avx512bw avx512_vnni\n")
    assert machine(epyc)["cpu"] == "AMD EPYC" and machine(epyc)["simd"] == ["avx2", "fma"]
    assert machine(xeon)["simd"] == ["avx2", "fma", "avx512f", "avx512bw", "avx512_vnni"]
    assert machine(xeon)["cores"] >= 1


def test_a_system_without_cpuinfo_still_gets_a_description(tmp_path):
    info = machine(tmp_path / "missing")
    assert info["simd"] == [] and isinstance(info["cpu"], str) and info["cores"] >= 1
