#!/usr/bin/env bash
# Assembles the kagami container image as an OCI layout without a container engine: a
# scratch image holding the compiled executable, the glibc files it links (as ldd lists
# them), CA certificates and a passwd with the distroless "nonroot" user (65532). The same
# image as deploy/Dockerfile, built with umoci; optionally pushed with skopeo.
#
#   scripts/image.sh [--bin dist/kagami] [--layout dist/oci] [--tag VERSION] [--push docker://HOST/REPO:TAG] [--insecure]
#
# Needs: umoci, ldd, ca-certificates; skopeo for --push. Prints the layout:tag it wrote.
set -euo pipefail

bin=dist/kagami
layout=dist/oci
tag=""
push=""
tls_verify=true
while [[ $# -gt 0 ]]; do
  case "$1" in
    --bin) bin="$2"; shift 2 ;;
    --layout) layout="$2"; shift 2 ;;
    --tag) tag="$2"; shift 2 ;;
    --push) push="$2"; shift 2 ;;
    --insecure) tls_verify=false; shift ;;
    -h|--help) sed -n '2,10p' "$0"; exit 0 ;;
    *) echo "image.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done

for tool in umoci ldd; do
  command -v "$tool" >/dev/null || { echo "image.sh: $tool is not installed" >&2; exit 1; }
done
[[ -x "$bin" ]] || { echo "image.sh: $bin is missing: run 'bun run build' first" >&2; exit 1; }
certs=/etc/ssl/certs/ca-certificates.crt
[[ -s "$certs" ]] || { echo "image.sh: $certs is missing: install ca-certificates" >&2; exit 1; }

# The binary is the source of truth for what it is.
version_json="$("$bin" version --json)"
field() { sed -n "s/.*\"$1\":\"\([^\"]*\)\".*/\1/p" <<<"$version_json"; }
version="$(field version)"
commit="$(field commit)"
[[ -n "$tag" ]] || tag="$version"
case "$(uname -m)" in
  x86_64) arch=amd64 ;;
  aarch64) arch=arm64 ;;
  *) arch="$(uname -m)" ;;
esac

work="$(mktemp -d "${TMPDIR:-/tmp}/kagami-image.XXXXXX")"
trap 'rm -rf "$work"' EXIT
root="$work/rootfs"
mkdir -p "$root/usr/local/bin" "$root/etc/ssl/certs" "$root/tmp" "$root/var/lib/kagami" "$root/proc" "$root/dev" "$root/sys"
chmod 1777 "$root/tmp"
install -m 0755 "$bin" "$root/usr/local/bin/kagami"

# Every shared object the executable loads, at the path the loader looks for it, symlinks
# resolved (the dynamic loader itself is the line without "=>").
while read -r lib; do
  [[ -n "$lib" ]] || continue
  mkdir -p "$root$(dirname "$lib")"
  cp -L "$lib" "$root$lib"
done < <(ldd "$bin" | awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// { print $1 }')

install -m 0644 "$certs" "$root/etc/ssl/certs/ca-certificates.crt"
printf 'root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n' >"$root/etc/passwd"
printf 'root:x:0:\nnonroot:x:65532:\n' >"$root/etc/group"
printf 'hosts: files dns\n' >"$root/etc/nsswitch.conf"
# Standalone mode runs as nonroot and keeps its store here; the DaemonSet mounts a hostPath over it.
chown 65532:65532 "$root/var/lib/kagami"

rootless=()
[[ "$(id -u)" == 0 ]] || rootless=(--rootless)

[[ -f "$layout/oci-layout" ]] || umoci init --layout "$layout"
umoci rm --image "$layout:$tag" 2>/dev/null || true
umoci new --image "$layout:$tag"
umoci unpack "${rootless[@]}" --image "$layout:$tag" "$work/bundle" >/dev/null
cp -a "$root/." "$work/bundle/rootfs/"
umoci repack --image "$layout:$tag" --history.created_by "scripts/image.sh" --history.comment "kagami $version ($commit)" "$work/bundle"
umoci config --image "$layout:$tag" \
  --architecture "$arch" --os linux \
  --config.entrypoint /usr/local/bin/kagami --config.cmd serve \
  --config.user 65532:65532 --config.workingdir / \
  --config.env PATH=/usr/local/bin \
  --config.env SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt \
  --config.env KAGAMI_DATA_DIR=/var/lib/kagami \
  --config.exposedports 5000/tcp --config.exposedports 5001/tcp --config.exposedports 9090/tcp \
  --config.label "org.opencontainers.image.title=kagami" \
  --config.label "org.opencontainers.image.version=$version" \
  --config.label "org.opencontainers.image.revision=$commit" \
  --config.label "org.opencontainers.image.licenses=Apache-2.0" \
  --no-history
umoci gc --layout "$layout"

if [[ -n "$push" ]]; then
  command -v skopeo >/dev/null || { echo "image.sh: skopeo is not installed" >&2; exit 1; }
  skopeo copy --quiet --dest-tls-verify="$tls_verify" "oci:$layout:$tag" "$push"
  echo "pushed $push"
fi
echo "$layout:$tag"
