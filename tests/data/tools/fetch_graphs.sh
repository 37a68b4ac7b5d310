#!/bin/bash
# Copy the real attribution-graph JSON files out of the fetched snapshots and record provenance.
# Each row: mirror dir | ref | path in repo | local name
set -e
OUT=/work/scratch/realfiles/graphs/real
mkdir -p $OUT
echo -n > $OUT/PROVENANCE.tsv
printf "local_name\trepo\tref\tcommit_that_added_or_last_changed\tpath\tblob\tbytes\tsha256\n" >> $OUT/PROVENANCE.tsv
while IFS='|' read -r mirror repo ref path name; do
  G="git --git-dir=/work/.mirror/$mirror/repo"
  commit=$($G log -1 --format=%H $ref -- "$path")
  blob=$($G rev-parse "$ref:$path")
  $G cat-file blob $blob > "$OUT/$name"
  printf "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n" "$name" "$repo" "$($G rev-parse $ref)" "$commit" "$path" "$blob" "$(stat -c %s $OUT/$name)" "$(sha256sum $OUT/$name | cut -d' ' -f1)" >> $OUT/PROVENANCE.tsv
done <<'LIST'
decoderesearch+circuit-tracer|decoderesearch/circuit-tracer (PR #71 head, fork IamKrill1n/circuit-tracer)|refs/pull/71/head|demos/graph_files/dollar.json|gemma-dollar.json
decoderesearch+circuit-tracer|decoderesearch/circuit-tracer (PR #71 head, fork IamKrill1n/circuit-tracer)|refs/pull/71/head|demos/graph_files/gemma-small-big-en_2025-11-13T10-16-02-770Z.json|gemma-small-big-en_2025-11-13T10-16-02-770Z.json
decoderesearch+circuit-tracer|decoderesearch/circuit-tracer (PR #71 head, fork IamKrill1n/circuit-tracer)|refs/pull/71/head|demos/graph_files/3plus5-plt.json|gemma-addition_3plus5-plt.json
decoderesearch+circuit-tracer|decoderesearch/circuit-tracer (PR #71 head, fork IamKrill1n/circuit-tracer)|refs/pull/71/head|demos/graph_files/thelargestplanet-1763017024609_2025-11-13T06-58-01-950Z.json|thelargestplanet-1763017024609_2025-11-13T06-58-01-950Z.json
decoderesearch+circuit-tracer|decoderesearch/circuit-tracer (PR #71 head, fork IamKrill1n/circuit-tracer)|refs/pull/71/head|graph_files/son-clt-hp.json|son-clt-hp.json
decoderesearch+circuit-tracer|decoderesearch/circuit-tracer (PR #71 head, fork IamKrill1n/circuit-tracer)|refs/pull/71/head|demos/graph_files/bee-insect-clt.json|bee-insect-clt.json
uzairname+circuit-tracer|uzairname/circuit-tracer|HEAD|experiments/graph_files/war_ea.json|war_ea.json
uzairname+circuit-tracer|uzairname/circuit-tracer|HEAD|experiments/graph_files/dallas_ea.json|dallas_ea.json
peppinob-ol+attribution-graph-probing|peppinob-ol/attribution-graph-probing|HEAD|output/graph_data/the-opposite-of-20251026-175335.json|the-opposite-of-20251026-175335.json
peppinob-ol+attribution-graph-probing|peppinob-ol/attribution-graph-probing|HEAD|output/graph_data/le-contraire-de-20251027-140230.json|le-contraire-de-20251027-140230.json
LIST
