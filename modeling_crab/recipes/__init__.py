"""Corpus recipes: converters from official corpus releases to Crab's shared manifest format.

Each converter is a command (``python -m modeling_crab.recipes.<name> --root DIR --out DIR``):

- :mod:`modeling_crab.recipes.iemocap` -- IEMOCAP (4 classes, exc merged into happy)
- :mod:`modeling_crab.recipes.iemocap_loso` -- 5-fold leave-one-session-out driver for IEMOCAP
- :mod:`modeling_crab.recipes.meld` -- MELD (7 classes, audio extracted from the MP4 clips)
- :mod:`modeling_crab.recipes.msp_podcast` -- MSP-Podcast 2.0 (8 classes) and the Test3 submission writer
- :mod:`modeling_crab.recipes.demo` -- the built-in synthetic corpus (``python -m modeling_crab.recipes.demo OUT_DIR``)

All write the one manifest format of :mod:`modeling_crab.manifest`; the problems report, summary and command
wrapper they share live in :mod:`modeling_crab.recipes.common`. The reproduction
configs and the paper's numbers are documented in ``configs/README.md``.
"""
