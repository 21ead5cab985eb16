// The Firefox half of tests/system/ui.sh: Debian's firefox-esr, driven by puppeteer-core over
// WebDriver BiDi (Playwright drives only its own patched Firefox builds), walks the pages an
// operator uses most after check.mjs has walked them all in Chromium: the redirect from /, the
// login form, a repository, an index's and an image's manifest, the copy button, a delete through
// the confirmation page, the status pages, and both colour schemes (Firefox's content override
// pref: BiDi has no media emulation, so one browser per scheme). ui.sh runs it inside a network
// namespace that has only loopback, so nothing Firefox itself reaches for can leave the machine.
// argv[2]: ui.sh's expect.json; argv[3]: the tag this walk deletes. Prints one line per check and
// "N passed, N failed"; exits 1 if any failed.
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { assert, check, onFailure, summary } from './checks.mjs';

// The packages live in UI_NODE_DIR (lib/deps.sh's npm ci), not beside this file.
const require = createRequire(join(process.env.UI_NODE_DIR ?? '', 'node_modules') + '/');
const puppeteer = require('puppeteer-core');

const X = JSON.parse(readFileSync(process.argv[2], 'utf8'));
const DOOMED = process.argv[3];
const BASE = X.base;
const PUBLIC = ['apps/multi', 'apps/single', 'apps/copy', 'oras/app', X.upstream.repository];
const PAGES = [ // [screenshot name, path]: the pages walked in both schemes
  ['repositories', '/ui/'],
  ['repository', '/ui/r/apps/single'],
  ['index', '/ui/r/apps/multi/-/manifest/v1'],
  ['image', '/ui/r/apps/single/-/manifest/v1'],
  ['upstreams', '/ui/upstreams'],
  ['node', '/ui/node'],
  ['uploads', '/ui/uploads'],
];

let browser;
let page;
const errors = [];
const foreign = [];

/** A fresh Firefox whose pages prefer `scheme` ('light' or 'dark'), with an empty profile. */
async function launch(scheme) {
  const profile = mkdtempSync(join(tmpdir(), 'registryd-ff-'));
  const b = await puppeteer.launch({
    browser: 'firefox',
    executablePath: '/usr/bin/firefox-esr',
    headless: true,
    userDataDir: profile,
    // The registry's certificate is ui.sh's own loopback CA, which this profile does not trust.
    acceptInsecureCerts: true,
    extraPrefsFirefox: {
      // 0 dark, 1 light: what `prefers-color-scheme` answers in every page.
      'layout.css.prefers-color-scheme.content-override': scheme === 'dark' ? 0 : 1,
      'app.update.enabled': false,
      'browser.safebrowsing.malware.enabled': false,
      'browser.safebrowsing.phishing.enabled': false,
      'network.captive-portal-service.enabled': false,
      'network.connectivity-service.enabled': false,
    },
  });
  const p = await b.newPage();
  await p.setViewport({ width: 1280, height: 900 });
  p.on('pageerror', (e) => errors.push(`page error: ${e.message}`));
  p.on('console', (m) => { if (m.type() === 'error') errors.push(`console: ${m.text()}`); });
  p.on('request', (r) => {
    const u = new URL(r.url());
    if (/^https?:$/.test(u.protocol) && u.hostname !== '127.0.0.1') foreign.push(r.url());
  });
  return { b, p, profile };
}

/** Opens PATH and waits for it to load; its final status must be `status`. */
async function open(path, status = 200) {
  const r = await page.goto(BASE + path, { waitUntil: 'load' });
  assert(r && r.status() === status, `GET ${path}: status ${r?.status()}, want ${status}`);
  return r;
}
/** Clicks what `selector` names and waits for the page it leads to. */
async function clickAndLoad(selector) {
  await Promise.all([page.waitForNavigation({ waitUntil: 'load' }), page.click(selector)]);
}
const attrs = (sel, name) => page.$$eval(sel, (es, n) => es.map((e) => e.getAttribute(n)), name);
const text = (sel) => page.$eval(sel, (e) => e.innerText);
/** The tags the registry's API lists for REPO (anonymous pull is allowed there). */
async function apiTags(repo) {
  const r = await page.evaluate(async (u) => (await fetch(u)).json(), `${BASE}/v2/${repo}/tags/list`);
  return (r.tags ?? []).sort();
}
/** The body's background as [r, g, b]. */
async function background() {
  const c = await page.evaluate(() => getComputedStyle(document.body).backgroundColor);
  return (c.match(/\d+/g) ?? []).slice(0, 3).map(Number);
}
const luminance = ([r, g, b]) => (0.2126 * r + 0.7152 * g + 0.0722 * b) / 255;

onFailure(async (n) => {
  const file = `${X.shots}/failed-ff-${String(n).padStart(2, '0')}.html`;
  writeFileSync(file, `<!-- ${page.url()} -->\n${await page.content()}`);
  return file;
});

// ----------------------------------------------------------------------------------------------
// Light: the walk.
let run = await launch('light');
({ b: browser, p: page } = run);
console.log(`firefox: ${await browser.version()}`);

