// The browser half of tests/system/ui.sh: walks every page of registryd's web UI as an anonymous
// visitor, as the reader and as admin, and checks each against what ui.sh pushed (expect.json,
// argv[2]) and against the URL and markup contract of the UI (briefs: common.md). Every page is
// scanned by axe-core and photographed in light and dark. Prints one line per check and a closing
// "N passed, N failed"; exits 1 if any failed.
import { createHash } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import https from 'node:https';
import {
  assert, bytesShown, cellByHeader, check, launch, onFailure, shootAndScan, showsBytes, showsExactBytes, summary,
  watchErrors,
} from './lib.mjs';

const X = JSON.parse(readFileSync(process.argv[2], 'utf8'));
const BASE = X.base;
const hex = (d) => d.replace(/^sha256:/, '');
const short = (d) => hex(d).slice(0, 8);
const sum = (xs) => xs.reduce((a, b) => a + b, 0);
const REPOS_PUBLIC = ['apps/multi', 'apps/single', 'apps/copy', 'oras/app', X.upstream.repository];
const HIDDEN = 'secret/app';
const NOT_VISIBLE = [403, 404];

const { ctx, foreign, close } = await launch();
const page = await ctx.newPage();
const errors = watchErrors(page);
// A failed check leaves the page it was on beside the screenshots, for whoever reads the failure.
onFailure(async (n) => {
  const file = `${X.shots}/failed-${String(n).padStart(2, '0')}.html`;
  writeFileSync(file, `<!-- ${page.url()} -->\n${await page.content()}`);
  return file;
});

/** Opens PATH; its status must be `status` (a number or a list). Returns the response. */
async function open(path, status = 200) {
  const r = await page.goto(BASE + path);
  const want = [status].flat();
  assert(r && want.includes(r.status()), `GET ${path}: status ${r?.status()}, want ${want.join(' or ')}`);
  return r;
}

/**
 * What every page has (nav with links to the pages, main#main, the login or logout control and
 * the user's name), no script error; with a screenshot name SHOT, no serious or critical axe
 * violation in either scheme, and SHOT-light.png and SHOT-dark.png.
 */
async function pageChecks(what, user, shot) {
  await check(`${what}: nav, main#main, ${user ? `signed in as ${user}` : 'login control'}`, async () => {
    for (const href of ['/ui/', '/ui/upstreams', '/ui/node', '/ui/uploads']) {
      assert(await page.locator(`nav a[href="${href}"]`).count() > 0, `no <nav> link to ${href}`);
    }
    assert(await page.locator('main#main').count() === 1, 'no <main id="main">');
    if (user) {
      const shown = (await page.locator('span#user').textContent())?.trim();
      assert(shown === user, `span#user shows "${shown}", want "${user}"`);
      assert(await page.locator('form[action="/ui/logout"]').count() > 0, 'no logout form (POST /ui/logout)');
    } else {
      assert(await page.locator('a[href^="/ui/login"], form[action^="/ui/login"]').count() > 0, 'no login control');
      const shown = await page.locator('span#user').count() ? await page.locator('span#user').textContent() : '';
      assert(!/admin|reader/.test(shown), `an anonymous page names a user: "${shown}"`);
    }
  });
  if (shot) {
    await check(`${what}: axe-core finds no serious or critical violation (light and dark; ${shot}-*.png)`, async () => {
      const v = await shootAndScan(page, X.shots, shot);
      assert(v.length === 0, v.join('; '));
    });
  }
  await check(`${what}: no script error`, async () => {
    const e = errors.splice(0);
    assert(e.length === 0, e.join('; '));
  });
}

const row = (table, attrs) => page.locator(`table#${table} tr${Object.entries(attrs)
  .map(([k, v]) => `[data-${k}="${v}"]`).join('')}`);
const rowsOf = async (table, attr) => page.locator(`table#${table} tr[data-${attr}]`)
  .evaluateAll((trs, a) => trs.map((tr) => tr.getAttribute(`data-${a}`)), attr);
const DELETE_CONTROL = 'a[href*="/-/delete"], form[action*="/-/delete"]';
const deleteControls = () => page.locator(`${DELETE_CONTROL}, button:text-matches("delete", "i")`);

/** Clicks what leads to another page (a link, a form's button) and waits for that page. */
async function clickAndLoad(locator) {
  await Promise.all([page.waitForNavigation(), locator.click()]);
}

/** The clipboard's text once `ok` accepts it (the copy is asynchronous), or as it is after 2 s. */
async function clipboard(ok) {
  let text = '';
  for (let i = 0; i < 20; i += 1) {
    text = await page.evaluate(() => navigator.clipboard.readText());
    if (ok(text)) break;
    await page.waitForTimeout(100);
  }
  return text;
}

