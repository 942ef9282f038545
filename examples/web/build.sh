#!/usr/bin/env bash
# Builds cenet's browser demo and, with --serve, serves it on http://localhost:PORT.
#
#   examples/web/build.sh            # build into target/web (or $CENET_WEB_OUT)
#   examples/web/build.sh --serve    # build, then serve on port 8000 (--serve 9000: port 9000)
#
# Installs what the build needs when it is missing: the wasm32-unknown-unknown target
# (through rustup) and wasm-bindgen-cli at exactly the version of the wasm-bindgen crate that
# Cargo.toml pins (the two must match). Respects CARGO_TARGET_DIR.
set -euo pipefail
cd "$(dirname "$0")/../.."

serve=""
profile="release"
while [ $# -gt 0 ]; do
    case "$1" in
        --serve)
            serve="8000"
            if [ $# -gt 1 ] && [[ "$2" =~ ^[0-9]+$ ]]; then serve="$2"; shift; fi
            ;;
        --dev) profile="dev" ;;
        -h|--help) sed -n '2,9p' "$0"; exit 0 ;;
        *) echo "build.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
    shift
done

bindgen_version=$(sed -n 's/^wasm-bindgen = "=\([0-9.]*\)".*/\1/p' Cargo.toml)
if [ -z "$bindgen_version" ]; then
    echo "build.sh: Cargo.toml does not pin wasm-bindgen (wasm-bindgen = \"=X.Y.Z\")" >&2
    exit 1
fi

if command -v rustup >/dev/null 2>&1 &&
    ! rustup target list --installed | grep -qx wasm32-unknown-unknown; then
    echo "build.sh: adding the wasm32-unknown-unknown target"
    rustup target add wasm32-unknown-unknown
fi

installed=$(wasm-bindgen --version 2>/dev/null | awk '{print $2}' || true)
if [ "$installed" != "$bindgen_version" ]; then
    echo "build.sh: installing wasm-bindgen-cli $bindgen_version (found: ${installed:-none})"
    # Its own target folder, so that the install does not wait on the project's build lock.
    install_dir=$(mktemp -d)
    CARGO_TARGET_DIR="$install_dir" cargo install wasm-bindgen-cli --version "$bindgen_version"
    rm -rf "$install_dir"
fi

target_dir=$(cargo metadata --format-version 1 --no-deps |
    python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')
out="${CENET_WEB_OUT:-$target_dir/web}"

if [ "$profile" = "release" ]; then
    cargo build --release --target wasm32-unknown-unknown --example web
    wasm="$target_dir/wasm32-unknown-unknown/release/examples/web.wasm"
else
    cargo build --target wasm32-unknown-unknown --example web
    wasm="$target_dir/wasm32-unknown-unknown/debug/examples/web.wasm"
fi

rm -rf "$out"
mkdir -p "$out"
wasm-bindgen --target web --no-typescript --out-dir "$out/pkg" "$wasm"
cp examples/web/index.html examples/web/app.js examples/web/style.css "$out/"
echo "build.sh: demo built in $out"

if [ -n "$serve" ]; then
    echo "build.sh: open http://localhost:$serve/ in a browser with WebGPU (Ctrl-C stops)"
    exec python3 -m http.server "$serve" --bind 127.0.0.1 --directory "$out"
fi
