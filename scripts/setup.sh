#!/usr/bin/env bash
# Set up vim-webgpu on a fresh Debian/Ubuntu machine: npm packages, the build, and, where Node
# finds no WebGPU adapter, Mesa's Vulkan driver (lavapipe) so WebGPU runs on the CPU.
# Safe to run more than once.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export ONNXRUNTIME_NODE_INSTALL=skip   # onnxruntime-node ships its CPU binaries; never download
export ONNXRUNTIME_NODE_INSTALL_CUDA=skip

say() { printf '\033[1msetup:\033[0m %s\n' "$*"; }

if ! command -v node >/dev/null || [ "$(node -p 'process.versions.node.split(".")[0]')" -lt 20 ]; then
  echo "setup: Node.js 20 or newer is needed (https://nodejs.org); found: $(node -v 2>/dev/null || echo none)" >&2
  exit 1
fi

say "installing npm packages"
npm ci --no-audit --no-fund
say "building"
npm run -s build

probe() { node scripts/probe-adapter.mjs >/dev/null 2>&1; }

if probe; then
  say "WebGPU adapter: $(node scripts/probe-adapter.mjs)"
  exit 0
fi

say "no WebGPU adapter found; installing Mesa's Vulkan driver (lavapipe) for WebGPU on the CPU"
SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
if ! command -v apt-get >/dev/null; then
  echo "setup: no apt-get here: install a Vulkan driver (Mesa 24 or newer, e.g. mesa-vulkan-drivers) yourself" >&2
  exit 1
fi
. /etc/os-release
if [ "${ID:-}" = debian ] && [ "${VERSION_CODENAME:-}" = bookworm ]; then
  # Debian 12's Mesa 22 is refused by Dawn: take Mesa 25 from bookworm-backports, using the same
  # mirror and key as the machine's existing Debian source.
  list=/etc/apt/sources.list.d/vim-webgpu-backports.sources
  if [ ! -f "$list" ]; then
    uri=""; key=""
    for f in /etc/apt/sources.list.d/*.sources; do
      [ -f "$f" ] || continue
      if grep -qE '^Suites:.*\bbookworm\b' "$f"; then
        uri=$(awk '/^URIs:/{print $2; exit}' "$f"); key=$(awk '/^Signed-By:/{print $2; exit}' "$f"); break
      fi
    done
    if [ -z "$uri" ] && [ -f /etc/apt/sources.list ]; then
      uri=$(awk '$1=="deb" && $0 ~ / bookworm / {for(i=2;i<=NF;i++) if ($i ~ /^(https?|file):/) {print $i; exit}}' /etc/apt/sources.list)
    fi
    uri=${uri:-http://deb.debian.org/debian}; key=${key:-/usr/share/keyrings/debian-archive-keyring.gpg}
    printf 'Types: deb\nURIs: %s\nSuites: bookworm-backports\nComponents: main\nSigned-By: %s\n' "$uri" "$key" | $SUDO tee "$list" >/dev/null
  fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq -t bookworm-backports mesa-vulkan-drivers libvulkan1 >/dev/null
else
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq mesa-vulkan-drivers libvulkan1 >/dev/null
fi

if probe; then
  say "WebGPU adapter: $(node scripts/probe-adapter.mjs)"
else
  echo "setup: still no WebGPU adapter after installing Mesa's Vulkan driver; run 'node scripts/probe-adapter.mjs' to see why" >&2
  exit 1
fi
