#!/usr/bin/env bash
# Retrain the shipped checkpoints on one GPU within about 10 minutes, into a folder of its own:
#
#   scripts/train_gpu.sh [OUT]            OUT (default data/gpu-run): OUT/runs/<engine>/ (metrics, best.pt, train.log)
#                                         and OUT/checkpoints/<engine>.pt + .md (shipped form, with model cards)
#   ENGINES="diffusion vae" ...           only these engines (default: all six)
#   FINALIZE=0 ...                        train only (`--skip-finalize`, nothing shipped): the VAE's map and the GPT's
#                                         sampling calibration are CPU work, so a short GPU lease trains and the CPU
#                                         machine then runs `train --engine E --finalize-only --out OUT/runs/E` and
#                                         `ship --engine E --run OUT/runs/E`
#   DEADLINE=SECONDS ...                  stop any engine still running after this long (its best.pt stays)
#   TINY=1 scripts/train_gpu.sh OUT       the same steps with tiny models on 64 segments, one engine after another
#                                         (PARALLEL=1: together, as on a GPU):
#                                         a CPU check that the script runs end to end (tests/training/test_train_gpu.py)
#
# On a GPU the engines train at the same time, each with its own wall-clock budget (MINUTES_<ENGINE>, below): every
# one is small (3-5 M parameters), so one alone leaves the GPU mostly waiting on Python and on its data loaders, and
# the six share it and the machine's cores (WORKERS loaders each). They are independent: the guidance classifier
# needs only the diffusion's noise schedule (config), not its weights. `python -m engines train` picks cuda when
# there is one, and lets fp32 products use TF32 there. Compare OUT's checkpoints with assets/checkpoints
# (python -m engines evaluate --checkpoint ...) before shipping anything: only one whose figures beat the shipped
# one replaces it.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${1:-data/gpu-run}"
PY="${PYTHON:-.venv/bin/python}"
WORKERS="${WORKERS:-4}"
ENGINES="${ENGINES:-judge vae diffusion guidance-classifier codec autoregressive}"
mkdir -p "$OUT/runs" "$OUT/checkpoints"
# The shipped VAE's decoder is trained to follow its condition by a critic, the shipped guidance classifier
# (docs/vae.md, "Training"; on the CPU a fine-tune of vae-v4, here from the start)
VAE_CRITIC="model.vae.critic=assets/checkpoints/guidance-classifier.pt model.vae.critic_weight=10"

if [ "${TINY:-0}" = "1" ]; then
  LIMIT=(--limit 64)
  WORKERS=0
  PARALLEL="${PARALLEL:-0}"
  declare -A SETTINGS=(
    [judge]="model.judge.base_channels=8 model.judge.channel_mults=[1,2] model.judge.condition_dim=16 model.judge.embedding_dim=16 model.judge.epochs=1 model.judge.batch_size=32"
    [vae]="model.vae.latent_dim=16 model.vae.hidden_dim=32 model.vae.batch_size=16 model.vae.epochs=1 $VAE_CRITIC"
    [diffusion]="model.diffusion.base_channels=16 model.diffusion.channel_mults=[1,2] model.diffusion.embedding_dim=32 model.diffusion.attention_heads=2 model.diffusion.batch_size=16 model.diffusion.epochs=1 model.diffusion.num_steps=100"
    [guidance-classifier]="model.diffusion.base_channels=16 model.diffusion.channel_mults=[1,2] model.diffusion.embedding_dim=32 model.diffusion.attention_heads=2 model.diffusion.num_steps=100 model.guidance_classifier.base_channels=16 model.guidance_classifier.channel_mults=[1,2] model.guidance_classifier.embedding_dim=32 model.guidance_classifier.batch_size=16 model.guidance_classifier.epochs=1"
    [codec]="model.codec.n_filters=4 model.codec.dimension=8 model.codec.lstm=0 model.codec.n_q=2 model.codec.bins=16 model.codec.epochs=1 model.codec.batch_size=4 model.codec.crop_seconds=0.25 model.codec.crops_per_segment=2"
    [autoregressive]="model.autoregressive.n_layer=1 model.autoregressive.n_head=2 model.autoregressive.n_embd=32 model.autoregressive.batch_size=16 model.autoregressive.epochs=1 model.autoregressive.captions_per_segment=2 model.autoregressive.copy_check_samples=4"
  )
  declare -A MINUTES=([judge]=0 [vae]=0 [diffusion]=0 [guidance-classifier]=0 [codec]=0 [autoregressive]=0)
