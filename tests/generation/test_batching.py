"""Requests of many users sharing one batch (engines/generation/batching.py), on the shipped checkpoints."""
from __future__ import annotations

import threading

import pytest

from engines.config import load_config
from engines.errors import StudioError
from engines.generation import GENERATORS, Request
from engines.generation.batching import Batcher, Job


@pytest.fixture(scope="module")
def cfg():
    return load_config()


@pytest.fixture(scope="module")
def generators(cfg):
    return {name: GENERATORS[name].load(f"{cfg.model.checkpoints_dir}/{name}.pt") for name in GENERATORS}


def _requests(name: str, cfg, generators) -> list[Request]:
    """Three requests to one engine that differ in everything a shared batch lets them differ in."""
    settings = generators[name].settings_for(cfg, {"steps": 8} if name == "diffusion" else None)
    asks = [dict(mode="RED"), dict(mode="BLUE", tonic="G", metre="3/4"), dict(mode="WHITE", attributes={"energy": 0.8})]
    return [Request(name, n=2 + i, seed=11 * i + 1, settings=settings, **ask) for i, ask in enumerate(asks)]


def _notes(segments) -> list:
    return [s.notes.tolist() for s in segments]


@pytest.mark.parametrize("name", ["vae", "diffusion"])
def test_requests_sampled_together_get_exactly_what_they_get_alone(name, cfg, generators):
    generator = generators[name]
    requests = _requests(name, cfg, generators)
    keys = [generator.batch_key(r) for r in requests]
    assert None not in keys and len(set(keys)) == 1   # they may share a batch
    alone = [generator.run(r) for r in requests]
    jobs = [Job(r, None, k) for r, k in zip(requests, keys)]
    generator.run_batch(jobs)
    together = [job.wait() for job in jobs]
    assert [len(s) for s in together] == [2, 3, 4]
    assert [_notes(s) for s in together] == [_notes(s) for s in alone]
    assert {(s.ts_num, s.ts_den) for s in together[1]} == {(3, 4)}   # each keeps its own metre


def test_the_gpt_writes_each_requests_rows_with_its_own_settings(cfg, generators):
    gpt = generators["autoregressive"]
    hot = gpt.settings_for(cfg, {"temperature": 1.3, "top_p": 1.0})
    requests = [Request("autoregressive", mode="GREEN", n=3, seed=1), Request("autoregressive", mode="GREEN", n=2,
                                                                                 seed=2, settings=hot, tonic="D")]
    keys = [gpt.batch_key(r) for r in requests]
    assert keys[0] is not None and keys[0] == keys[1]   # the same prompt: one batch, whatever the sampling
    assert gpt.batch_key(Request("autoregressive", mode="RED", n=1)) != keys[0]   # another prompt waits
    assert gpt.batch_key(Request("autoregressive", mode="GREEN", n=1, settings={"prompt_guidance": 1.5})) == keys[0]
    assert gpt.batch_key(Request("autoregressive", mode="GREEN", n=1, settings={"beam_width": 2})) is None
    jobs = [Job(r, None, k) for r, k in zip(requests, keys)]
    gpt.run_batch(jobs)
    first, second = (job.wait() for job in jobs)
    assert len(first) == 3 and len(second) == 2 and all(len(s.notes) for s in first + second)
    from engines.models.roll_decoding import segment_tonic

    assert {segment_tonic(s) for s in second} == {2}   # the pitch class of D: each request its own tonic
    # int8 activations are scaled over the whole batch, so those rows may differ from the request alone; in
    # float32 they are the rows it gets alone (the README's advice for exact GPT seeds under load)
    from engines.generation.autoregressive import AutoregressiveGenerator
    from engines.models.trained_autoregressive import TrainedAutoregressive

    exact = AutoregressiveGenerator(TrainedAutoregressive.load(f"{cfg.model.checkpoints_dir}/autoregressive.pt",
                                                               precision="float32"))
    jobs = [Job(r, None, exact.batch_key(r)) for r in requests]
    exact.run_batch(jobs)
    assert [_notes(job.wait()) for job in jobs] == [_notes(exact.run(r)) for r in requests]


