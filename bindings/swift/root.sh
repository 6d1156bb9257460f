#!/usr/bin/env bash
# The Swift toolchain's home: a Debian trixie root with Debian's swiftlang (Swift 6), since
# bookworm has no Swift. Kept in .cache/swift/trixie (gitignored; SAGE_SWIFT_ROOT overrides).
#
#   bash bindings/swift/root.sh ensure          make the root unless it is there (~3 min, 3.2 GB)
#   bash bindings/swift/root.sh path            print the root's path
#   bash bindings/swift/root.sh run CMD ARGS..  run CMD inside the root, in /work/sage-queue
#   bash bindings/swift/root.sh run -C DIR CMD  the same, in DIR (a folder of this repository)
#   bash bindings/swift/root.sh delete          remove the root
#
# `run` mounts /proc (swiftc needs it to find its libraries), binds this repository at its own
# path inside (so a path in it means the same file inside and out: the Swift package in
# bindings/swift links the Rust library in target/release by its absolute path), and binds the
# queue folder ($SAGE_QUEUE_DIR, else /dev/shm) at the same path inside, so processes inside
# and outside share queues (the user must be the same: segment files are named
# sq-<uid>-<name>). The mounts are made in a private mount namespace (unshare) where one can be
# had, and are always unmounted when CMD ends (trap). SAGE_QUEUE_DIR is passed into the root;
# nothing else is. /work/sage-queue is the root's own folder (bin/ holds the interop peer).
#
# The Debian mirror is read at run time from this machine's apt sources (DEBIAN_MIRROR
# overrides) and is not kept: the root's apt sources and lists are removed after the install.
set -euo pipefail
self=$(cd "$(dirname "$0")" && pwd)/$(basename "$0")
repo=$(cd "$(dirname "$0")/../.." && pwd -P)
ROOT=${SAGE_SWIFT_ROOT:-$repo/.cache/swift/trixie}
SUITE=trixie
PACKAGES="swiftlang libc6-dev"
READY=.sage-queue-ready

say() { printf '[swift] %s\n' "$*" >&2; }
die() { say "$*"; exit 1; }

# The first Debian archive of this machine's apt sources whose suite is this release.
debian_mirror() {
    if [ -n "${DEBIAN_MIRROR:-}" ]; then
        echo "$DEBIAN_MIRROR"
        return
    fi
    local codename f
    # shellcheck disable=SC1091
    codename=$(. /etc/os-release && echo "${VERSION_CODENAME:-}")
    [ -n "$codename" ] || die "no VERSION_CODENAME in /etc/os-release; set DEBIAN_MIRROR"
    {
        for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
            [ -f "$f" ] || continue
            # deb [options] URI SUITE COMPONENTS...
            awk -v c="$codename" '$1 == "deb" {
                i = 2
                if ($i ~ /^\[/) { while (i < NF && $i !~ /\]$/) i++; i++ }
                if ($(i + 1) == c) print $i
            }' "$f"
        done
        for f in /etc/apt/sources.list.d/*.sources; do
            [ -f "$f" ] || continue
            # deb822 stanzas: Types, URIs, Suites
            awk -v c="$codename" 'BEGIN { RS = ""; FS = "\n" } {
                uri = ""; suite = 0; deb = 0; off = 0
                for (k = 1; k <= NF; k++) {
                    line = $k
                    if (line ~ /^Types:/ && line ~ /[ \t]deb([ \t]|$)/) deb = 1
                    if (line ~ /^Enabled:[ \t]*no/) off = 1
                    if (line ~ /^URIs:/) { sub(/^URIs:[ \t]*/, "", line); split(line, u, /[ \t]+/); uri = u[1] }
                    if (line ~ /^Suites:/) {
                        sub(/^Suites:[ \t]*/, "", line); n = split(line, s, /[ \t]+/)
                        for (j = 1; j <= n; j++) if (s[j] == c) suite = 1
                    }
                }
                if (deb && suite && !off && uri != "") print uri
            }' "$f"
        done
    } | head -n 1 | grep . || die "no Debian archive for $codename in the apt sources; set DEBIAN_MIRROR"
}

# Mount points under $1 (deepest first), from this mount namespace's table.
mounts_under() {
    awk -v p="$1/" 'index($5 "/", p) == 1 { print $5 }' /proc/self/mountinfo | sort -r
}