/** Presses Tab (at most `max` times) until the focused element matches SELECTOR. */
async function tabTo(selector, max = 80) {
  for (let i = 0; i < max; i += 1) {
    await page.keyboard.press('Tab');
    if (await page.evaluate((sel) => document.activeElement?.matches(sel) ?? false, selector)) return true;
  }
  return false;
}

async function apiTags(repo) {
  const r = await ctx.request.get(`${BASE}/v2/${repo}/tags/list`);
  return r.ok() ? ((await r.json()).tags ?? []).sort() : [];
}

/** The repository page's row of TAG: its digest attribute, short digest, copy button, pull command. */
async function tagRow(repo, tag, digest) {
  const tr = row('tags', { tag });
  assert(await tr.count() === 1, `no <tr data-tag="${tag}"> in table#tags`);
  assert(await tr.getAttribute('data-digest') === digest, `data-digest of ${tag}: ${await tr.getAttribute('data-digest')}, want ${digest}`);
  const text = await tr.innerText();
  assert(text.includes(short(digest)), `row ${tag} does not show the short digest ${short(digest)}: ${text}`);
  assert(await tr.locator(`button[data-copy="${digest}"]`).count() === 1, `row ${tag}: no <button data-copy="${digest}">`);
  // The command as the copy button holds it, and shown as text in the row.
  const pull = new RegExp(`^docker pull \\S+/${repo.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&')}:${tag.replace('.', '\\.')}$`);
  const copies = await tr.locator('button[data-copy^="docker pull "]').evaluateAll((bs) => bs.map((b) => b.dataset.copy));
  const cmd = copies.find((c) => pull.test(c));
  assert(cmd, `row ${tag}: no copy button for "docker pull HOST/${repo}:${tag}" (${copies})`);
  assert(text.includes(cmd), `row ${tag}: the pull command "${cmd}" is not shown`);
  return tr;
}

/** The manifest page's layers table against the pushed manifest's layers: digest, media type, size. */
async function layersShown(layers) {
  for (const l of layers) {
    const tr = row('layers', { digest: l.digest });
    assert(await tr.count() === 1, `no <tr data-digest="${l.digest}"> in table#layers`);
    const size = await cellByHeader(tr, /size/);
    assert(size !== null, 'table#layers has no "Size" column');
    assert(showsExactBytes(size, l.size), `layer ${short(l.digest)} shows "${size.trim()}", pushed ${l.size} bytes`);
    if (l.mediaType) assert((await tr.innerText()).includes(l.mediaType), `layer ${short(l.digest)}: no media type ${l.mediaType}`);
  }
}

// ----------------------------------------------------------------------------------------------
// Anonymous.

await check('GET / and GET /ui: 303 to /ui/', async () => {
  for (const p of ['/', '/ui']) {
    const r = await ctx.request.get(BASE + p, { maxRedirects: 0 });
    assert(r.status() === 303, `GET ${p}: ${r.status()}`);
    assert(r.headers().location === '/ui/', `GET ${p}: Location ${r.headers().location}`);
  }
});

await check('anonymous: /ui/ lists the pushed and cached repositories, not the hidden one', async () => {
  await open('/ui/');
  const names = await rowsOf('repositories', 'repository');
  for (const n of REPOS_PUBLIC) assert(names.includes(n), `no <tr data-repository="${n}"> (rows: ${names})`);
  assert(!names.includes(HIDDEN), `${HIDDEN} is listed to an anonymous visitor`);
  for (const n of REPOS_PUBLIC) {
    const link = row('repositories', { repository: n }).locator(`a[href="/ui/r/${n}"]`);
    assert(await link.count() > 0, `row ${n}: no link to /ui/r/${n}`);
  }
});
await check('anonymous: /ui/ tag counts, sizes, last push', async () => {
  const tags = await cellByHeader(row('repositories', { repository: 'apps/single' }), /tags/);
  assert(tags !== null, 'table#repositories has no "Tags" column');
  assert(/(?<!\d)3(?!\d)/.test(tags), `apps/single: tag count "${tags.trim()}", want 3`);
  const single = row('repositories', { repository: 'apps/single' });
  const size = await cellByHeader(single, /^\s*size/);
  assert(size !== null, 'table#repositories has no "Size" column');
  // apps/single holds three images: their layers, and maybe (the contract leaves it open) their
  // configs and manifests too.
  const images = [X.single, X.older, X.newer];
  const low = sum(images.flatMap((i) => i.layers.map((l) => l.size)));
  const high = low + sum(images.map((i) => i.size + i.config_size));
  assert(showsBytes(size, low, high), `apps/single: size "${size.trim()}" is not between ${low} and ${high} bytes`);
  const last = await cellByHeader(single, /push/);
  assert(last !== null && last.trim() !== '', 'apps/single: no last push time');
});
await check('anonymous: /ui/ the cached repository has the badge "cached from docker.io"', async () => {
  const badges = await row('repositories', { repository: X.upstream.repository }).locator('span.badge').allInnerTexts();
  assert(badges.some((b) => /cached from docker\.io/i.test(b)), `badges: ${JSON.stringify(badges)}`);
});
await pageChecks('anonymous: /ui/', null, null);

