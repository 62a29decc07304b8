# Sourced by the scripts that carry binaries to the lent GPU machine (its image lacks our Debian
# -dev packages): copy_system_libs DEST LIB... copies each named shared library that ldconfig
# knows into DEST (following links).
copy_system_libs() {
  local dest=$1 lib path
  shift
  for lib in "$@"; do
    path=$(ldconfig -p | awk -v l="$lib" '$1 == l { print $NF; exit }')
    [[ -n $path ]] && cp -L "$path" "$dest/"
  done
  return 0
}
