// Named checks for both browser walks (check.mjs in Chromium, firefox.mjs in Firefox): every
// failure is reported rather than the first, with what the browser showed saved beside it.

let passed = 0;
let failed = 0;
let evidence = null;

/** `fn(n)` is called after the n-th failed check: it saves what the browser showed (check.mjs). */
export function onFailure(fn) {
  evidence = fn;
}

/** Runs one named check; a failure is printed and counted, and the next check still runs. */
export async function check(name, fn) {
  try {
    await fn();
    passed += 1;
    console.log(`ok: ${name}`);
  } catch (e) {
    failed += 1;
    const msg = String(e?.message ?? e).split('\n').slice(0, 4).join(' | ');
    const saved = evidence ? await evidence(failed).catch(() => null) : null;
    console.log(`FAIL: ${name}: ${msg}${saved ? ` (page: ${saved})` : ''}`);
  }
}

export function assert(cond, msg) {
  if (!cond) throw new Error(msg);
}

/** The closing line run-all.sh's reader and a person both understand; true if all passed. */
export function summary() {
  console.log(`${passed} passed, ${failed} failed`);
  return failed === 0 && passed > 0;
}
