"""pathoseg: whole-slide nuclei instance segmentation (HoVer-Net-style) with QuPath-ready outputs."""

__version__ = "0.1.0"