await check('anonymous: /ui/?q= filters by substring, and never finds the hidden repository', async () => {
  await open('/ui/?q=sing');
  let names = await rowsOf('repositories', 'repository');
  assert(JSON.stringify(names) === '["apps/single"]', `?q=sing: ${names}`);
  await open('/ui/?q=app');
  names = await rowsOf('repositories', 'repository');
  for (const n of ['apps/multi', 'apps/single', 'oras/app']) assert(names.includes(n), `?q=app lacks ${n}: ${names}`);
  assert(!names.includes(HIDDEN), `?q=app shows ${HIDDEN}`);
  await open('/ui/?q=secret');
  names = await rowsOf('repositories', 'repository');
  assert(names.length === 0, `?q=secret shows ${names}`);
  assert(!(await page.locator('main').innerText()).includes(HIDDEN), `?q=secret names ${HIDDEN} on the page`);
});
await check('anonymous: /ui/?n=2 pages through every repository by <a rel="next">', async () => {
  await open('/ui/?n=2');
  const seen = [];
  for (let i = 0; i < 10; i += 1) {
    const names = await rowsOf('repositories', 'repository');
    assert(names.length <= 2 && names.length > 0, `page ${i + 1} has ${names.length} rows`);
    seen.push(...names);
    const next = page.locator('a[rel="next"]');
    if (await next.count() === 0) break;
    await clickAndLoad(next.first());
  }
  for (const n of REPOS_PUBLIC) assert(seen.includes(n), `${n} on no page: ${seen}`);
  assert(new Set(seen).size === seen.length, `a repository on two pages: ${seen}`);
  assert(!seen.includes(HIDDEN), `${HIDDEN} on a page`);
});

await check('anonymous: /ui/r/apps/single: tags with digest, copy button, pull command, size, push time', async () => {
  await open('/ui/r/apps/single');
  assert(JSON.stringify((await rowsOf('tags', 'tag')).sort()) === '["v1","v2","v3"]', `tags: ${await rowsOf('tags', 'tag')}`);
  const v1 = await tagRow('apps/single', 'v1', X.single.digest);
  await tagRow('apps/single', 'v2', X.single.digest);
  await tagRow('apps/single', 'v3', X.newer.digest);
  const size = await cellByHeader(v1, /size/);
  assert(size !== null, 'table#tags has no "Size" column');
  const layers = sum(X.single.layers.map((l) => l.size));
  const all = layers + X.single.config_size + X.single.size;
  assert(showsBytes(size, layers, all), `v1 size "${size.trim()}", want ${layers} (layers) to ${all} (with config and manifest)`);
  const pushed = await cellByHeader(v1, /push/);
  assert(pushed !== null && /\d/.test(pushed), `v1: no push time ("${pushed}")`);
});
await check('anonymous: /ui/r/apps/single: the untagged manifest in table#untagged', async () => {
  const tr = row('untagged', { digest: X.older.digest });
  assert(await tr.count() === 1, `no <tr data-digest="${X.older.digest}"> in table#untagged`);
  const others = await rowsOf('untagged', 'digest');
  assert(others.length === 1, `table#untagged lists ${others}`);
});
await check('anonymous: no delete control on the repository page', async () => {
  assert(await deleteControls().count() === 0, `${await deleteControls().count()} delete control(s) shown to an anonymous visitor`);
});
await pageChecks('anonymous: /ui/r/apps/single', null, '02-repository');
// After the scan: a copy changes the button's text for a moment, and the scan is of the page as loaded.
await check('anonymous: the copy button puts the full digest on the clipboard', async () => {
  await ctx.grantPermissions(['clipboard-read', 'clipboard-write'], { origin: BASE });
  await row('tags', { tag: 'v1' }).locator(`button[data-copy="${X.single.digest}"]`).click();
  const got = await clipboard((t) => t === X.single.digest);
  assert(got === X.single.digest, `clipboard holds "${got}"`);
});
await check('anonymous: the keyboard alone reaches the pull command\'s copy button of v2 and presses it', async () => {
  await open('/ui/r/apps/single');
  const button = `tr[data-tag="v2"] button[data-copy^="docker pull "]`;
  assert(await tabTo(button), `${button} is not reached by Tab`);
  await page.keyboard.press('Enter');
  const want = /^docker pull \S+\/apps\/single:v2$/;
  const got = await clipboard((t) => want.test(t));
  assert(want.test(got), `clipboard holds "${got}"`);
});

