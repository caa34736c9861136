"""Reading slides, images and datasets; writing stores, regions, GeoJSON, overlays and reports."""
