#!/usr/bin/env bash
# Install the MMDetection backend (mmengine 0.10.7, mmdet 3.3.0, mmcv 2.1.0 with compiled ops)
# into the main environment. PyPI has mmcv 2.1.0 only as source, so it is built once into a
# wheel and cached; later runs reuse the cached wheel (a few seconds instead of ~15 min).
#
#   scripts/setup_mmdet.sh [VENV]        (VENV defaults to .venv)
#   MMCV_WHEEL_CACHE=dir                 where the built wheel is kept (~/.cache/synthloop/wheels)
#   MMCV_MAX_JOBS=N                      parallel compile jobs (default 2)
#
# Build recipe (docs/mmdet.md, ../shared/STACK.md): setuptools<80 (mmcv's setup.py imports pkg_resources), ninja,
# numpy and torch preinstalled, --no-build-isolation, MMCV_WITH_OPS=1, and `-std=c++20` instead of
# `-std=c++17` in mmcv's setup.py (torch 2.14's headers need C++20). The build runs in a throwaway
# venv that sees the main venv's packages through a .pth file, so the main venv's setuptools is
# never downgraded.
set -euo pipefail

VENV=${1:-.venv}
PY="$VENV/bin/python"
MMCV_VERSION=2.1.0
MMENGINE_VERSION=0.10.7
MMDET_VERSION=3.3.0
CACHE=${MMCV_WHEEL_CACHE:-$HOME/.cache/synthloop/wheels}
JOBS=${MMCV_MAX_JOBS:-2}

die() { echo "setup-mmdet: ERROR: $*" >&2; exit 1; }
say() { echo "setup-mmdet: $*"; }

[ -x "$PY" ] || die "$PY not found: run 'make setup' first (the mmdet extra goes into the main venv)."
TORCH_VERSION=$("$PY" -c 'import torch; print(torch.__version__.split("+")[0])') \
  || die "torch is not importable from $PY: run 'make setup' first."
PYTAG=$("$PY" -c 'import sys; print(f"cp{sys.version_info[0]}{sys.version_info[1]}")')
mkdir -p "$CACHE"
# The wheel's filename does not say which torch it was compiled against: keep one folder per torch.
WHEEL_DIR="$CACHE/mmcv-$MMCV_VERSION-torch$TORCH_VERSION-$PYTAG"
WHEEL=$(ls "$WHEEL_DIR"/mmcv-"$MMCV_VERSION"-*.whl 2>/dev/null | head -1 || true)

if [ -n "$WHEEL" ]; then
  say "reusing cached wheel $WHEEL"
else
  command -v g++ >/dev/null || die "no C++ compiler (g++): apt-get install g++ (needed to build mmcv $MMCV_VERSION ops)."
  BUILD=$(mktemp -d "${TMPDIR:-/tmp}/mmcv-build.XXXXXX")
  trap 'rm -rf "$BUILD"' EXIT
  say "building mmcv $MMCV_VERSION against torch $TORCH_VERSION in $BUILD (~15 min on 2 idle cores, ~33 min on busy ones)"
  start=$(date +%s)
  "$PY" -m venv "$BUILD/venv"
  BPY="$BUILD/venv/bin/python"
  # The build venv sees torch/numpy of the main venv (appended to sys.path, after its own
  # site-packages, so its own setuptools<80 wins).
  MAIN_SITE=$("$PY" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
  BUILD_SITE=$("$BPY" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
  echo "$MAIN_SITE" > "$BUILD_SITE/synthloop-main-venv.pth"
  "$BPY" -m pip install -q "setuptools<80" wheel ninja \
    || die "could not install the build tools (setuptools<80, wheel, ninja) from the package index."
  "$BPY" -m pip download -q --no-deps --no-binary :all: --no-build-isolation \
      "mmcv==$MMCV_VERSION" -d "$BUILD/src" \
    || die "could not download the mmcv $MMCV_VERSION source distribution."
  tar -xzf "$BUILD"/src/mmcv-"$MMCV_VERSION".tar.gz -C "$BUILD/src"
  SRC="$BUILD/src/mmcv-$MMCV_VERSION"
  grep -q -- "-std=c++17" "$SRC/setup.py" || die "mmcv setup.py has no -std=c++17 flag to patch: the recipe no longer matches."
  sed -i 's/-std=c++17/-std=c++20/g' "$SRC/setup.py"
  (cd "$SRC" && PATH="$BUILD/venv/bin:$PATH" MMCV_WITH_OPS=1 MAX_JOBS="$JOBS" \
     "$BPY" -m pip wheel -v --no-deps --no-build-isolation . -w "$BUILD/dist" > "$BUILD/build.log" 2>&1) \
    || { tail -40 "$BUILD/build.log" >&2; die "the mmcv $MMCV_VERSION build failed (log above)."; }
  mkdir -p "$WHEEL_DIR"
  cp "$BUILD"/dist/mmcv-"$MMCV_VERSION"-*.whl "$WHEEL_DIR/"
  WHEEL=$(ls "$WHEEL_DIR"/mmcv-"$MMCV_VERSION"-*.whl | head -1)
  say "built $WHEEL in $(( $(date +%s) - start )) s"
fi

# --no-deps: mmcv/mmengine ask for opencv-python, which would clobber the opencv-python-headless
# that albumentations brings (both ship cv2). Their other runtime deps are listed explicitly.
"$PY" -m pip install -q --no-deps "$WHEEL" "mmengine==$MMENGINE_VERSION" "mmdet==$MMDET_VERSION" \
  || die "could not install mmcv/mmengine/mmdet."
"$PY" -m pip install -q -c constraints.txt -c constraints-mmdet.txt \
    addict yapf termcolor terminaltables shapely rich scipy six pycocotools matplotlib \
  || die "could not install the runtime dependencies of mmengine/mmdet."
say "(pip's note that mmengine/mmcv want opencv-python is expected: opencv-python-headless provides cv2)"
"$PY" - <<'PY' || die "mmdet installed but does not import with compiled ops (see the error above)."
import mmcv, mmengine, mmdet
from mmcv.ops import nms  # needs mmcv._ext, i.e. the compiled ops
print(f"setup-mmdet: mmcv {mmcv.__version__}, mmengine {mmengine.__version__}, mmdet {mmdet.__version__}: OK")
PY
