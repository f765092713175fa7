from ocrd.catalog.catalog import Catalog, CatalogEntry, render_preset, split_model_preset
from ocrd.catalog.facts import TransformersFacts, VllmFacts
from ocrd.catalog.presets import Preset, RenderedPreset

__all__ = [
    "Catalog",
    "CatalogEntry",
    "Preset",
    "RenderedPreset",
    "TransformersFacts",
    "VllmFacts",
    "render_preset",
    "split_model_preset",
]
