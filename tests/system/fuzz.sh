#!/usr/bin/env bash
# Fuzzing in CI (tests/fuzz/README.md): builds every cargo-fuzz target of tests/fuzz (libFuzzer,
# stable toolchain with RUSTC_BOOTSTRAP=1) and runs each for FUZZ_SECONDS from its committed seed
# corpus, two targets at a time (one per core). A crash, a hang (-timeout) or a run over the
# memory limit fails the test, naming the target and the input that did it; the input is kept
# under FUZZ_ARTIFACTS, to become a unit test beside the parser and a file of the corpus (README).
#
# `fuzz.sh --build-only` builds and stops (run-all.sh's background lane, so the build overlaps
# the system tests before this one). Budget: about 5 minutes of CI with the build. The instrumented build of registryd's dependency
# tree is most of a cold run, so the fuzz crate's target dir is a persistent cache (like the VM's
# rootfs and the Garage build); a warm run rebuilds registryd and the targets only. Without a
# sanitizer (--sanitizer none): registryd has no unsafe code of its own for AddressSanitizer to
# check, and without it the build is cheaper and the targets run faster (README has the figures).
# What each run finds new is kept in FUZZ_CORPUS_CACHE, so successive CI runs search deeper.
source "$(dirname "$0")/lib/common.sh"

FUZZ_SECONDS=${FUZZ_SECONDS:-12}
FUZZ_TARGET_DIR=${FUZZ_TARGET_DIR:-/var/cache/registryd-tests/fuzz-target}
FUZZ_CORPUS_CACHE=${FUZZ_CORPUS_CACHE:-/var/cache/registryd-tests/fuzz-corpus}
FUZZ_ARTIFACTS=${FUZZ_ARTIFACTS:-/var/tmp/registryd-fuzz-artifacts}
FUZZ_DIR=$REPO_DIR/tests/fuzz
export RUSTC_BOOTSTRAP=1

deps_fuzz || fail "cargo-fuzz or the fuzz crate's crates missing (tests/system/lib/deps.sh deps_fuzz)"
t0=$SECONDS
(cd "$REPO_DIR" && cargo fuzz build --fuzz-dir tests/fuzz --sanitizer none \
  --target-dir "$FUZZ_TARGET_DIR") >"$WORK/build.log" 2>&1 \
  || { tail -n 30 "$WORK/build.log" >&2; fail "cargo fuzz build"; }
echo "   targets built in $((SECONDS - t0))s"
# run-all.sh builds them ahead, in its background lane; this run then finds them built.
[ "${1:-}" = --build-only ] && exit 0
BIN=$FUZZ_TARGET_DIR/x86_64-unknown-linux-gnu/release
mapfile -t TARGETS < <(cd "$FUZZ_DIR/fuzz_targets" && ls -- *.rs | sed 's/\.rs$//')
[ ${#TARGETS[@]} -ge 12 ] || fail "only ${#TARGETS[@]} fuzz targets in $FUZZ_DIR/fuzz_targets"

# start TARGET: runs it in the background for FUZZ_SECONDS; sets FPID.
start() {
  local t=$1
  [ -x "$BIN/$t" ] || fail "no binary for fuzz target $t in $BIN"
  mkdir -p "$FUZZ_CORPUS_CACHE/$t" "$FUZZ_ARTIFACTS/$t"
  "$BIN/$t" -max_total_time="$FUZZ_SECONDS" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
    -artifact_prefix="$FUZZ_ARTIFACTS/$t/" "$FUZZ_CORPUS_CACHE/$t" "$FUZZ_DIR/corpus/$t" \
    >"$WORK/$t.log" 2>&1 &
  FPID=$!
  PIDS+=("$FPID")
}
# finish TARGET PID: its verdict, and the figures of its run.
failed=()
finish() {
  local t=$1 rc=0 execs rate
  wait "$2" || rc=$?
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$WORK/$t.log")
  rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$WORK/$t.log")
  if [ "$rc" = 0 ]; then
    echo "   $t: ${execs:-?} runs (${rate:-?}/s), no crash"
    return
  fi
  local input
  input=$(sed -n 's/.*Test unit written to \(.*\)$/\1/p' "$WORK/$t.log" | tail -n 1)
  grep -E -m 12 -A 12 '^(thread .* panicked|==[0-9]+== ERROR|ALARM|.*out-of-memory)' "$WORK/$t.log" >&2 || tail -n 30 "$WORK/$t.log" >&2
  echo "FAILED: fuzz target $t (exit $rc) on input ${input:-?}" >&2
  echo "   reproduce: RUSTC_BOOTSTRAP=1 cargo fuzz run --fuzz-dir tests/fuzz --sanitizer none $t ${input:-}" >&2
  failed+=("$t")
}

t1=$SECONDS
for ((i = 0; i < ${#TARGETS[@]}; i += 2)); do
  a=${TARGETS[$i]} b=${TARGETS[$((i + 1))]:-}
  start "$a"; pa=$FPID
  if [ -n "$b" ]; then start "$b"; pb=$FPID; fi
  finish "$a" "$pa"
  if [ -n "$b" ]; then finish "$b" "$pb"; fi
done
echo "   ${#TARGETS[@]} targets run for ${FUZZ_SECONDS}s each in $((SECONDS - t1))s"
[ ${#failed[@]} = 0 ] || fail "fuzz targets crashed: ${failed[*]} (inputs under $FUZZ_ARTIFACTS)"
pass "fuzz: ${#TARGETS[@]} targets, no crash"
