from ocrd.catalog.catalog import Catalog, CatalogEntry

__all__ = ["Catalog", "CatalogEntry"]