await check('anonymous: /ui/r/apps/multi: the index tag with both platforms', async () => {
  await open('/ui/r/apps/multi');
  const tr = await tagRow('apps/multi', 'v1', X.multi.digest);
  const platforms = await cellByHeader(tr, /platform/);
  assert(platforms !== null, 'table#tags has no "Platforms" column');
  for (const c of X.multi.children) assert(platforms.includes(c.platform), `platforms "${platforms.trim()}" lack ${c.platform}`);
});
await pageChecks('anonymous: /ui/r/apps/multi', null, '03-repository-index');

await check('anonymous: /ui/r/oras/app: v1 counts one referrer', async () => {
  await open('/ui/r/oras/app');
  const tr = await tagRow('oras/app', 'v1', X.artifact.digest);
  const refs = await cellByHeader(tr, /referr/);
  assert(refs !== null, 'table#tags has no "Referrers" column');
  assert(/(?<!\d)1(?!\d)/.test(refs), `v1 referrers "${refs.trim()}", want 1`);
  await tagRow('oras/app', 'sig', X.artifact.sig_digest);
});
await pageChecks('anonymous: /ui/r/oras/app', null, '04-repository-artifact');

await check(`anonymous: /ui/r/${X.upstream.repository}: the image pulled through the cache`, async () => {
  await open(`/ui/r/${X.upstream.repository}`);
  await tagRow(X.upstream.repository, X.upstream.tag, X.cached.digest);
});
await pageChecks(`anonymous: /ui/r/${X.upstream.repository}`, null, '05-repository-cached');

await check('anonymous: manifest of the index: media type, digest, platforms, raw JSON', async () => {
  await open('/ui/r/apps/multi/-/manifest/v1');
  const main = await page.locator('main').innerText();
  assert(main.includes('application/vnd.oci.image.index.v1+json'), 'no index media type');
  assert(main.includes(X.multi.digest), `the full digest ${X.multi.digest} is not shown`);
  for (const c of X.multi.children) {
    const tr = row('platforms', { platform: c.platform });
    assert(await tr.count() === 1, `no <tr data-platform="${c.platform}"> in table#platforms`);
    assert(await tr.locator(`a[href*="${c.digest}"]`).count() > 0, `${c.platform}: no link to ${c.digest}`);
  }
  const raw = JSON.parse(await page.locator('pre#raw').textContent());
  assert(JSON.stringify(raw) === JSON.stringify(JSON.parse(X.multi.raw)), 'pre#raw is not the pushed index');
});
await pageChecks('anonymous: manifest of the index', null, '06-manifest-index');

await check('anonymous: a platform of the index, by digest: its layers with the pushed sizes', async () => {
  for (const c of X.multi.child_layers) {
    await open(`/ui/r/apps/multi/-/manifest/${c.digest}`);
    assert((await page.locator('main').innerText()).includes(c.digest), `the page of ${c.digest} does not show it`);
    await layersShown(c.layers);
  }
});

await check('anonymous: manifest of the image: media type, digest, size, config, layers, annotations, raw', async () => {
  await open('/ui/r/apps/single/-/manifest/v1');
  const main = await page.locator('main').innerText();
  assert(main.includes('application/vnd.oci.image.manifest.v1+json'), 'no image manifest media type');
  assert(main.includes(X.single.digest), `no full digest ${X.single.digest}`);
  const facts = await page.locator('main').evaluate((m) => `${m.innerText} ${[...m.querySelectorAll('[title]')].map((e) => e.title).join(' ')}`);
  assert(showsExactBytes(facts, X.single.size), `the manifest's size, ${X.single.size} bytes, is not shown`);
  await layersShown(X.single.layers);
  const ann = await page.locator('section#annotations').innerText();
  assert(ann.includes('org.opencontainers.image.description') && ann.includes('ui test image single'),
    `section#annotations: ${ann}`);
  const raw = JSON.parse(await page.locator('pre#raw').textContent());
  assert(JSON.stringify(raw) === JSON.stringify(X.single.manifest), 'pre#raw is not the pushed manifest');
});
await check('anonymous: manifest of the image: section#config summarises the config, env keys without values', async () => {
  const cfg = await page.locator('section#config').innerText();
  const c = X.single.config;
  const want = [
    '2026-01-02', 'linux/amd64', '/bin/ui-test-server', '--port', '8080/tcp', '9090/udp',
    'ui.test.label', 'label-single', 'PATH', 'UI_TEST_SECRET',
    ...c.history.map((h) => h.created_by),
  ];
  const missing = want.filter((w) => !cfg.includes(w));
  assert(missing.length === 0, `section#config lacks ${JSON.stringify(missing)}`);
  assert(!cfg.includes('never-shown'), 'section#config shows an environment value');
});
await pageChecks('anonymous: manifest of the image', null, '07-manifest-image');

