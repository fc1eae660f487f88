#!/usr/bin/env bash
# Build the TensorRT-LLM engine of katanemo/Arch-Router-1.5B and complete this model repository, inside
# the official Triton + TensorRT-LLM image (needs an NVIDIA GPU, docker with the NVIDIA runtime, and the
# model weights on disk). Run from anywhere:
#
#   triton_models/arch_router_trtllm/build_engine.sh /path/to/Arch-Router-1.5B      # HF checkpoint dir
#
# What it does (all inside the container; nothing is installed on the host):
#   1. convert_checkpoint.py (Qwen)  HF weights -> TensorRT-LLM checkpoint, bf16, tp=1
#   2. trtllm-build                  checkpoint -> engine in tensorrt_llm/1/ (paged KV cache, paged
#                                    context FMHA for KV-cache reuse, 32-token blocks, batch 64)
#   3. copies the stock preprocessing/postprocessing 1/model.py of the same TensorRT-LLM release next to
#      our config.pbtxt files
# The config.pbtxt files here are already filled (README.md explains every value); their paths assume
# the repository is mounted at /models/arch_router_trtllm and the HF checkpoint at /models/hf/Arch-Router-1.5B,
# as in the `docker run` line the script prints at the end.
set -euo pipefail

# Pinned: the image and the TensorRT-LLM release inside it must match (Triton 25.06 ships TRT-LLM 0.20.0).
IMAGE="${IMAGE:-nvcr.io/nvidia/tritonserver:25.06-trtllm-python-py3}"
TRTLLM_TAG="${TRTLLM_TAG:-v0.20.0}"
MAX_BATCH=64          # = max_batch_size in the config.pbtxt files
MAX_INPUT_LEN=3072    # the router prompt is capped at ~2048 tokens (docs/arch-router.md) + ChatML + routes
MAX_SEQ_LEN=3104      # input + 32 generated tokens at most
MAX_NUM_TOKENS=16384  # tokens per engine step across the in-flight batch

HF_DIR="$(cd "${1:?usage: build_engine.sh /path/to/Arch-Router-1.5B}" && pwd)"
REPO_DIR="$(cd "$(dirname "$0")" && pwd)"
[ -f "$HF_DIR/config.json" ] || { echo "$HF_DIR has no config.json: not a Hugging Face checkpoint" >&2; exit 1; }

docker run --rm --gpus all --ipc=host --ulimit memlock=-1 --ulimit stack=67108864 \
  -v "$HF_DIR":/models/hf/Arch-Router-1.5B:ro \
  -v "$REPO_DIR":/models/arch_router_trtllm \
  -e TRTLLM_TAG="$TRTLLM_TAG" -e MAX_BATCH="$MAX_BATCH" -e MAX_INPUT_LEN="$MAX_INPUT_LEN" \
  -e MAX_SEQ_LEN="$MAX_SEQ_LEN" -e MAX_NUM_TOKENS="$MAX_NUM_TOKENS" \
  "$IMAGE" bash -euxo pipefail -c '
    cd /tmp
    git clone --depth 1 --branch "$TRTLLM_TAG" https://github.com/NVIDIA/TensorRT-LLM.git trtllm
    QWEN=trtllm/examples/models/core/qwen
    [ -d "$QWEN" ] || QWEN=trtllm/examples/qwen                     # layout of releases before 0.19
    MODELS=trtllm/triton_backend/all_models/inflight_batcher_llm
    [ -d "$MODELS" ] || { echo "no triton_backend in $TRTLLM_TAG: use the tensorrtllm_backend repo of the same tag" >&2; exit 1; }

    python3 "$QWEN/convert_checkpoint.py" \
      --model_dir /models/hf/Arch-Router-1.5B --output_dir /tmp/ckpt --dtype bfloat16 --tp_size 1

    trtllm-build --checkpoint_dir /tmp/ckpt --output_dir /models/arch_router_trtllm/tensorrt_llm/1 \
      --gemm_plugin auto --gpt_attention_plugin auto \
      --remove_input_padding enable --kv_cache_type paged --use_paged_context_fmha enable \
      --tokens_per_block 32 \
      --max_batch_size "$MAX_BATCH" --max_input_len "$MAX_INPUT_LEN" --max_seq_len "$MAX_SEQ_LEN" \
      --max_num_tokens "$MAX_NUM_TOKENS" --max_beam_width 1

    for m in preprocessing postprocessing; do
      mkdir -p /models/arch_router_trtllm/$m/1
      cp "$MODELS/$m/1/model.py" /models/arch_router_trtllm/$m/1/model.py
    done

  '

cat <<EOF

Engine built in $REPO_DIR/tensorrt_llm/1. Start Triton:

  docker run --rm --gpus all --ipc=host -p 8000:8000 -p 8001:8001 -p 8002:8002 \\
    -v "$HF_DIR":/models/hf/Arch-Router-1.5B:ro -v "$REPO_DIR":/models/arch_router_trtllm \\
    $IMAGE tritonserver --model-repository=/models/arch_router_trtllm

Then point the gateway at it (routing.router: {backend: triton, url: HOST:8001, model: ensemble}), e.g.
  .venv/bin/plano-extproc up --config triton_models/plano-config-gpu.yaml
EOF
