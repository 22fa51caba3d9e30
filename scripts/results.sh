#!/usr/bin/env bash
# Reproduces docs/RESULTS.md: issue 6's experiments on the bundled models (models/target, with
# models/scout for the scout rows), each one `kvwire eval` command, and the quality ladder built
# from their summaries. Needs a build (scripts/setup.sh or `cmake --build build`).
#
#   scripts/results.sh                  # writes results/ and docs/RESULTS.md
#   BUILD_DIR=build-x OUT=/tmp/r scripts/results.sh
#
# The tasks are held-out passkey prompts of 512 words with the needle at five depths: the task the
# bundled target solves with the full cache (its model card has the per-task, per-length figures).
# The engine runs in bfloat16, the dtype a serving node uses, so "full" is 16 bits per element.
set -euo pipefail
cd "$(dirname "$0")/.."
build=${BUILD_DIR:-build}
out=${OUT:-results}
kvwire=$build/client/kvwire
tasks=$build/models/tasks/kvwire_tasks
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-PASSIVE}
mkdir -p "$out"
step() { sed -n 's/.*"step":\([0-9]*\).*/\1/p' "$1/train_state.json"; }
# Every table must come from one checkpoint of each model: refuse to write if training saved a
# new one while the experiments ran.
steps_at_start="$(step models/target) $(step models/scout)"

task_file=$out/passkey-512.jsonl
"$tasks" --task passkey --length 512 --count 8 --split heldout --depths 0,0.25,0.5,0.75,1 \
  --seed 11 --out "$task_file"

common=(--dtype bfloat16 --tasks "$task_file" --no-progress --overwrite)
run() {  # name, then eval arguments
  local name=$1
  shift
  echo "== $name"
  "$kvwire" eval "${common[@]}" --out "$out/$name" "$@" > "$out/$name.txt"
}
run selection --model models/target --matrix selection
run budgets --model models/target --matrix budgets
run quant --model models/target --matrix quant
run layers --model models/target --matrix layers
run delta --model models/target --matrix delta
run svd --model models/target --matrix svd
run pipelines --model models/target --matrix pipelines
run scout --model models/target --scout models/scout --matrix scout
run scout-reverse --model models/scout --scout models/target --matrix scout
# Multi-key retrieval (eight two-word keys, one asked): the same selection and quantization
# matrices on a harder lookup than the passkey's.
mk_file=$out/multikey-512.jsonl
"$tasks" --task multikey --length 512 --count 8 --split heldout --depths 0,0.25,0.5,0.75,1 \
  --seed 12 --out "$mk_file"
mk_common=(--dtype bfloat16 --tasks "$mk_file" --no-progress --overwrite)
for matrix in selection quant; do
  echo "== multikey-$matrix"
  "$kvwire" eval "${mk_common[@]}" --out "$out/multikey-$matrix" --model models/target \
    --matrix "$matrix" > "$out/multikey-$matrix.txt"
done
"$kvwire" calibrate --from "$out/pipelines.json" --from "$out/quant.json" \
  --from "$out/selection.json" --ladder "$out/ladder.json" > "$out/ladder.txt"

if [[ "$(step models/target) $(step models/scout)" != "$steps_at_start" ]]; then
  echo "a model checkpoint changed during the run (steps $steps_at_start at the start); stop" \
       "training and run again" >&2
  exit 1
fi

# docs/RESULTS.md: the commands, the models they ran on, and each experiment's tables.
doc=${DOC:-docs/RESULTS.md}
fingerprint() { grep -o '"model_fingerprint": *"[^"]*"' "$1" | head -1 | sed 's/.*: *"\(.*\)"/\1/'; }
{
  echo "# Results on the bundled models"
  echo
  echo "Written by \`scripts/results.sh\` on $(date -u +%Y-%m-%d) ($(nproc)-core CPU). Models:"
  echo "\`models/target\` at training step $(step models/target) (fingerprint"
  echo "\`$(fingerprint "$out/selection.json")\`) and \`models/scout\` at step $(step models/scout)"
  echo "(\`$(fingerprint "$out/scout-reverse.json")\`); their model cards give architecture, training and full-cache accuracy"
  echo "per task and length. Tasks: \`$task_file\`, $(wc -l < "$task_file") held-out passkey prompts of 512"
  echo "words, needle at depths 0, 0.25, 0.5, 0.75 and 1 (\`kvwire_tasks --task passkey --length 512"
  echo "--count 8 --split heldout --depths 0,0.25,0.5,0.75,1 --seed 11\`). Engine dtype bfloat16."
  echo
  echo "Scores are exact match of the 5-digit passkey; \"% of full\" is against the full cache;"
  echo "bandwidth is frame bytes against the full cache at 16 bits per element. Agreement and KL"
  echo "compare the next-token distributions with the full cache's over 16 teacher-forced tokens."
  echo "With 40 prompts one answer is 2.5 points: differences of one or two answers are noise."
  echo
  for name in selection budgets quant layers delta svd pipelines scout scout-reverse; do
    echo "## $name"
    echo
    echo "\`kvwire eval --model $(grep -q reverse <<< "$name" && echo models/scout || echo models/target)$(
      [[ $name == scout* ]] && echo " --scout $(grep -q reverse <<< "$name" && echo models/target || echo models/scout)"
    ) ${common[*]} --matrix ${name%-reverse} --out $out/$name\`"
    echo
    # The eval's own markdown, its title line turned into a sub-heading.
    sed 's/^### /#### /' "$out/$name.md"
    echo
  done
  for matrix in selection quant; do
    echo "## multikey-$matrix"
    echo
    echo "Tasks: \`$mk_file\`, $(wc -l < "$mk_file") held-out multi-key prompts of 512 words (eight"
    echo "\`the special number for KEY KEY is D D D D D\` lines, one asked; \`kvwire_tasks --task multikey"
    echo "--length 512 --count 8 --split heldout --depths 0,0.25,0.5,0.75,1 --seed 12\`)."
    echo
    echo "\`kvwire eval --model models/target ${mk_common[*]} --matrix $matrix --out $out/multikey-$matrix\`"
    echo
    sed 's/^### /#### /' "$out/multikey-$matrix.md"
    echo
  done
  echo "## Quality ladder"
  echo
  echo "\`kvwire calibrate --from $out/pipelines.json --from $out/quant.json --from $out/selection.json --ladder $out/ladder.json\`"
  echo
  echo '```'
  cat "$out/ladder.txt"
  echo '```'
} > "$doc"
echo "wrote $doc"
