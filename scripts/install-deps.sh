#!/usr/bin/env bash
# Installs the Debian 12 packages shoal needs, and only those that are missing.
#
#   scripts/install-deps.sh          build tools and runtime libraries
#   scripts/install-deps.sh --run    the above plus the PostgreSQL 15 server,
#                                    which "shoal dev" starts a throwaway
#                                    cluster from
#   scripts/install-deps.sh --test   the above plus what the test suite uses:
#                                    kcat, python3-jsonschema, docker-compose
#                                    (only to validate compose.yaml), valgrind,
#                                    clang with libFuzzer (libclang-rt-14-dev),
#                                    json-schema-test-suite, prometheus (its
#                                    service is stopped and disabled: the tests
#                                    start their own server), tmux (to drive
#                                    `shoal top` in a terminal), nghttp2-server
#                                    and openssl (an HTTPS, HTTP/2-only model
#                                    server with a certificate of its own)
#
# Prints nothing and changes nothing when every package is already installed;
# otherwise runs "apt-get update" once and installs the missing ones. Never
# prompts (safe with CI=true and no stdin). Uses sudo only when not root.
set -euo pipefail

build_pkgs=(build-essential cmake pkg-config librdkafka-dev libcurl4-openssl-dev
    libjansson-dev libpq-dev libmicrohttpd-dev)
runtime_pkgs=(librdkafka1 libcurl4 libjansson4 libpq5 libmicrohttpd12)
run_pkgs=(postgresql)
test_pkgs=(kcat python3-jsonschema docker-compose valgrind clang libclang-rt-14-dev clang-format
    json-schema-test-suite prometheus tmux nghttp2-server openssl)

usage() {
    sed -n '2,21s/^# \{0,1\}//p' "$0"
}

mode="build"
while (($# > 0)); do
    case "$1" in
    --run) [[ $mode == "test" ]] || mode="run" ;;
    --test) mode="test" ;;
    -h | --help)
        usage
        exit 0
        ;;
    *)
        echo "install-deps.sh: unknown argument \"$1\"" >&2
        echo "hint: use --run, --test or --help" >&2
        exit 2
        ;;
    esac
    shift
done

wanted=("${build_pkgs[@]}" "${runtime_pkgs[@]}")
case "$mode" in
run) wanted+=("${run_pkgs[@]}") ;;
test) wanted+=("${run_pkgs[@]}" "${test_pkgs[@]}") ;;
esac

if ! command -v dpkg-query >/dev/null 2>&1 || ! command -v apt-get >/dev/null 2>&1; then
    echo "install-deps.sh: cannot install packages: dpkg-query and apt-get not found" >&2
    echo "hint: this script supports Debian 12; install these by hand: ${wanted[*]}" >&2
    exit 1
fi

missing=()
for pkg in "${wanted[@]}"; do
    # A removed package keeps "deinstall ok config-files"; only this status
    # means its files are present.
    status=$(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null || true)
    if [[ $status != "install ok installed" ]]; then
        missing+=("$pkg")
    fi
done

if ((${#missing[@]} == 0)); then
    exit 0
fi

sudo=()
if ((EUID != 0)); then
    if ! command -v sudo >/dev/null 2>&1; then
        echo "install-deps.sh: cannot install ${missing[*]}: not root and sudo not found" >&2
        echo "hint: run this script as root" >&2
        exit 1
    fi
    # -n: fail instead of prompting when there is no terminal to answer on.
    sudo=(sudo -n)
    [[ -t 0 ]] && sudo=(sudo)
fi

echo "install-deps.sh: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
${sudo[@]+"${sudo[@]}"} env DEBIAN_FRONTEND=noninteractive apt-get update -q </dev/null
${sudo[@]+"${sudo[@]}"} env DEBIAN_FRONTEND=noninteractive apt-get install -y -q \
    --no-install-recommends "${missing[@]}" </dev/null

# The package starts a Prometheus server on :9090 where an init system runs;
# tests start their own on a free port, so none is left running.
if [[ " ${missing[*]} " == *" prometheus "* ]]; then
    if command -v systemctl >/dev/null 2>&1 && [[ -d /run/systemd/system ]]; then
        ${sudo[@]+"${sudo[@]}"} systemctl disable --now prometheus >/dev/null 2>&1 || true
    elif command -v service >/dev/null 2>&1; then
        ${sudo[@]+"${sudo[@]}"} service prometheus stop >/dev/null 2>&1 || true
    fi
fi