await check('anonymous: manifest by digest: the same manifest at a stable URL', async () => {
  await open(`/ui/r/apps/single/-/manifest/${X.single.digest}`);
  assert((await page.locator('main').innerText()).includes(X.single.digest), 'digest not shown');
  await layersShown(X.single.layers);
});

let fileHref = null;
await check('anonymous: manifest of the artifact: files with a download link, referrer with its artifact type', async () => {
  await open('/ui/r/oras/app/-/manifest/v1');
  const f = X.artifact.file;
  const a = `a[href^="/ui/r/oras/app/-/blob/${f.digest}"]`;
  const tr = page.locator('table#files tr', { has: page.locator(a) });
  assert(await tr.count() === 1, `table#files has no link to /ui/r/oras/app/-/blob/${f.digest}`);
  fileHref = await tr.locator(a).getAttribute('href');
  assert(new URL(fileHref, BASE).pathname === `/ui/r/oras/app/-/blob/${f.digest}`, `the file's link is ${fileHref}`);
  assert((await tr.innerText()).includes(f.name), `table#files does not name ${f.name}`);
  const ref = row('referrers', { digest: X.artifact.sig_digest });
  assert(await ref.count() === 1, `no <tr data-digest="${X.artifact.sig_digest}"> in table#referrers`);
  assert(await ref.getAttribute('data-artifact-type') === X.artifact.sig_type,
    `data-artifact-type ${await ref.getAttribute('data-artifact-type')}`);
  assert((await ref.innerText()).includes(X.artifact.sig_type), 'the referrer row does not show its artifact type');
  assert(await ref.locator(`a[href*="${X.artifact.sig_digest}"]`).count() > 0, 'the referrer row has no link to it');
  const ann = await page.locator('section#annotations').innerText();
  assert(ann.includes('org.example.ui-test'), `section#annotations: ${ann}`);
});
await check('anonymous: the artifact file downloads through its link with its title as the file name', async () => {
  const f = X.artifact.file;
  assert(fileHref, 'no link to follow');
  const r = await ctx.request.get(new URL(fileHref, BASE).href);
  assert(r.status() === 200, `status ${r.status()}`);
  const cd = r.headers()['content-disposition'] ?? '';
  assert(cd.includes(f.name), `Content-Disposition "${cd}" lacks ${f.name}`);
  const body = await r.body();
  assert(createHash('sha256').update(body).digest('hex') === f.sha256, 'the download is not the pushed file');
});
await pageChecks('anonymous: manifest of the artifact', null, '08-manifest-artifact');

await check('anonymous: manifest of the cached image: its layers', async () => {
  await open(`/ui/r/${X.upstream.repository}/-/manifest/${X.upstream.tag}`);
  await layersShown(X.cached.layers);
});


await check('anonymous: /ui/node: storage root, certificate, and the cluster of this one node, alive', async () => {
  await open('/ui/node');
  const node = await page.locator('section#node').innerText();
  assert(node.includes(X.storage), `section#node does not show the storage root ${X.storage}`);
  assert(node.includes(X.tls.expires), `section#node does not show the certificate's expiry ${X.tls.expires}`);
  assert(node.includes('127.0.0.1'), 'section#node does not show the certificate subject 127.0.0.1');
  const rows = await page.locator('table#cluster tr[data-node]').evaluateAll((trs) => trs.map((tr) => tr.dataset.state));
  assert(JSON.stringify(rows) === '["alive"]', `table#cluster rows' data-state: ${JSON.stringify(rows)}, want this node alive`);
});
await pageChecks('anonymous: /ui/node', null, '09-node');

await check('anonymous: /ui/uploads', () => open('/ui/uploads'));
await pageChecks('anonymous: /ui/uploads', null, null);

