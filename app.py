"""Start the Chromatic Segment Studio: `python app.py [--listen] [--port 7860] [--share] [--set key=value]`."""
from __future__ import annotations

import argparse
import os
import signal
import sys
import threading

# Nothing at run time reaches the internet.
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--config", help="YAML file of config overrides")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--host", help="address to bind (default studio.host, 127.0.0.1)")
    parser.add_argument("--listen", action="store_true", help="bind 0.0.0.0: open the studio to your network")
    parser.add_argument("--port", type=int, help="port (default studio.port, 7860)")
    parser.add_argument("--share", action="store_true", help="ask Gradio for a public share link (off by default)")
    args = parser.parse_args(argv)

    from engines.memory import limit_malloc_arenas

    limit_malloc_arenas()   # before the server's threads: memory stays bounded under many users (memory.py)
    from engines.config import load_config
    from engines.errors import StudioError
    from engines.folders import check_writable
    from engines.sessions.locations import check_session_folders

    try:   # settings and folders first, before the seconds of importing torch and Gradio
        cfg = load_config(args.config, args.set)
        check_writable(cfg.data.cache_dir, "data.cache_dir")
        check_session_folders(cfg.sessions.database, cfg.sessions.stimuli_dir)
    except StudioError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    from engines.api import StudioEngine
    from studio.app import launch

    try:
        engine = StudioEngine(cfg)
        host = "0.0.0.0" if args.listen else (args.host or cfg.studio.host)
        share = args.share or cfg.studio.share
        engine.served_beyond_localhost = share or host not in LOCAL_HOSTS
        if engine.served_beyond_localhost or not engine.open_creation:
            announce_listening(engine)   # opens the database now: a bad one stops the start, not a rater
    except StudioError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    # SIGTERM (a service manager's stop) ends the process as Ctrl-C does, so exit handlers run: the renders
    # folder (engine.out_dir) is removed.
    signal.signal(signal.SIGTERM, lambda _signum, _frame: sys.exit(0))
    # Load the VAE and compile umap's numba code while the page loads, so the first map click is fast.
    warm = threading.Thread(target=engine.warm_up, name="warm-up", daemon=True)
    launch(engine, host, args.port or cfg.studio.port, share=share,
           after_build=warm.start if cfg.studio.warm_up else None)
    return 0


def announce_listening(engine) -> None:
    """For a studio served beyond this machine (or closed to creating): open the listening database, and say
    how organisers create sessions. When creating needs a key and none exists yet, one is made and printed here,
    once."""
    store = engine.listening.store
    if engine.open_creation:
        print("listening sessions: anyone reaching this studio may create one (sessions.open_creation: true)")
    elif store.has_creator_keys():
        print("listening sessions: creating one needs an organiser key; `python -m engines listen key` makes another")
    else:
        print(f"listening sessions: creating one needs this organiser key (shown once; `python -m engines listen "
              f"key` makes another): {store.add_creator_key()}", flush=True)


if __name__ == "__main__":
    sys.exit(main())
