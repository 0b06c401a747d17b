#!/usr/bin/env bash
# Retrain every shipped checkpoint on one GPU within about 10 minutes, into a folder of its own:
#
#   scripts/train_gpu.sh [OUT]            OUT (default data/gpu-run): OUT/runs/<engine>/ (metrics, best.pt) and
#                                         OUT/checkpoints/<engine>.pt + .md (shipped form, with model cards)
#   TINY=1 scripts/train_gpu.sh OUT       the same steps with tiny models on 64 segments: a CPU check that the
#                                         script runs end to end (tests/test_train_gpu.py)
#
# The engines train in dependency order (the judge first: verified generation and the evaluations read it;
# the guidance classifier after diffusion, whose noise schedule it must match). Each gets a wall-clock budget
# (MINUTES_<ENGINE>, below) and GPU-sized batches; `python -m engines train` picks cuda when there is one.
# Compare OUT/checkpoints with assets/checkpoints (python -m engines evaluate --checkpoint ...) before
# shipping anything: only a checkpoint whose figures beat the shipped one replaces it.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${1:-data/gpu-run}"
PY="${PYTHON:-.venv/bin/python}"
WORKERS="${WORKERS:-8}"
mkdir -p "$OUT/runs" "$OUT/checkpoints"
SHIP=(--set "model.checkpoints_dir=$OUT/checkpoints")

if [ "${TINY:-0}" = "1" ]; then
  LIMIT=(--limit 64)
  WORKERS=0
  declare -A SETTINGS=(
    [judge]="model.judge.base_channels=8 model.judge.channel_mults=[1,2] model.judge.condition_dim=16 model.judge.embedding_dim=16 model.judge.epochs=1 model.judge.batch_size=32"
    [vae]="model.vae.latent_dim=16 model.vae.hidden_dim=32 model.vae.batch_size=16 model.vae.epochs=1"
    [diffusion]="model.diffusion.base_channels=16 model.diffusion.channel_mults=[1,2] model.diffusion.embedding_dim=32 model.diffusion.attention_heads=2 model.diffusion.batch_size=16 model.diffusion.epochs=1 model.diffusion.num_steps=100"
    [guidance-classifier]="model.diffusion.base_channels=16 model.diffusion.channel_mults=[1,2] model.diffusion.embedding_dim=32 model.diffusion.attention_heads=2 model.diffusion.num_steps=100 model.guidance_classifier.base_channels=16 model.guidance_classifier.channel_mults=[1,2] model.guidance_classifier.embedding_dim=32 model.guidance_classifier.batch_size=16 model.guidance_classifier.epochs=1"
    [codec]="model.codec.n_filters=4 model.codec.dimension=8 model.codec.lstm=0 model.codec.n_q=2 model.codec.bins=16 model.codec.epochs=1 model.codec.batch_size=4 model.codec.crop_seconds=0.25 model.codec.crops_per_segment=2"
    [autoregressive]="model.autoregressive.n_layer=1 model.autoregressive.n_head=2 model.autoregressive.n_embd=32 model.autoregressive.batch_size=16 model.autoregressive.epochs=1 model.autoregressive.captions_per_segment=2 model.autoregressive.copy_check_samples=4"
  )
  declare -A MINUTES=([judge]=0 [vae]=0 [diffusion]=0 [guidance-classifier]=0 [codec]=0 [autoregressive]=0)
else
  LIMIT=()
  # GPU-sized batches and the epochs each budget allows on one H200-class GPU (measured on CPU per epoch,
  # scaled); the budgets add up to about 9 minutes of training.
  declare -A SETTINGS=(
    [judge]="model.judge.batch_size=256 model.judge.epochs=20"
    [vae]="model.vae.batch_size=512 model.vae.learning_rate=2e-3 model.vae.epochs=40 model.vae.beta=0.4 model.vae.beta_warmup_epochs=8 model.vae.prior=standard model.vae.adversary_weight=0.2"
    [diffusion]="model.diffusion.batch_size=256 model.diffusion.learning_rate=8e-4 model.diffusion.epochs=40"
    [guidance-classifier]="model.guidance_classifier.batch_size=256 model.guidance_classifier.epochs=12"
    [codec]="model.codec.batch_size=32"
    [autoregressive]="model.autoregressive.batch_size=128 model.autoregressive.learning_rate=2e-3 model.autoregressive.epochs=6"
  )
  declare -A MINUTES=([judge]="${MINUTES_JUDGE:-1}" [vae]="${MINUTES_VAE:-1.5}" [diffusion]="${MINUTES_DIFFUSION:-3}"
                      [guidance-classifier]="${MINUTES_GUIDANCE:-0.75}" [codec]="${MINUTES_CODEC:-0.75}"
                      [autoregressive]="${MINUTES_AUTOREGRESSIVE:-2}")
fi

started=$(date +%s)
for engine in judge vae diffusion guidance-classifier codec autoregressive; do
  sets=()
  for setting in ${SETTINGS[$engine]}; do sets+=(--set "$setting"); done
  budget=()
  [ "${MINUTES[$engine]}" != "0" ] && budget=(--max-minutes "${MINUTES[$engine]}")
  echo "== $engine ($(( $(date +%s) - started )) s so far)"
  "$PY" -m engines train --engine "$engine" --out "$OUT/runs/$engine" --workers "$WORKERS" --ship \
    "${LIMIT[@]}" "${budget[@]}" "${sets[@]}" "${SHIP[@]}"
done
echo "== done in $(( $(date +%s) - started )) s: $OUT/checkpoints"
