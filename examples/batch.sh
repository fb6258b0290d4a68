#!/usr/bin/env bash
# Compress every RAW photo in a folder, then decode them all to PNG; a bad file is reported and
# skipped, and the script's exit code says whether every photo made it.
#   examples/batch.sh ~/Pictures/shoot out/
set -u
src=${1:?usage: batch.sh SRC_DIR OUT_DIR}
out=${2:?usage: batch.sh SRC_DIR OUT_DIR}
mkdir -p "$out/rbit" "$out/png"
shopt -s nullglob nocaseglob
raws=("$src"/*.{dng,nef,cr2,crw,arw,kdc,orf,rw2,pef,srw})
[ ${#raws[@]} -gt 0 ] || { echo "no RAW files in $src" >&2; exit 1; }
rawbit encode "${raws[@]}" -o "$out/rbit/" --quality "${QUALITY:-6}"
enc=$?
rbits=("$out"/rbit/*.rbit)
[ ${#rbits[@]} -gt 0 ] && rawbit decode "${rbits[@]}" -o "$out/png/"
dec=$?
exit $(( enc || dec ))
