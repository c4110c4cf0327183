#!/usr/bin/env bash
# skiff builds wasmtime 48.0.8 from vendor/wasmtime: the crate as released
# on crates.io with vendor/wasmtime.patch applied, and nothing else (the
# root and fuzz Cargo.toml point `[patch.crates-io]` at it). The patch
# makes instantiation look up each compiled function once per loaded
# component or module instead of on every instance; README "Vendored
# wasmtime" says what it changes and why.
#
#   vendor/wasmtime.sh check   the tree is the release plus the patch (CI)
#   vendor/wasmtime.sh diff    rewrite the patch from the tree, after a change
#   vendor/wasmtime.sh apply   rebuild the tree from the release and the patch
#
# The release comes from cargo's download cache when it is there, else from
# static.crates.io, and must have the checksum crates.io publishes for it.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
version=48.0.8
sha256=a2afcadb2e7d0417cb8f3f322c66eff49338b288f22290c0ca0bd3e9570732aa
tree=vendor/wasmtime
patch=vendor/wasmtime.patch

mode=${1:-check}
case "$mode" in check | diff | apply) ;; *)
  echo "usage: vendor/wasmtime.sh check|diff|apply" >&2
  exit 2
  ;;
esac

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
crate=$(ls "${CARGO_HOME:-$HOME/.cargo}"/registry/cache/*/"wasmtime-$version.crate" 2>/dev/null | head -1 || true)
if [ -z "$crate" ]; then
  crate=$work/wasmtime.crate
  curl -sSfL -o "$crate" "https://static.crates.io/crates/wasmtime/wasmtime-$version.crate"
fi
if ! echo "$sha256  $crate" | sha256sum -c --quiet -; then
  echo "vendor/wasmtime.sh: $crate is not wasmtime $version as crates.io published it (sha256 $sha256)" >&2
  exit 1
fi
mkdir "$work/a"
tar -xzf "$crate" -C "$work/a" --strip-components=1

# The difference between the release (a/) and the tree (b/), as a patch
# that applies with -p1 in the release's directory.
difference() {
  rm -rf "$work/b"
  cp -r "$tree" "$work/b"
  (cd "$work" && git diff --no-index --no-prefix --no-color a b || true)
}

case "$mode" in
check)
  difference > "$work/now.patch"
  if ! cmp -s "$work/now.patch" "$patch"; then
    echo "vendor/wasmtime.sh: $tree is not wasmtime $version with $patch applied:" >&2
    diff "$patch" "$work/now.patch" | head -40 >&2 || true
    echo "(after changing $tree on purpose, run vendor/wasmtime.sh diff)" >&2
    exit 1
  fi
  echo "$tree is wasmtime $version with $patch ($(grep -c '^diff --git' "$patch") files changed)"
  ;;
diff)
  difference > "$patch"
  echo "wrote $patch ($(grep -c '^diff --git' "$patch") files changed)"
  ;;
apply)
  (cd "$work/a" && git apply -p1 "$root/$patch")
  rm -rf "$tree"
  cp -r "$work/a" "$tree"
  echo "rebuilt $tree from wasmtime $version and $patch"
  ;;
esac
