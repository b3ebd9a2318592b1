"""Methods that add modules of the package's own to a frozen transformers model (VPT, SSF,
AdaptFormer and the Houlsby / Pfeiffer bottleneck adapters): `base.py` (what they share: attach,
save and reload by parameter name), one module per spec (`vpt.py`, `ssf.py`, `bottleneck.py`),
`hooks.py` (the modules and their forward hooks, torch) and `layout.py` (where they hook in)."""
