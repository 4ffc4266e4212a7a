"""Images (issue 16): sinusoidal image networks with levels of detail (`field`, `fit`, `pyramid`), seamless tiles
(`tile`), image files and colour (`io`), their model files (`files`) and the command line (`cli`). Import the
submodules; this package imports nothing itself, so that ``python -m engine.images.cli`` stays cheap."""
