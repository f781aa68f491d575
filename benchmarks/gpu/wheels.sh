# Keras travels to the GPU machine as wheels (it has no Keras and no network).
# Sourced by prepare.sh and run.sh. One folder per Python version, so that a
# rehearsal under another Python installs the same way the GPU run does:
#
#   .whl/py3.12/   for the GPU machine's python3 (../shared/wheels/gpu-py312)
#   .whl/py3.11/   for a rehearsal under Python 3.11 (prepare.sh --rehearse)

# The GPU machine's python3 (KINDS.md: Python 3.12.3).
GPU_PYTHON_VERSION=3.12

python_version() {
  "$1" -c 'import sys; print("%d.%d" % sys.version_info[:2])'
}

wheel_dir() {
  echo ".whl/py$1"
}

# Sets PIP (the command) and PIP_FLAGS (after the subcommand) to install or
# download for interpreter $1: its own pip, or, for a venv without pip (uv
# makes those, and nox uses uv), the pip on PATH told the interpreter's
# version and platform. Fails when there is neither.
find_pip() {
  local python=$1 version machine n
  PIP_FLAGS=()
  if "$python" -m pip --version >/dev/null 2>&1; then
    PIP=("$python" -m pip)
    return 0
  fi
  command -v pip >/dev/null || return 1
  version=$(python_version "$python") || return 1
  machine=$(uname -m)
  PIP=(pip)
  PIP_FLAGS=(--python-version "$version" --implementation cp
    --abi "cp${version/./}" --only-binary=:all:)
  for n in 17 24 27 28 31 34 35; do
    PIP_FLAGS+=(--platform "manylinux_2_${n}_$machine")
  done
  PIP_FLAGS+=(--platform "manylinux2014_$machine" --platform "linux_$machine")
}
