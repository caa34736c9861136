"""Tissue detection, the tile and region grid, and streaming tiles into the store."""
