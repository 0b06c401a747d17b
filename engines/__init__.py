"""Engines of the chromatic segment studio: data, analysis, tokenizers, models, rendering, CLI."""
import os

# Nothing at run time reaches the internet (see README "Offline").
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

# How torch's OpenMP runtime (libgomp) waits between operations; read once, when torch loads it, so set here,
# before any engine imports torch. Every thread that runs a torch operation keeps its own team of OpenMP threads,
# and the studio runs torch on many (Gradio's workers, the samplers, the batcher). Once libgomp manages more
# threads than there are CPUs it spins only 100 times before sleeping, so each of the GPT's many small
# operations pays a futex wake-up of its helpers: one idle extra thread that had run torch once made a GPT
# request of 4 results 20 % slower (1.53 -> 1.84 s). ACTIVE raises that spin to 1,000; GOMP_SPINCOUNT keeps
# libgomp's own spin of about 3 ms elsewhere (ACTIVE alone would spin 5 minutes). A user's own setting of
# either wins. README "Many musicians at once" has the figures.
OPENMP_WAITING = {"OMP_WAIT_POLICY": "ACTIVE", "GOMP_SPINCOUNT": "300000"}
if not any(name in os.environ for name in OPENMP_WAITING):
    os.environ.update(OPENMP_WAITING)
