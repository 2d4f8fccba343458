"""Data formats, mixtures and the datasets bundled with the workbench."""
