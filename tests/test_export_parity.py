"""benchmarks/export_parity.py: the machine record that tells its speed figures apart."""

from __future__ import annotations

from tests.helpers import load_benchmark


def _module():
    return load_benchmark("export_parity")


def test_speed_flags_lists_the_instruction_sets_that_set_the_speed(tmp_path):
    bench = _module()
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(
        "processor\t: 0\nmodel name\t: AMD EPYC\n"
        "flags\t\t: fpu sse2 avx2 avx512f avx512_vnni avx512_bf16 sha_ni\n"
    )
    assert bench.speed_flags(cpuinfo) == ["avx2", "avx512f", "avx512_vnni", "avx512_bf16"]
    cpuinfo.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx2\n")
    assert bench.speed_flags(cpuinfo) == ["avx2"]
    assert bench.speed_flags(tmp_path / "absent") == []


def test_the_report_names_the_instruction_sets():
    bench = _module()
    text = bench._flags_text
    assert text({"cpu_flags": ["avx2", "avx512_vnni"]}) == "with avx2, avx512_vnni"
    assert text({"cpu_flags": []}).startswith("none of avx2, avx512f")
    assert text({}) == "instruction sets not recorded"


def test_cpu_name_reads_the_model_name(tmp_path):
    import platform

    from scrclf.training.run import cpu_name

    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nmodel name\t: AMD EPYC 7B13\nflags\t\t: avx2\n")
    assert cpu_name(cpuinfo) == "AMD EPYC 7B13"
    assert cpu_name(tmp_path / "absent") == (platform.processor() or platform.machine())
