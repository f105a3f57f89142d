#!/usr/bin/env bash
# The GPU measurements of BENCHMARKS.md, by stage: bash benchmarks/gpu_run.sh STAGE... (results under $OUT).
#   setup    install this checkout (no dependencies: the GPU image has them) and print the device
#   check    benchmarks/gpu_check.py: CUDA graphs = eager, population = reference on the GPU, ResNet layouts
#   steps    benchmarks/step_times.py: ms per step by models, layouts, graphs; phases and kernel profile
#   engines  benchmarks/engines.py on MNIST-shaped data, 1/10/100/1000 models
#   zoo3     the 1,000-model MNIST seed zoo through `modelzoos generate`, 3 epochs
#   zoo      the same, 50 epochs (the goal: ≤ 5 minutes; ≈ 39 minutes measured by projection)
#   resnet   benchmarks/resnet.py, CIFAR-10 ResNet-18 variants
set -uo pipefail
OUT=${OUT:-out/gpu}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
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
    *) echo "unknown stage $stage"; exit 2 ;;
  esac
done