# Inside the private namespace (or, lacking one, in ours): mount, run, always unmount.
mounted=()
cleanup() {
    local i
    for ((i = ${#mounted[@]} - 1; i >= 0; i--)); do
        umount "${mounted[i]}" 2>/dev/null || umount -l "${mounted[i]}" || true
    done
    mounted=()
}
inner() {
    local root=$1 cwd=$2
    shift 2
    local dir
    trap cleanup EXIT
    trap 'exit 130' INT TERM HUP
    if ! mountpoint -q "$root/proc"; then
        mount -t proc proc "$root/proc"
        mounted+=("$root/proc")
    fi
    dir=${SAGE_QUEUE_DIR:-/dev/shm}
    if [ -d "$dir" ]; then
        mkdir -p "$root$dir"
        if ! mountpoint -q "$root$dir"; then
            mount --bind "$dir" "$root$dir"
            mounted+=("$root$dir")
        fi
    fi
    # The repository at its own path (not recursive: the root inside it shows as a plain folder).
    mkdir -p "$root$repo"
    if ! mountpoint -q "$root$repo"; then
        mount --bind "$repo" "$root$repo"
        mounted+=("$root$repo")
    fi
    mkdir -p "$root/work/sage-queue"
    local status=0
    chroot "$root" /usr/bin/env -i -C "$cwd" \
        PATH=/usr/local/bin:/usr/bin:/bin HOME=/root LANG=C.UTF-8 TMPDIR=/tmp \
        ${SAGE_QUEUE_DIR:+SAGE_QUEUE_DIR=$SAGE_QUEUE_DIR} "$@" || status=$?
    return $status
}

# run_in ROOT [-C DIR] CMD...: DIR must be in this repository (it is mounted at its own path).
run_in() {
    local root=$1 cwd=/work/sage-queue
    shift
    if [ "${1:-}" = -C ]; then
        [ $# -ge 3 ] || die "usage: run -C DIR CMD ARGS.."
        cwd=$(cd "$2" && pwd -P) || die "no folder $2"
        case "$cwd/" in "$repo"/*) ;; *) die "-C $2: not a folder of $repo" ;; esac
        shift 2
    fi
    [ "$(id -u)" = 0 ] || die "the Swift root needs root (mount, chroot)"
    if unshare --mount --propagation private true 2>/dev/null; then
        unshare --mount --propagation private bash "$self" __inner "$root" "$cwd" "$@"
    else
        bash "$self" __inner "$root" "$cwd" "$@"
    fi
}

ensure() {
    [ -f "$ROOT/$READY" ] && return 0
    [ "$(id -u)" = 0 ] || die "making the Swift root needs root (debootstrap, chroot)"
    export DEBIAN_FRONTEND=noninteractive
    if ! command -v debootstrap >/dev/null; then
        say "installing debootstrap"
        apt-get install -y -q debootstrap >&2 || { apt-get update -q >&2 && apt-get install -y -q debootstrap >&2; }
    fi
    local mirror tmp=$ROOT.tmp start=$SECONDS
    mirror=$(debian_mirror)
    [ -z "$(mounts_under "$tmp")$(mounts_under "$ROOT")" ] \
        || die "something is mounted under $ROOT or $tmp; unmount it first"
    rm -rf --one-file-system "$tmp" "$ROOT"
    mkdir -p "$(dirname "$ROOT")"
    say "bootstrapping Debian $SUITE into $tmp (~1.5 min)"
    debootstrap --variant=minbase "$SUITE" "$tmp" "$mirror" >"$tmp.log" 2>&1 \
        || { tail -n 20 "$tmp.log" >&2; die "debootstrap failed (log: $tmp.log)"; }
    cp -L /etc/resolv.conf "$tmp/etc/resolv.conf" 2>/dev/null || true
    printf 'deb %s %s main\n' "$mirror" "$SUITE" >"$tmp/etc/apt/sources.list"
    say "installing $PACKAGES in the root (~1.5 min)"
    run_in "$tmp" /bin/sh -c "apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $PACKAGES" >>"$tmp.log" 2>&1 \
        || { tail -n 20 "$tmp.log" >&2; die "installing $PACKAGES failed (log: $tmp.log)"; }
    # Keep no trace of the mirror: apt sources, lists (named after it), downloaded packages.
    rm -f "$tmp/etc/apt/sources.list" "$tmp.log"
    rm -rf "$tmp/var/lib/apt/lists" "$tmp/var/cache/apt" "$tmp/var/log/apt" "$tmp/var/log/bootstrap.log"
    mkdir -p "$tmp/var/lib/apt/lists/partial" "$tmp/var/cache/apt/archives/partial"
    run_in "$tmp" swiftc --version >/dev/null || die "swiftc does not run in the new root"
    touch "$tmp/$READY"
    mv "$tmp" "$ROOT"
    say "Swift root ready in $((SECONDS - start)) s: $ROOT"
}

case "${1:-}" in
    __inner) shift; inner "$@" ;;
    ensure) ensure ;;
    path) echo "$ROOT" ;;
    run) shift; ensure; run_in "$ROOT" "$@" ;;
    delete)
        [ -z "$(mounts_under "$ROOT")" ] || die "something is mounted under $ROOT; unmount it first"
        rm -rf --one-file-system "$ROOT" "$ROOT.tmp" ;;
    *) echo "usage: $0 ensure|path|run [-C DIR] CMD...|delete" >&2; exit 2 ;;
esac
