"""Provider adapters: one module per vendor behind :class:`Provider` (one abstract method),
built from the config by the registry, each SDK's errors mapped through one shared mapping
(:mod:`.http_errors`). Vendor modules are imported lazily (each SDK is a heavy import)."""

from orchestration.providers.base import Provider, ProviderRequest
from orchestration.providers.output_modes import LocalModeMemory, ModeMemory, OutputMode, StructuredOutput
from orchestration.providers.registry import ProviderRegistry, build_provider, preload

__all__ = [
    "LocalModeMemory",
    "ModeMemory",
    "OutputMode",
    "Provider",
    "ProviderRegistry",
    "ProviderRequest",
    "StructuredOutput",
    "build_provider",
    "preload",
]