// The unshared size comes from a census of the whole store that the first /ui/ started in the
// background; it has had the pages above to finish.
await check('anonymous: /ui/ the unshared size, once measured: 0 for apps/copy, whose blobs apps/single shares', async () => {
  let unshared = null;
  for (let i = 0; i < 20; i += 1) {
    await open('/ui/');
    unshared = await cellByHeader(row('repositories', { repository: 'apps/copy' }), /unshared|unique/);
    assert(unshared !== null, 'table#repositories has no "Unshared size" column');
    if (bytesShown(unshared).length > 0) break;
    await page.waitForTimeout(500);
  }
  assert(showsBytes(unshared, 0), `apps/copy's unshared size is "${unshared.trim()}", want 0`);
  const own = await cellByHeader(row('repositories', { repository: 'apps/multi' }), /unshared|unique/);
  const size = await cellByHeader(row('repositories', { repository: 'apps/multi' }), /^\s*size/);
  assert(bytesShown(own).length > 0 && own.trim() === size.trim(), `apps/multi shares nothing: unshared "${own.trim()}", size "${size.trim()}"`);
});
// The list's screenshot is taken now, with the unshared sizes in it.
await pageChecks('anonymous: /ui/ with the sizes measured', null, '01-repositories');
await check('anonymous: the hidden repository, its manifest and blobs are 403 or 404', async () => {
  for (const p of [`/ui/r/${HIDDEN}`, `/ui/r/${HIDDEN}/-/manifest/v1`, `/ui/r/${HIDDEN}/-/manifest/${X.secret.digest}`,
    `/ui/r/${HIDDEN}/-/blob/${X.secret.layers[0].digest}`]) {
    const r = await ctx.request.get(BASE + p, { maxRedirects: 0 });
    assert(NOT_VISIBLE.includes(r.status()), `GET ${p}: ${r.status()}`);
    assert(!(await r.text()).includes(X.secret.digest), `GET ${p} names the hidden manifest's digest`);
  }
  // Its blob through a repository the visitor may read: not there.
  const r = await ctx.request.get(`${BASE}/ui/r/apps/single/-/blob/${X.secret.layers[0].digest}`);
  assert(r.status() === 404, `a hidden blob through apps/single: ${r.status()}`);
});
await check('anonymous: no confirmation page and no delete for a visitor who may not delete', async () => {
  await page.goto(`${BASE}/ui/r/apps/single/-/delete?tag=v1`);
  assert(await page.locator('form#confirm-delete').count() === 0, 'the confirmation form is offered to an anonymous visitor');
  const r = await ctx.request.post(`${BASE}/ui/r/apps/single/-/delete`, { form: { tag: 'v1' }, maxRedirects: 0 });
  assert(r.status() === 403, `anonymous POST delete: ${r.status()}`);
  assert((await apiTags('apps/single')).includes('v1'), 'apps/single:v1 is gone');
  errors.splice(0);
});

// The cache's totals are counted in the background, first some seconds after the start (status
// board, daemon::jobs): by now they are due, and the page is read again until they are posted.
await check('anonymous: /ui/upstreams: the upstream, reachable, with the one image cached from it', async () => {
  const tr = row('upstreams', { upstream: X.upstream.name });
  let cached = null;
  for (let i = 0; i < 40; i += 1) {
    await open('/ui/upstreams');
    assert(await tr.count() === 1, `no <tr data-upstream="${X.upstream.name}">`);
    cached = await cellByHeader(tr, /cached images/);
    assert(cached !== null, 'table#upstreams has no "Cached images" column');
    if (/(?<!\d)1(?!\d)/.test(cached)) break;
    await page.waitForTimeout(500);
  }
  assert(/(?<!\d)1(?!\d)/.test(cached), `cached images "${cached.trim()}", want 1`);
  const state = await cellByHeader(tr, /state|reachable/);
  assert(state !== null && /reachable/i.test(state) && !/unreachable/i.test(state), `state "${state?.trim()}"`);
});
await pageChecks('anonymous: /ui/upstreams', null, '10-upstreams');
await check('/ui/login: the form; a wrong password signs nobody in', async () => {
  await open('/ui/login');
  for (const f of ['username', 'password']) {
    assert(await page.locator(`form#login input[name="${f}"]`).count() === 1, `form#login has no field ${f}`);
  }
  await page.fill('form#login input[name="username"]', 'admin');
  await page.fill('form#login input[name="password"]', 'Wr0ng-password');
  await clickAndLoad(page.locator('form#login [type="submit"]'));
  assert(await page.locator('span#user').count() === 0 || !/admin/.test(await page.locator('span#user').innerText()),
    'a wrong password signed admin in');
  await open('/ui/');
  assert(await page.locator('span#user').count() === 0 || !/admin/.test(await page.locator('span#user').innerText()),
    'after a wrong password, /ui/ names admin');
  errors.splice(0);
});
await open('/ui/login').catch(() => {});
await pageChecks('/ui/login', null, '11-login');

/** Signs USER in through the login form; the page then names them. */
async function login(user, { keyboard = false } = {}) {
  await open('/ui/login');
  if (keyboard) {
    assert(await tabTo('form#login input[name="username"]'), 'the username field is not reached by Tab');
    await page.keyboard.type(user);
    assert(await tabTo('form#login input[name="password"]', 1), 'Tab from the username does not go to the password');
    await page.keyboard.type(X.users[user]);
    await Promise.all([page.waitForNavigation(), page.keyboard.press('Enter')]);
  } else {
    await page.fill('form#login input[name="username"]', user);
    await page.fill('form#login input[name="password"]', X.users[user]);
    await clickAndLoad(page.locator('form#login [type="submit"]'));
  }
  const shown = (await page.locator('span#user').textContent())?.trim();
  assert(shown === user, `after the login, span#user shows "${shown}"`);
}

