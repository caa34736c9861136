"""Per-nucleus measurements, biomarker statistics, areas and input quality."""