else
  LIMIT=()
  PARALLEL="${PARALLEL:-1}"
  # GPU-sized batches. The epochs are a ceiling: the wall-clock budget ends each run, and the learning rate anneals
  # over that budget (ema_loop.learning_rate_factor). The GPT's copy check draws 96 samples an epoch: with 32, the
  # first lease's 0 and 2 copies were within chance of each other (docs/analyzer.md).
  declare -A SETTINGS=(
    [judge]="model.judge.batch_size=256 model.judge.epochs=20"
    [vae]="model.vae.batch_size=256 model.vae.learning_rate=1.5e-3 model.vae.epochs=200 model.vae.beta=0.4 model.vae.beta_warmup_epochs=8 model.vae.prior=standard model.vae.adversary_weight=0.2 $VAE_CRITIC"
    [diffusion]="model.diffusion.batch_size=256 model.diffusion.learning_rate=8e-4 model.diffusion.epochs=400"
    [guidance-classifier]="model.guidance_classifier.batch_size=256 model.guidance_classifier.epochs=40"
    [codec]="model.codec.batch_size=32"
    [autoregressive]="model.autoregressive.batch_size=64 model.autoregressive.learning_rate=1e-3 model.autoregressive.epochs=100 model.autoregressive.copy_check_samples=96"
  )
  declare -A MINUTES=([judge]="${MINUTES_JUDGE:-3}" [vae]="${MINUTES_VAE:-6}" [diffusion]="${MINUTES_DIFFUSION:-7}"
                      [guidance-classifier]="${MINUTES_GUIDANCE:-3}" [codec]="${MINUTES_CODEC:-7}"
                      [autoregressive]="${MINUTES_AUTOREGRESSIVE:-7}")
fi
FINISH=(--ship --set "model.checkpoints_dir=$OUT/checkpoints")
[ "${FINALIZE:-1}" = "0" ] && FINISH=(--skip-finalize)
STOP=()
[ -n "${DEADLINE:-}" ] && STOP=(timeout -k 15 "$DEADLINE")

# the segment cache is unpacked once, before engines that would each unpack it at the same time
"$PY" -c "from engines.config import load_config; from engines.data.prepare import ensure_corpus_cache; ensure_corpus_cache(load_config())"

started=$(date +%s)
declare -A PIDS=()
for engine in $ENGINES; do
  sets=()
  for setting in ${SETTINGS[$engine]}; do sets+=(--set "$setting"); done
  budget=()
  [ "${MINUTES[$engine]}" != "0" ] && budget=(--max-minutes "${MINUTES[$engine]}")
  echo "== $engine ($(( $(date +%s) - started )) s so far)"
  mkdir -p "$OUT/runs/$engine"
  command=("${STOP[@]}" "$PY" -m engines train --engine "$engine" --out "$OUT/runs/$engine" --workers "$WORKERS"
           "${FINISH[@]}" "${LIMIT[@]}" "${budget[@]}" "${sets[@]}")
  if [ "$PARALLEL" = "1" ]; then
    OMP_NUM_THREADS="${OMP_NUM_THREADS:-2}" "${command[@]}" > "$OUT/runs/$engine/train.log" 2>&1 &
    PIDS[$engine]=$!
  else
    "${command[@]}"
  fi
done
failed=()
for engine in "${!PIDS[@]}"; do
  wait "${PIDS[$engine]}" || failed+=("$engine")
  tail -n 3 "$OUT/runs/$engine/train.log" | sed "s/^/[$engine] /"
done
echo "== done in $(( $(date +%s) - started )) s: $OUT"
if [ ${#failed[@]} -gt 0 ]; then
  echo "failed or stopped at the deadline: ${failed[*]} (their logs: $OUT/runs/<engine>/train.log)" >&2
  exit 1
fi