await check('firefox: / redirects to the repository list', async () => {
  await open('/');
  assert(new URL(page.url()).pathname === '/ui/', `/ led to ${page.url()}`);
  const listed = await attrs('table#repositories tr[data-repository]', 'data-repository');
  for (const r of PUBLIC) assert(listed.includes(r), `${r} not listed: ${listed.join(', ')}`);
  assert(!listed.includes('secret/app'), 'the hidden repository is listed to an anonymous visitor');
});
await check('firefox: logs in through the form', async () => {
  await open('/ui/login');
  await page.type('form#login input[name="username"]', 'admin');
  await page.type('form#login input[name="password"]', X.users.admin);
  await clickAndLoad('form#login [type="submit"]');
  assert((await text('span#user')).trim() === 'admin', `span#user shows "${await text('span#user')}"`);
  const listed = await attrs('table#repositories tr[data-repository]', 'data-repository');
  assert(listed.includes('secret/app'), 'admin does not see the hidden repository');
});
await check('firefox: the repository page lists the tags with their digests', async () => {
  await open('/ui/r/apps/single');
  const rows = await page.$$eval('table#tags tr[data-tag]', (es) => es.map((e) => [e.dataset.tag, e.dataset.digest]));
  const tags = Object.fromEntries(rows);
  assert(tags.v1 === X.single.digest, `v1 shows ${tags.v1}, want ${X.single.digest}`);
  assert(tags[DOOMED] === X.single.digest, `${DOOMED} shows ${tags[DOOMED]}`);
  assert(tags.v3 === X.newer.digest, `v3 shows ${tags.v3}, want ${X.newer.digest}`);
  const main = await text('main');
  assert(main.includes(`docker pull ${X.registry}/apps/single:v1`), 'no pull command for v1');
});
await check('firefox: a copy button copies (the clipboard API answers, the button says so)', async () => {
  const sel = `table#tags tr[data-tag="v1"] button[data-copy]`;
  assert(await page.$(sel), 'no copy button in the row of v1 (ui.js did not unhide it?)');
  await page.click(sel);
  await page.waitForSelector(`${sel}[data-copied]`, { timeout: 3000 });
  assert(/copied/i.test(await text(sel)), `the button says "${await text(sel)}"`);
});
await check('firefox: the index page lists its platforms and its raw JSON', async () => {
  await open('/ui/r/apps/multi/-/manifest/v1');
  const shown = (await attrs('table#platforms tr[data-platform]', 'data-platform')).sort();
  const want = X.multi.children.map((c) => c.platform).sort();
  assert(JSON.stringify(shown) === JSON.stringify(want), `platforms ${shown}, want ${want}`);
  const raw = JSON.parse(await page.$eval('pre#raw', (e) => e.textContent));
  assert(JSON.stringify(raw) === JSON.stringify(JSON.parse(X.multi.raw)), 'pre#raw is not the pushed index');
});
await check('firefox: the image page lists its layers and config', async () => {
  await open('/ui/r/apps/single/-/manifest/v1');
  const layers = await attrs('table#layers tr[data-digest]', 'data-digest');
  const want = X.single.layers.map((l) => l.digest);
  assert(JSON.stringify(layers) === JSON.stringify(want), `layers ${layers}, want ${want}`);
  assert(await page.$('section#config'), 'no section#config');
});
await check('firefox: the status pages show the upstream, this node and the upload in progress', async () => {
  await open('/ui/upstreams');
  assert((await attrs('table#upstreams tr[data-upstream]', 'data-upstream')).includes(X.upstream.name), 'upstream not listed');
  await open('/ui/node');
  assert(await page.$('section#node'), 'no section#node');
  await open('/ui/uploads');
  assert((await text('table#uploads')).includes(X.upload.repository), `${X.upload.repository} not in table#uploads`);
});
await check(`firefox: deletes apps/single:${DOOMED} through its control and the confirmation page`, async () => {
  await open('/ui/r/apps/single');
  page.on('dialog', (d) => d.accept());
  const row = `table#tags tr[data-tag="${DOOMED}"]`;
  const link = await page.$(`${row} a[href*="/-/delete"]`);
  await clickAndLoad(link ? `${row} a[href*="/-/delete"]` : `${row} form[action*="/-/delete"] [type="submit"]`);
  assert(await page.$('form#confirm-delete'), `the control led to ${page.url()}, which has no form#confirm-delete`);
  assert((await text('main')).includes(DOOMED), 'the confirmation page does not name the tag');
  await clickAndLoad('form#confirm-delete [type="submit"]');
  const tags = await apiTags('apps/single');
  assert(!tags.includes(DOOMED) && tags.includes('v1'), `tags after the delete: ${tags}`);
  await open('/ui/r/apps/single');
  assert(!(await page.$(row)), `the repository page still lists ${DOOMED}`);
});

/** Every page of PAGES in the current scheme: a screenshot, and its background's luminance. */
async function shoot(scheme) {
  const lum = [];
  for (const [name, path] of PAGES) {
    await open(path);
    await page.screenshot({ path: `${X.shots}/ff-${name}-${scheme}.png`, fullPage: true });
    lum.push([path, luminance(await background())]);
  }
  return lum;
}
await check('firefox: light scheme: every page has a light background', async () => {
  for (const [path, l] of await shoot('light')) assert(l > 0.8, `${path}: background luminance ${l.toFixed(2)}`);
});
await browser.close();
rmSync(run.profile, { recursive: true, force: true });

// ----------------------------------------------------------------------------------------------
// Dark: the same pages, in a browser whose pages prefer the dark scheme.
run = await launch('dark');
({ b: browser, p: page } = run);
await check('firefox: dark scheme: every page has a dark background', async () => {
  for (const [path, l] of await shoot('dark')) assert(l < 0.2, `${path}: background luminance ${l.toFixed(2)}`);
});
await check('firefox: no script error on any page', async () => {
  assert(errors.length === 0, errors.slice(0, 5).join(' | '));
});
await check('firefox: no request left 127.0.0.1', async () => {
  assert(foreign.length === 0, `requests to other hosts: ${foreign.slice(0, 5).join(', ')}`);
});
await browser.close();
rmSync(run.profile, { recursive: true, force: true });
process.exit(summary() ? 0 : 1);
