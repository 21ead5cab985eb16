// The plumbing of the UI's browser test (check.mjs holds the checks): Debian's chromium through
// playwright-core, axe-core injected into each page, screenshots in both colour schemes, named
// checks (checks.mjs, shared with the Firefox walk), and the readers of what a page shows (a
// table's cell by its column's header, a byte count in whatever form the page prints it).
import { createRequire } from 'node:module';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { tmpdir } from 'node:os';

// The packages live in UI_NODE_DIR (lib/deps.sh's npm ci), not beside this file.
const require = createRequire(join(process.env.UI_NODE_DIR ?? '', 'node_modules') + '/');
const { chromium } = require('playwright-core');
const AXE_SOURCE = readFileSync(require.resolve('axe-core/axe.min.js'), 'utf8');

// Flags that keep Chromium from reaching past 127.0.0.1 (TESTING.md) and from needing a GPU or a
// sandbox (the test runs as root).
const CHROMIUM_ARGS = [
  '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync',
];

export { assert, check, onFailure, summary } from './checks.mjs';

/**
 * Chromium with a profile of its own in a fresh temp folder (removed by `close`), certificate
 * errors ignored (the registry's certificate is the test CA's), and every request that leaves
 * 127.0.0.1 recorded: the UI must fetch nothing from another host.
 */
export async function launch() {
  const profile = mkdtempSync(join(tmpdir(), 'ui-chromium-'));
  const ctx = await chromium.launchPersistentContext(profile, {
    executablePath: '/usr/bin/chromium',
    args: CHROMIUM_ARGS,
    ignoreHTTPSErrors: true,
    viewport: { width: 1280, height: 800 },
  });
  ctx.setDefaultTimeout(5000);
  const foreign = [];
  ctx.on('request', (r) => {
    const u = new URL(r.url());
    if (!['data:', 'blob:', 'about:'].includes(u.protocol) && u.hostname !== '127.0.0.1') {
      foreign.push(r.url());
    }
  });
  const close = async () => {
    await ctx.close();
    rmSync(profile, { recursive: true, force: true });
  };
  return { ctx, foreign, close };
}

/** Errors the page's own scripts raise or log (a resource that failed to load, e.g. a 404 page, is no script error). */
export function watchErrors(page) {
  const errors = [];
  page.on('pageerror', (e) => errors.push(`page error: ${e.message}`));
  page.on('console', (m) => {
    if (m.type() === 'error' && !/Failed to load resource/.test(m.text())) errors.push(`console: ${m.text()}`);
  });
  return errors;
}

/**
 * axe-core's scan of the page as it is: the serious and critical violations, one line each.
 * Injected through the DevTools protocol (page.evaluate), which the page's Content-Security-Policy
 * does not govern, so the UI's own CSP stays in force for the rest of the test.
 */
export async function axeViolations(page) {
  const loaded = await page.evaluate(() => typeof window.axe !== 'undefined');
  if (!loaded) await page.evaluate(AXE_SOURCE);
  const violations = await page.evaluate(async () => {
    const r = await window.axe.run(document, { resultTypes: ['violations'] });
    return r.violations.map((v) => ({
      id: v.id, impact: v.impact, help: v.help,
      targets: v.nodes.slice(0, 3).map((n) => n.target.join(' ')),
    }));
  });
  return violations
    .filter((v) => v.impact === 'serious' || v.impact === 'critical')
    .map((v) => `${v.impact} ${v.id} (${v.help}) at ${v.targets.join(', ')}`);
}

/**
 * Screenshots of the page in the light and the dark scheme (the UI follows the system's), and the
 * accessibility scan in each: a contrast fault may be in one theme only. Returns the violations.
 */
export async function shootAndScan(page, dir, name) {
  const problems = [];
  for (const scheme of ['light', 'dark']) {
    await page.emulateMedia({ colorScheme: scheme });
    await page.screenshot({ path: join(dir, `${name}-${scheme}.png`), fullPage: true });
    for (const v of await axeViolations(page)) problems.push(`${scheme}: ${v}`);
  }
  await page.emulateMedia({ colorScheme: 'light' });
  return problems;
}

/**
 * The text of a table row's cell under the column whose header matches `re`, with every attribute
 * value inside that cell (a `title="150231 bytes"`, a `<data value=...>`), or null when the table
 * has no such column.
 */
export async function cellByHeader(row, re) {
  return row.evaluate((tr, src) => {
    const rx = new RegExp(src, 'i');
    const table = tr.closest('table');
    const head = table.tHead?.rows[0] ?? table.rows[0];
    let col = 0;
    let found = -1;
    for (const th of head.cells) {
      if (found < 0 && rx.test(th.textContent)) found = col;
      col += th.colSpan || 1;
    }
    if (found < 0) return null;
    col = 0;
    for (const td of tr.cells) {
      if (col === found) {
        const attrs = [td, ...td.querySelectorAll('*')]
          .flatMap((el) => [...el.attributes].map((a) => a.value));
        return `${td.innerText} ${attrs.join(' ')}`;
      }
      col += td.colSpan || 1;
    }
    return null;
  }, re.source);
}

const UNITS = {
  b: 1, byte: 1, bytes: 1,
  kb: 1e3, mb: 1e6, gb: 1e9, tb: 1e12,
  kib: 1024, mib: 1024 ** 2, gib: 1024 ** 3, tib: 1024 ** 4,
};

/**
 * The byte counts `text` shows, each as the interval [low, high] it stands for: an exact number
 * (thousands grouped or not) is itself; a figure in a unit (kB, KiB, MB, ...) stands for anything
 * that rounds to the digits shown, e.g. "146.7 KiB" for 150170 to 150272. Nothing closer can be
 * asked of a figure printed for people.
 */
export function bytesShown(text) {
  const found = [];
  if (text == null) return found;
  for (const m of text.matchAll(/(?<![\w.,])(\d{1,3}(?:[,\u202f\u00a0 ]\d{3})+|\d+)(?!\w|[.,]\d)/g)) {
    const n = Number(m[1].replace(/[^\d]/g, ''));
    found.push([n, n]);
  }
  for (const m of text.matchAll(/(\d+)(?:[.,](\d+))?\s*(bytes|byte|[kmgt]i?b|b)\b/gi)) {
    const u = m[3].toLowerCase();
    const half = 0.5 * 10 ** -(m[2]?.length ?? 0);
    const v = Number(`${m[1]}.${m[2] ?? '0'}`);
    // "KB", "MB", ... are written for powers of 1000 and of 1024 alike.
    const units = /^[kmgt]b$/.test(u) ? [UNITS[u], UNITS[`${u[0]}ib`]] : [UNITS[u]];
    for (const unit of units) found.push([(v - half) * unit, (v + half) * unit]);
  }
  return found;
}

/** Whether `text` shows a byte count that may be `low` to `high` (`n` alone: may be `n`). */
export function showsBytes(text, low, high = low) {
  return bytesShown(text).some(([a, b]) => a <= high && b >= low);
}

/** Whether `text` shows the byte count `n` to the byte (in a `title` for one, as the UI does). */
export function showsExactBytes(text, n) {
  return bytesShown(text).some(([a, b]) => a === n && b === n && Number.isInteger(a));
}
