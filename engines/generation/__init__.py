"""Every generative engine behind one interface (engines/generation/base.py), and verified generation on it
(engines/generation/verify.py).

    from engines.generation import GENERATORS, Request
    generator = GENERATORS["vae"].load("assets/checkpoints/vae.pt")

`GENERATORS` is the only list of engine names in the project: the registry of loaded models, the config's
checks, the CLI's choices, the evaluation suite, the bench, the listening sessions and the studio all read it.
Importing this package loads no torch; an engine's model loads in `load`.
"""
from __future__ import annotations

from engines.generation.autoregressive import AutoregressiveGenerator, AutoregressiveSettings
from engines.generation.base import Generator, Preview, Request
from engines.generation.diffusion import DiffusionGenerator, DiffusionSettings
from engines.generation.vae import VAEGenerator, VAESettings

GENERATORS: dict[str, type] = {g.name: g for g in (VAEGenerator, DiffusionGenerator, AutoregressiveGenerator)}

__all__ = ["GENERATORS", "Generator", "Preview", "Request", "VAESettings", "DiffusionSettings",
           "AutoregressiveSettings"]