def test_concurrent_requests_share_batches_and_each_gets_its_own(cfg, generators):
    generator = generators["diffusion"]   # a run takes long enough for the others to queue behind the first
    batcher = Batcher(generator, max_batch=8, window_s=0.05)
    settings = generator.settings_for(cfg, {"steps": 6})
    requests = [Request("diffusion", mode="RED", n=1 + seed % 2, seed=seed, settings=settings) for seed in range(8)]
    alone = [generator.run(r) for r in requests]
    results: dict[int, list] = {}
    threads = [threading.Thread(target=lambda i=i: results.__setitem__(i, batcher.run(requests[i])))
               for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    # the first finds the engine idle and samples alone; the others queue and share the next batch
    assert list(batcher.batches)[0] == 1 and max(batcher.batches) > 1 and sum(batcher.batches) == 8
    assert [_notes(results[i]) for i in range(8)] == [_notes(s) for s in alone]


def test_batch_cap_one_runs_every_request_alone(cfg, generators):
    generator = generators["vae"]
    batcher = Batcher(generator, max_batch=1)
    request = Request("vae", mode="BLUE", n=2, seed=3, settings=generator.settings_for(cfg))
    assert _notes(batcher.run(request)) == _notes(generator.run(request))
    assert not batcher.batches   # nothing went through the dispatcher


def test_stop_ends_one_requests_rows_and_not_the_others(cfg, generators):
    diffusion = generators["diffusion"]
    settings = diffusion.settings_for(cfg, {"steps": 8})
    stopped, going = (Request("diffusion", mode=m, n=2, seed=s, settings=settings)
                      for m, s in (("RED", 1), ("BLUE", 2)))
    seen = {"stopped": [], "going": []}

    def stop_at_three(i, total, state):
        seen["stopped"].append(i)
        return i == 2

    def watch(i, total, state):
        seen["going"].append(i)
        x0, bar_steps = state
        assert x0.shape[0] == 2 and len(bar_steps) == 2   # its own rows only: the live view of this request
        return False

    jobs = [Job(stopped, stop_at_three, "k"), Job(going, watch, "k")]
    diffusion.run_batch(jobs)
    assert seen["stopped"] == [0, 1, 2] and seen["going"] == list(range(8))
    assert _notes(jobs[0].wait()) == _notes(diffusion.run(stopped, lambda i, total, state: i == 2))
    assert _notes(jobs[1].wait()) == _notes(diffusion.run(going))


def test_a_request_that_fails_its_checks_fails_alone(cfg, generators):
    vae = generators["vae"]
    good = Request("vae", mode="RED", n=2, seed=1, settings=vae.settings_for(cfg))
    bad = Request("vae", mode="RED", n=2, seed=1, settings={"temperature": 9.0})
    assert vae.batch_key(bad) is None   # through a Batcher it runs alone, and raises there
    jobs = [Job(good, None, "vae"), Job(bad, None, "vae")]
    vae.run_batch(jobs)
    assert len(jobs[0].wait()) == 2
    with pytest.raises(StudioError, match="temperature"):
        jobs[1].wait()
    batcher = Batcher(vae, max_batch=8)
    with pytest.raises(StudioError, match="temperature"):
        batcher.run(bad)


def test_a_failing_batch_tells_every_request_in_it(cfg, generators, monkeypatch):
    vae = generators["vae"]

    def out_of_memory(parts):   # the shared decode fails (a fault injected into the real model)
        raise RuntimeError("the engine ran out of memory")

    monkeypatch.setattr(vae.model, "decoder_outputs", out_of_memory)
    batcher = Batcher(vae, max_batch=4)
    jobs = [Job(Request("vae", mode="RED", n=2, seed=seed), None, "vae") for seed in range(3)]
    batcher._sample(jobs)   # noqa: SLF001  (the dispatcher's step, on a batch it took)
    for job in jobs:
        with pytest.raises(RuntimeError, match="ran out of memory"):
            job.wait()
    assert list(batcher.batches) == [3]


def test_the_batch_cap_is_checked_in_the_config():
    with pytest.raises(StudioError, match="generation.batching.max_batch"):
        load_config(overrides=["generation.batching.max_batch=0"])
    cfg = load_config(overrides=["generation.batching.max_batch=1"])
    assert cfg.generation.batching.requests_at_once == 4   # as before batching
    assert load_config().generation.batching.requests_at_once == 4 * load_config().generation.batching.max_batch


@pytest.mark.slow
def test_openmp_keeps_spinning_between_operations_unless_the_user_chose_otherwise():
    """engines/__init__.py sets how torch's libgomp waits before torch loads it (read once, at load); a user's
    own OMP_WAIT_POLICY or GOMP_SPINCOUNT is left alone, and then neither is set."""
    import os
    import subprocess
    import sys

    from engines import OPENMP_WAITING

    probe = ("import os, engines, torch; print(os.environ.get('OMP_WAIT_POLICY'), os.environ.get('GOMP_SPINCOUNT'), "
             "torch.get_num_threads() >= 1)")
    clean = {k: v for k, v in os.environ.items() if k not in OPENMP_WAITING}

    def seen(**env) -> str:
        return subprocess.run([sys.executable, "-c", probe], env=dict(clean, **env), capture_output=True, text=True,
                              check=True).stdout.strip()
    assert seen() == "ACTIVE 300000 True"
    assert seen(OMP_WAIT_POLICY="PASSIVE") == "PASSIVE None True"
    assert seen(GOMP_SPINCOUNT="0") == "None 0 True"


def test_the_threads_per_operation_are_set_once_for_every_thread_of_the_studio(tmp_path):
    import torch

    from engines.registry import ModelRegistry

    with pytest.raises(StudioError, match="generation.batching.threads"):
        load_config(overrides=["generation.batching.threads=0"])
    before = torch.get_num_threads()
    ModelRegistry(tmp_path, load_config().generation.batching)   # null: torch's own choice stays
    assert torch.get_num_threads() == before
    try:
        ModelRegistry(tmp_path, load_config(overrides=["generation.batching.threads=1"]).generation.batching)
        seen = []

        def later():   # a request's thread, started after the studio
            torch.ones(64, 64) @ torch.ones(64, 64)
            seen.append(torch.get_num_threads())
        thread = threading.Thread(target=later)
        thread.start(), thread.join()
        assert torch.get_num_threads() == 1 and seen == [1]
    finally:
        torch.set_num_threads(before)
