# shellcheck shell=bash
# Project-local check tools, sourced by scripts/check-schemas, scripts/check-compose and
# scripts/check-kubernetes.
#
# Tools live in .venv-tools/ at the top of the work tree (git-ignored; FLOWGRAPH_TOOLS_DIR moves
# it): a Python venv for PyPI packages, and Go-built binaries in its bin/. Each tool is pinned
# and installed once; a stamp file per pin makes the next run skip the installer entirely, so a
# warm check needs no network. A lock serializes two checks that install at the same time.

TOOLS_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
TOOLS_DIR=${FLOWGRAPH_TOOLS_DIR:-$TOOLS_ROOT/.venv-tools}
TOOLS_PY=$TOOLS_DIR/bin/python

tools_say() { printf '%s: %s\n' "${TOOLS_WHO:-tools}" "$*" >&2; }

tools_lock() {
  mkdir -p "$TOOLS_DIR"
  exec 9>"$TOOLS_DIR/.lock"
  flock 9
}

tools_unlock() { flock -u 9; exec 9>&-; }

# tools_pip REQ...   (REQ is NAME==VERSION) makes the venv and pip-installs what is not there yet.
# Returns 1, after saying how to fix it, when the venv cannot be made or pip cannot install.
tools_pip() {
  local req missing=()
  tools_lock
  if ! "$TOOLS_PY" -m pip --version >/dev/null 2>&1; then
    command -v python3 >/dev/null 2>&1 || {
      tools_say "python3 is missing (Debian: apt-get install python3 python3-venv)"
      tools_unlock; return 1
    }
    tools_say "creating the tools venv $TOOLS_DIR"
    if ! python3 -m venv "$TOOLS_DIR" >&2 || ! "$TOOLS_PY" -m pip --version >/dev/null 2>&1; then
      tools_say "FAILED: python3 -m venv $TOOLS_DIR did not give a venv with pip."
      tools_say "fix: on Debian, apt-get install python3-venv; then rm -rf $TOOLS_DIR and rerun."
      tools_unlock; return 1
    fi
  fi
  for req in "$@"; do
    [ -f "$TOOLS_DIR/.ok-$req" ] || missing+=("$req")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    tools_say "installing ${missing[*]} into $TOOLS_DIR (from PyPI; once)"
    if ! "$TOOLS_PY" -m pip install --quiet --disable-pip-version-check "${missing[@]}" >&2; then
      tools_say "FAILED: pip could not install ${missing[*]} (its messages are above)."
      tools_say "This needs PyPI the first time only (later runs reuse $TOOLS_DIR offline)."
      tools_say "fix: check the network or proxy (a mirror: export PIP_INDEX_URL=https://…/simple),"
      tools_say "     or remove a broken venv (rm -rf $TOOLS_DIR), then rerun; by hand:"
      tools_say "     $TOOLS_PY -m pip install ${missing[*]}"
      tools_unlock; return 1
    fi
    for req in "${missing[@]}"; do touch "$TOOLS_DIR/.ok-$req"; done
  fi
  tools_unlock
}

# tools_go_install NAME PACKAGE@VERSION   builds a Go command into $TOOLS_DIR/bin/NAME-VERSION
# (once) and prints that path. Returns 1 when go is missing or the build fails.
tools_go_install() {
  local name=$1 pkg=$2 version=${2##*@} bin tmp
  bin=$TOOLS_DIR/bin/$name-$version
  if [ -x "$bin" ]; then printf '%s\n' "$bin"; return 0; fi
  command -v go >/dev/null 2>&1 || { tools_say "go is missing, cannot build $pkg"; return 1; }
  tools_lock
  if [ ! -x "$bin" ]; then
    tools_say "building $pkg with $(go version | awk '{print $3}') (from the Go module proxy; once)"
    tmp=$(mktemp -d)
    if ! GOBIN=$tmp GOFLAGS=-buildvcs=false go install "$pkg" >&2; then
      rm -rf "$tmp"
      tools_say "FAILED: go install $pkg (its messages are above)."
      tools_say "This needs the Go module proxy the first time only (GOPROXY=$(go env GOPROXY))."
      tools_unlock; return 1
    fi
    mkdir -p "$TOOLS_DIR/bin"
    # go install names the binary after the last path element, skipping a major-version
    # suffix (sigs.k8s.io/kustomize/kustomize/v5 -> kustomize).
    local built=${pkg%@*}
    [[ $(basename "$built") =~ ^v[0-9]+$ ]] && built=$(dirname "$built")
    mv "$tmp/$(basename "$built")" "$bin"
    rm -rf "$tmp"
  fi
  tools_unlock
  printf '%s\n' "$bin"
}
