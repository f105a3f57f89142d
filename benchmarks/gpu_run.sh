#!/usr/bin/env bash
# The GPU measurements of BENCHMARKS.md, by stage: bash benchmarks/gpu_run.sh STAGE... (results under $OUT).
#   setup    install this checkout (no dependencies: the GPU image has them) and print the device
#   check    benchmarks/gpu_check.py: CUDA graphs = eager, population = reference on the GPU, ResNet layouts
#   steps    benchmarks/step_times.py: ms per step by models, layouts, graphs; phases and kernel profile
#   engines  benchmarks/engines.py on MNIST-shaped data, 1/10/100/1000 models
#   zoo3     the 1,000-model MNIST seed zoo through `modelzoos generate`, 3 epochs
#   zoo      the same, 50 epochs (the goal: ≤ 5 minutes; ≈ 39 minutes measured by projection)
#   resnet   benchmarks/resnet.py, CIFAR-10 ResNet-18 variants
# The fused Triton kernels (MODELZOOS_KERNELS=fused, benchmarks/kernels.py), in this order in one command:
#   kwarm    compile the kernel variants of kcheck/ksteps in parallel (≈ 1–2 min on 16 cores, estimated)
#   kcheck   fused = torch engine after one epoch (3 workloads, all activations/optimizers, dropout), determinism
#   ksteps   ms per step at 1/10/100/1000 models, torch vs fused; launch shapes at 1000 models; eval time
#   kprofile torch.profiler of 10 eager fused steps of 1000 models
#   kzoo     the 1,000-model MNIST seed zoo through `modelzoos generate` with the fused kernels: as many of the 50
#            epochs as fit before DEADLINE_S seconds after this script started (default 540: one 10-minute
#            command), sized from ksteps' measured step and evaluation times; all 50 when they fit
#   kzoo50   the same zoo, all 50 epochs, unsized: for a command of its own once ksteps showed that
#            ≈ 45 + 50 × (3.5 + 5,000 × step) s fit (≈ 7.5 minutes at 1 ms per step)
# e.g. (≈ 9 minutes, leaves a rerun's worth of a 15-minute lease):
#   DEADLINE_S=540 bash benchmarks/gpu_run.sh setup kwarm kcheck ksteps kprofile kzoo
set -uo pipefail
OUT=${OUT:-out/gpu}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
DEADLINE_S=${DEADLINE_S:-540}
for stage in "$@"; do
  echo "=== $stage $(date +%T)"
  case $stage in
    setup)
      python3 -m pip install -q --no-deps --no-build-isolation --no-index -e . 2>&1 | tail -2
      nvidia-smi --query-gpu=name,memory.total,clocks.max.sm,power.limit --format=csv
      python3 -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name())" ;;
    check)
      python3 benchmarks/gpu_check.py --json "$OUT/gpu_check.json" ;;
    steps)
      MODELZOOS_CHANNELS_LAST=1 python3 benchmarks/step_times.py --no-cudnn-benchmark --no-reference | tee "$OUT/steps_cl_heuristic.txt"
      python3 benchmarks/step_times.py --models 100 1000 --no-cudnn-benchmark | tee "$OUT/steps_heuristic.txt"
      python3 benchmarks/step_times.py --models 100 1000 --steps 100 --profile 10 | tee "$OUT/steps_profile.txt"
      MODELZOOS_CHANNELS_LAST=1 python3 benchmarks/step_times.py --models 1000 --steps 100 --no-reference \
        | tee "$OUT/steps_cl.txt" ;;
    engines)
      python3 benchmarks/engines.py --device cuda --data mnist-shaped --models 1 10 100 1000 --reference-models 1 \
        --peak-flops 66.9e12 --json "$OUT/engines_cuda.json" ;;  # 66.9e12: H100 SXM FP32 peak, dense
    zoo3)
      python3 benchmarks/mnist_zoo.py --out /tmp/zoo3 --epochs 3 --json "$OUT/mnist_zoo_3epochs.json" ;;
    zoo)
      python3 benchmarks/mnist_zoo.py --out /tmp/zoo --json "$OUT/mnist_zoo.json" ;;
    resnet)
      python3 benchmarks/resnet.py --json "$OUT/resnet_cuda.json" ;;
    kwarm)
      python3 benchmarks/kernels.py warm 2>&1 | tee "$OUT/kernels_warm.txt" ;;
    kcheck)
      python3 benchmarks/kernels.py check --json "$OUT/kernels_check.json" ;;
    ksteps)
      python3 benchmarks/kernels.py steps --json "$OUT/kernels_steps.json" ;;
    kprofile)
      python3 benchmarks/kernels.py profile 2>&1 | tee "$OUT/kernels_profile.txt" ;;
    kzoo)
      budget=$((DEADLINE_S - SECONDS - 30))  # 30 s for the zoo's data and the results
      echo "zoo budget: $budget s"
      python3 benchmarks/kernels.py zoo --out /tmp/kernels_zoo --budget-s "$budget" \
        --steps-json "$OUT/kernels_steps.json" --json "$OUT/kernels_zoo.json" ;;
    kzoo50)
      python3 benchmarks/kernels.py zoo --out /tmp/kernels_zoo50 --epochs 50 --json "$OUT/kernels_zoo50.json" ;;
    *) echo "unknown stage $stage"; exit 2 ;;
  esac
done