// ----------------------------------------------------------------------------------------------
// The reader: pulls what anonymous visitors pull, deletes nothing, does not see secret/.

await check('reader: logs in through the form with the keyboard alone (Tab, type, Enter)', () => login('reader', { keyboard: true }));
await check('reader: the hidden repository stays hidden: list, search, page', async () => {
  await open('/ui/');
  assert(!(await rowsOf('repositories', 'repository')).includes(HIDDEN), `${HIDDEN} listed to the reader`);
  await open('/ui/?q=secret');
  assert((await rowsOf('repositories', 'repository')).length === 0, '?q=secret finds something for the reader');
  const r = await ctx.request.get(`${BASE}/ui/r/${HIDDEN}`, { maxRedirects: 0 });
  assert(NOT_VISIBLE.includes(r.status()), `the reader GET /ui/r/${HIDDEN}: ${r.status()}`);
});
await check('reader: no delete control, no confirmation page', async () => {
  await open('/ui/r/apps/single');
  assert(await deleteControls().count() === 0, `${await deleteControls().count()} delete control(s) shown to the reader`);
  await page.goto(`${BASE}/ui/r/apps/single/-/delete?tag=v1`);
  assert(await page.locator('form#confirm-delete').count() === 0, 'the confirmation form is offered to the reader');
  errors.splice(0);
});
await check('reader: logs out (POST /ui/logout)', async () => {
  await open('/ui/');
  await clickAndLoad(page.locator('form[action="/ui/logout"] [type="submit"], form[action="/ui/logout"] button').first());
  await open('/ui/');
  assert(await page.locator('span#user').count() === 0 || !/reader/.test(await page.locator('span#user').innerText()),
    'still signed in as reader after the logout');
});

// ----------------------------------------------------------------------------------------------
// Admin: sees everything, deletes through the confirmation page; forged requests are refused.

await check('admin: logs in; the session cookie is HttpOnly, Secure and SameSite=Strict', async () => {
  const before = new Set((await ctx.cookies(`${BASE}/ui/`)).map((c) => `${c.name}=${c.value}`));
  await login('admin');
  const fresh = (await ctx.cookies(`${BASE}/ui/`)).filter((c) => !before.has(`${c.name}=${c.value}`));
  assert(fresh.length > 0, 'the login set no cookie');
  for (const c of fresh) {
    assert(c.httpOnly && c.secure && c.sameSite === 'Strict',
      `cookie ${c.name}: httpOnly ${c.httpOnly}, secure ${c.secure}, sameSite ${c.sameSite}`);
  }
});
await check('admin: sees the hidden repository in the list, in search and its page', async () => {
  await open('/ui/');
  assert((await rowsOf('repositories', 'repository')).includes(HIDDEN), `${HIDDEN} not listed to admin`);
  await open('/ui/?q=secret');
  assert(JSON.stringify(await rowsOf('repositories', 'repository')) === JSON.stringify([HIDDEN]), '?q=secret for admin');
  await open(`/ui/r/${HIDDEN}`);
  await tagRow(HIDDEN, 'v1', X.secret.digest);
});
await check('admin: a delete control on each tag and on the untagged manifest', async () => {
  await open('/ui/r/apps/single');
  for (const tag of ['v1', 'v2', 'v3']) {
    assert(await row('tags', { tag }).locator(DELETE_CONTROL).count() > 0, `no delete control in the row of ${tag}`);
  }
  const u = row('untagged', { digest: X.older.digest });
  assert(await u.locator(DELETE_CONTROL).count() > 0, 'no delete control for the untagged manifest');
});
await pageChecks('admin: /ui/r/apps/single', 'admin', '12-repository-admin');
await check('admin: /ui/uploads shows the upload in progress with its size', async () => {
  await open('/ui/uploads');
  const tr = page.locator('table#uploads tr', { hasText: X.upload.repository });
  assert(await tr.count() === 1, `table#uploads has no row for ${X.upload.repository}`);
  const size = await cellByHeader(tr, /size|bytes|received/);
  assert(size !== null, 'table#uploads has no "Size" column');
  assert(showsExactBytes(size, X.upload.bytes), `upload size "${size.trim()}", sent ${X.upload.bytes}`);
});
await pageChecks('admin: /ui/uploads', 'admin', '13-uploads');

/** A page served from another origin on 127.0.0.1 whose form posts a delete of apps/single:v1. */
function forger(proto) {
  const html = `<!doctype html><html lang="en"><title>forged</title><body>
    <form id="f" method="POST" action="${BASE}/ui/r/apps/single/-/delete">
    <input name="tag" value="v1"></form><script>document.getElementById('f').submit()</script></body></html>`;
  const serve = (req, res) => { res.writeHead(200, { 'content-type': 'text/html' }); res.end(html); };
  const server = proto === 'https'
    ? https.createServer({ cert: readFileSync(X.tls.cert), key: readFileSync(X.tls.key) }, serve)
    : http.createServer(serve);
  return new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve(server)));
}

