"""``bench.tracing`` without the OTLP exporter: a section that says what to install, no crash
(the ``[test]`` extra brings the OpenTelemetry SDK but not the exporter the traced phases use)."""

from __future__ import annotations

import pytest

from bench import tracing


def test_without_the_otlp_exporter_the_section_is_skipped(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tracing, "otlp_available", lambda: False)
    section = tracing.run()
    assert section.data == {"skipped": True} and "skipped" in section.title
    assert "pip install -e '.[otel]'" in section.markdown


def test_the_exporter_check_answers_without_raising() -> None:
    assert isinstance(tracing.otlp_available(), bool)
