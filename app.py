"""Start the Chromatic Segment Studio: `python app.py [--listen] [--port 7860] [--share] [--set key=value]`."""
from __future__ import annotations

import argparse
import os
import sys
import threading

# Nothing at run time reaches the internet.
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--config", help="YAML file of config overrides")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--host", help="address to bind (default studio.host, 127.0.0.1)")
    parser.add_argument("--listen", action="store_true", help="bind 0.0.0.0: open the studio to your network")
    parser.add_argument("--port", type=int, help="port (default studio.port, 7860)")
    parser.add_argument("--share", action="store_true", help="ask Gradio for a public share link (off by default)")
    args = parser.parse_args(argv)

    from engines.api import StudioEngine
    from engines.config import load_config
    from engines.errors import StudioError
    from studio.app import launch

    try:
        cfg = load_config(args.config, args.set)
        engine = StudioEngine(cfg)
    except StudioError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    host = "0.0.0.0" if args.listen else (args.host or cfg.studio.host)
    # Load the VAE and compile umap's numba code while the page loads, so the first map click is fast.
    warm = threading.Thread(target=engine.warm_up, name="warm-up", daemon=True)
    launch(engine, host, args.port or cfg.studio.port, share=args.share or cfg.studio.share, after_build=warm.start)
    return 0


if __name__ == "__main__":
    sys.exit(main())
