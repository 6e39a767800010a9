#!/usr/bin/env bash
# Every check of the project, in the order CI runs them; ends with one line "N passed, N failed".
#   library in sync with the notebooks (nbdev_export leaves no diff)
#   notebooks stripped (nbdev_clean leaves no diff), README in sync with nbs/index.ipynb
#   every notebook runs (nbdev_test; cells flagged cuda/slow are skipped, see settings.ini tst_flags)
#   pytest tests/
set -u
cd "$(dirname "$0")/.."
export TRL_EXPERIMENTAL_SILENCE=1 TOKENIZERS_PARALLELISM=false
# A fresh model cache: the run measures (and CI pays) the cold cost, and never reuses a stale toy M0.
export SIPF_CACHE="${SIPF_CACHE:-$(mktemp -d)}"
passed=0; failed=0
ok()   { passed=$((passed + ${2:-1})); echo "PASS $1"; }
bad()  { failed=$((failed + ${2:-1})); echo "FAIL $1"; }
clean_tree() { [ -z "$(git status --porcelain -- "$@")" ]; }

tracked_before=$(git status --porcelain -- sipf nbs README.md)
nbdev_export && [ "$(git status --porcelain -- sipf)" = "$(echo "$tracked_before" | grep ' sipf/' || true)" ] \
  && ok "library in sync with notebooks" || { bad "library out of sync with notebooks (run nbdev_export)"; git status --short -- sipf; }
nbdev_clean && [ "$(git status --porcelain -- nbs)" = "$(echo "$tracked_before" | grep ' nbs/' || true)" ] \
  && ok "notebooks stripped" || { bad "notebooks not stripped (run nbdev_clean)"; git status --short -- nbs; }
jupyter nbconvert --to markdown --stdout nbs/index.ipynb 2>/dev/null | cmp -s - README.md \
  && ok "README.md in sync with nbs/index.ipynb" || bad "README.md out of sync (jupyter nbconvert --to markdown --stdout nbs/index.ipynb > README.md)"

ruff check --quiet . && ok "ruff check" || bad "ruff check (run: ruff check .)"
ruff format --check --quiet . && ok "ruff format" || bad "ruff format (run: ruff format .)"

nbs=$(cd nbs && ls [0-9]*.ipynb tests_*.ipynb index.ipynb 2>/dev/null | sort -u)
n_nbs=$(echo "$nbs" | wc -w)
out=$(nbdev_test --n_workers "${SIPF_TEST_WORKERS:-2}" 2>&1); rc=$?; echo "$out" | tail -40
# nbdev prints "nbdev Tests Failed On The Following Notebooks:" then one name per line (case varies by version)
n_failed_nbs=$(echo "$out" | sed -n '/[Tt]ests [Ff]ailed [Oo]n [Tt]he [Ff]ollowing/,$p' | grep -c '\.ipynb' || true)
[ "$rc" -ne 0 ] && [ "$n_failed_nbs" -eq 0 ] && n_failed_nbs=1  # failed without naming a notebook: still a failure
ok "notebooks ($n_nbs run)" $((n_nbs - n_failed_nbs))
[ "$n_failed_nbs" -gt 0 ] && bad "notebooks: $n_failed_nbs failed" "$n_failed_nbs"

pyout=$(python -m pytest tests/ -q -p no:cacheprovider 2>&1); echo "$pyout" | tail -60
summary=$(echo "$pyout" | grep -E '^(=+ )?[0-9]+ (passed|failed|error)' | tail -1)
p=$(echo "$summary" | grep -oE '[0-9]+ passed' | grep -oE '[0-9]+' || echo 0)
f=$(echo "$summary" | grep -oE '[0-9]+ failed' | grep -oE '[0-9]+' || echo 0)
e=$(echo "$summary" | grep -oE '[0-9]+ errors?' | grep -oE '[0-9]+' || echo 0)
passed=$((passed + p)); failed=$((failed + f + e))
[ -z "$summary" ] && bad "pytest produced no summary"

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
