#!/usr/bin/env bash
# Run a command on one GPU of a host with several: bash scripts/vkdev/on-gpu.sh INDEX COMMAND…
# (e.g. bash scripts/vkdev/on-gpu.sh 1 node dist/cli/train-vim.js --out runs/b). Builds the layer
# on first use (needs a C compiler and the Vulkan headers, or a libvkdev.so copied beside this file).
set -eu
[ $# -ge 2 ] || { echo "usage: bash scripts/vkdev/on-gpu.sh INDEX COMMAND…" >&2; exit 2; }
case $1 in ''|*[!0-9]*) echo "on-gpu.sh: INDEX must be a GPU number (0, 1, …); it is '$1'" >&2; exit 2 ;; esac
here=$(cd "$(dirname "$0")" && pwd)
if [ ! -f "$here/libvkdev.so" ]; then
  cc -O2 -shared -fPIC -fvisibility=hidden -o "$here/libvkdev.so" "$here/vkdev.c" \
    || { echo "on-gpu.sh: could not build libvkdev.so (needs cc and the Vulkan headers: apt-get install libvulkan-dev)" >&2; exit 1; }
fi
index=$1
shift
# NODEVICE_SELECT: Mesa's device-select layer, where installed, only reorders devices and fails when
# it is shown none
export VK_LAYER_PATH="$here${VK_LAYER_PATH:+:$VK_LAYER_PATH}" VKDEV_INDEX="$index" NODEVICE_SELECT=1
export VK_INSTANCE_LAYERS="VK_LAYER_VKDEV_index${VK_INSTANCE_LAYERS:+:$VK_INSTANCE_LAYERS}"
exec "$@"