for (const proto of ['https', 'http']) {
  await check(`admin: a cross-site form POST from ${proto}://127.0.0.1:<other port> is refused (403), v1 kept`, async () => {
    const server = await forger(proto);
    try {
      const origin = `${proto}://127.0.0.1:${server.address().port}`;
      const [resp] = await Promise.all([
        page.waitForResponse((r) => r.url().includes('/-/delete') && r.request().method() === 'POST'),
        page.goto(`${origin}/forge`),
      ]);
      assert(resp.status() === 403, `the forged POST from ${origin} got ${resp.status()}`);
      assert((await apiTags('apps/single')).includes('v1'), 'apps/single:v1 was deleted by a forged request');
    } finally {
      server.close();
    }
    errors.splice(0);
  });
}
await check('admin: a POST with the session cookie, a foreign Origin and no CSRF token is refused (403)', async () => {
  const r = await ctx.request.post(`${BASE}/ui/r/apps/single/-/delete`, {
    form: { tag: 'v1' }, headers: { Origin: 'https://attacker.invalid' }, maxRedirects: 0,
  });
  assert(r.status() === 403, `status ${r.status()}`);
  assert((await apiTags('apps/single')).includes('v1'), 'apps/single:v1 was deleted');
});
await check('admin: a same-origin POST without the CSRF token is refused (403)', async () => {
  const r = await ctx.request.post(`${BASE}/ui/r/apps/single/-/delete`, {
    form: { tag: 'v1' }, headers: { Origin: new URL(BASE).origin }, maxRedirects: 0,
  });
  assert(r.status() === 403, `status ${r.status()}`);
  assert((await apiTags('apps/single')).includes('v1'), 'apps/single:v1 was deleted');
});

await check('admin: deletes apps/single:v2 through its control and the confirmation page', async () => {
  await open('/ui/r/apps/single');
  page.once('dialog', (d) => d.accept());
  const tr = row('tags', { tag: 'v2' });
  const control = tr.locator('a[href*="/-/delete"], form[action*="/-/delete"] [type="submit"], form[action*="/-/delete"] button').first();
  await clickAndLoad(control);
  const form = page.locator('form#confirm-delete');
  assert(await form.count() === 1, `the control led to ${page.url()}, which has no form#confirm-delete`);
  assert(new URL(await form.getAttribute('action'), BASE).pathname === '/ui/r/apps/single/-/delete', `form action ${await form.getAttribute('action')}`);
  assert((await form.getAttribute('method'))?.toLowerCase() === 'post', 'the confirmation form does not POST');
  assert(await form.locator('input[name="csrf"]').count() === 1, 'the confirmation form has no csrf field');
  assert((await page.locator('main').innerText()).includes('v2'), 'the confirmation page does not name the tag');
  await pageChecks('admin: the confirmation page', 'admin', '14-confirm-delete');
  page.once('dialog', (d) => d.accept());
  await clickAndLoad(form.locator('[type="submit"], button').first());
  assert((await apiTags('apps/single')).join() === 'v1,v3', `tags after the delete: ${await apiTags('apps/single')}`);
  await open('/ui/r/apps/single');
  assert(await row('tags', { tag: 'v2' }).count() === 0, 'the repository page still lists v2');
  assert(await row('tags', { tag: 'v1' }).count() === 1, 'the repository page lost v1');
});
await check('admin: deletes the untagged manifest by digest (GET .../-/delete?digest=, no JavaScript needed)', async () => {
  await open(`/ui/r/apps/single/-/delete?digest=${X.older.digest}`);
  const form = page.locator('form#confirm-delete');
  assert(await form.count() === 1, 'no form#confirm-delete');
  assert((await page.locator('main').innerText()).includes(short(X.older.digest)), 'the confirmation page does not name the digest');
  page.once('dialog', (d) => d.accept());
  await clickAndLoad(form.locator('[type="submit"], button').first());
  const r = await ctx.request.get(`${BASE}/v2/apps/single/manifests/${X.older.digest}`, {
    headers: { Accept: 'application/vnd.oci.image.manifest.v1+json' },
  });
  assert(r.status() === 404, `the deleted manifest answers ${r.status()}`);
  await open('/ui/r/apps/single');
  assert(await row('untagged', { digest: X.older.digest }).count() === 0, 'table#untagged still lists it');
});

await check('no request left 127.0.0.1', async () => {
  assert(foreign.length === 0, `requests to other hosts: ${foreign.slice(0, 5).join(', ')}`);
});

await close();
process.exit(summary() ? 0 : 1);
