"""Engines of the chromatic segment studio: data, analysis, tokenizers, models, rendering, CLI."""
import os

# Nothing at run time reaches the internet (see README "Offline").
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
