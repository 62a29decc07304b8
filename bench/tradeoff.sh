#!/usr/bin/env bash
# The trade-off users tune SampleAttention by: error, density and speedup for several alphas on
# the generated structured inputs, as a table (stdout) and a plot.
# Usage: bench/tradeoff.sh [build-dir] [out.png] [lengths]     (needs gnuplot for the plot)
set -euo pipefail
build=${1:-build}
png=${2:-docs/tradeoff.png}
seqs=${3:-16384,32768}
csv=$(mktemp)
"$build/src/cli/sampleattn" bench --seq "$seqs" --alpha 0.9,0.95,0.98,0.99 --repeat 3 --quiet --csv > "$csv"
echo "| N | alpha | speedup | density | rel L2 err (median over heads) | p90 | max | min CRA | needles (dense) |"
echo "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"
awk -F, 'NR > 1 && $1 == "sample" { printf "| %s | %s | %.2fx | %.3f | %.4f | %.4f | %.4f | %.3f | %.2f (%.2f) |\n",
  $2, $3, $14, $15, $20, $21, $22, $18, $23, $24 }' "$csv"
# One gnuplot "plot" line with a series per length: columns $1, then $2 appended to each series.
plot_lengths() {
  local first=1 n
  printf "plot "
  for n in ${seqs//,/ }; do
    [ $first = 1 ] || printf ", "
    first=0
    printf "'%s' using %s with linespoints title 'N=%s'%s" "$csv.$n" "$1" "$n" "$2"
  done
  echo
}
if command -v gnuplot >/dev/null; then
  for n in ${seqs//,/ }; do awk -F, -v n="$n" 'NR > 1 && $1 == "sample" && $2 == n { print $3, $14, $15, $20 }' "$csv" > "$csv.$n"; done
  {
    echo "set terminal pngcairo size 1000,420 font ',10' || set terminal png size 1000,420"
    echo "set output '$png'"
    echo "set multiplot layout 1,2 title 'SampleAttention trade-off (structured inputs, 8 heads, d=128, 2 threads)'"
    echo "set xlabel 'density (computed / causal pairs)'; set ylabel 'rel. L2 error, median over heads'; set grid"
    plot_lengths 3:4 ", '' using 3:4:(sprintf('%.2f',\$1)) with labels offset 1,1 notitle"
    echo "set xlabel 'alpha'; set ylabel 'speedup over dense (same run)'"
    plot_lengths 1:2 ""
    echo "unset multiplot"
  } | gnuplot 2>/dev/null && echo "plot: $png"
fi
rm -f "$csv" "$csv".*
