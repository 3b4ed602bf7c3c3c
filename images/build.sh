#!/usr/bin/env bash
# Build (and optionally push) the srcal images, tagged by git sha:
#   images/build.sh [--push] [--registry ghcr.io/srcal] [--only train|vllm] [--dry-run]
# Prints the image references, and the compile command that points the pipeline at them.
# A dirty work tree is refused (the tag would lie about the content) unless ALLOW_DIRTY=1.
set -euo pipefail
cd "$(dirname "$0")/.."

REGISTRY="${REGISTRY:-ghcr.io/srcal}"
PUSH=0
DRY_RUN=0
ONLY=""
while [ $# -gt 0 ]; do
  case "$1" in
    --push) PUSH=1 ;;
    --registry) REGISTRY="$2"; shift ;;
    --only) ONLY="$2"; shift ;;
    --dry-run) DRY_RUN=1 ;;
    -h|--help) sed -n '2,5p' "$0"; exit 0 ;;
    *) echo "build.sh: unknown argument $1" >&2; exit 2 ;;
  esac
  shift
done

SHA="$(git rev-parse --short=12 HEAD)"
if [ -n "$(git status --porcelain -- src pyproject.toml images)" ] && [ "${ALLOW_DIRTY:-0}" != "1" ]; then
  echo "build.sh: uncommitted changes under src/, images/ or pyproject.toml; commit them (or ALLOW_DIRTY=1)" >&2
  exit 1
fi
# On a release tag (v1.2.3) the images also get that tag.
RELEASE="$(git describe --exact-match --tags 2>/dev/null || true)"

run() {
  echo "+ $*"
  if [ "$DRY_RUN" != "1" ]; then "$@"; fi
}

for name in train vllm; do
  if [ -n "$ONLY" ] && [ "$ONLY" != "$name" ]; then continue; fi
  image="${REGISTRY}/srcal-${name}"
  tags=(-t "${image}:${SHA}")
  if [ -n "$RELEASE" ]; then tags+=(-t "${image}:${RELEASE}"); fi
  run docker build -f "images/Dockerfile.${name}" "${tags[@]}" \
    --label "org.opencontainers.image.revision=$(git rev-parse HEAD)" \
    --label "org.opencontainers.image.source=srcal" .
  if [ "$PUSH" = "1" ]; then
    run docker push "${image}:${SHA}"
    if [ -n "$RELEASE" ]; then run docker push "${image}:${RELEASE}"; fi
  fi
  echo "${image}:${SHA}"
done
echo "compile against these images: srcal pipeline compile --registry ${REGISTRY} --image-tag ${SHA} --output build/srcal_pipeline.yaml"
