// The token page in Debian's headless Chromium, driven by playwright-core.
// Run by tests/token_page_browser.rs, which reads the JSON lines this prints and answers
// "continue" on standard input when it has done its part (docker login and push with the
// token; then the refused login after the revocation).
//
// Env: BASE_URL, PAGE_USER, PAGE_PASSWORD, MAINTAINER, MAINTAINER_TOKEN (an api token of a
// group maintainer, signed in without JavaScript), ARTIFACTS (a folder for screenshots).
import { chromium } from 'playwright-core';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';

const base = process.env.BASE_URL;
const user = process.env.PAGE_USER;
const password = process.env.PAGE_PASSWORD;
const artifacts = process.env.ARTIFACTS;
const maintainer = process.env.MAINTAINER;
const maintainerToken = process.env.MAINTAINER_TOKEN;
const lines = createInterface({ input: process.stdin })[Symbol.asyncIterator]();

function say(object) {
  process.stdout.write(JSON.stringify(object) + '\n');
}

async function waitForTest() {
  const { value, done } = await lines.next();
  if (done || value.trim() !== 'continue') throw new Error(`the test said ${JSON.stringify(value)}`);
}

function check(condition, what) {
  if (!condition) throw new Error(what);
}

const profiles = [];
// A fresh, empty profile (--user-data-dir) for every browser started.
async function launch(options) {
  const profile = mkdtempSync(join(tmpdir(), 'pc-chromium-'));
  profiles.push(profile);
  return chromium.launchPersistentContext(profile, {
    executablePath: '/usr/bin/chromium',
    args: [
      '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync',
    ],
    ...options,
  });
}

const contexts = [];
try {
  const context = await launch({ viewport: { width: 1100, height: 900 } });
  contexts.push(context);
  await context.grantPermissions(['clipboard-read', 'clipboard-write'], { origin: base });
  const page = await context.newPage();
  const problems = [];
  page.on('console', (m) => { if (m.type() === 'error') problems.push(m.text()); });
  page.on('pageerror', (e) => problems.push(String(e)));
  page.on('requestfailed', (r) => problems.push(`request failed: ${r.url()}`));
  page.on('request', (r) => { if (!r.url().startsWith(base)) problems.push(`external request: ${r.url()}`); });

  await page.goto(`${base}/-/profile/personal_access_tokens`);
  await page.getByLabel('Username').fill(user);
  await page.getByLabel('Password or personal access token').fill(password);
  await page.getByRole('button', { name: 'Sign in' }).click();
  await page.getByRole('heading', { name: 'Personal access tokens', level: 1 }).waitFor();
  check((await page.textContent('header')).includes(`Signed in as ${user}`), 'signed-in header');

  await page.getByLabel('Token name').fill('browser <laptop>');
  await page.locator('#personal-read_registry').check();
  await page.locator('#personal-write_registry').check();
  await page.getByRole('button', { name: 'Create personal access token' }).click();
  await page.getByRole('heading', { name: /Your new personal access token/ }).waitFor();

  const shown = await page.getByLabel('Token', { exact: true }).inputValue();
  const copy = page.getByRole('button', { name: 'Copy token' });
  check(await copy.isVisible(), 'the copy button is shown when JavaScript runs');
  await copy.click();
  await page.getByRole('button', { name: 'Copied' }).waitFor();
  const copied = await page.evaluate(() => navigator.clipboard.readText());
  check(copied === shown && shown.length > 20, `clipboard ${copied.length} chars, field ${shown.length}`);
  const login = await page.textContent('#docker-login');
  await page.screenshot({ path: join(artifacts, 'token-page-created.png'), fullPage: true });
  say({ step: 'created', secret: copied, login });
  await waitForTest();

  // Reloaded, the secret is gone; the token is listed, and revoked from its row.
  await page.goto(`${base}/-/profile/personal_access_tokens`);
  check((await page.locator('#new-token').count()) === 0, 'the secret is shown once');
  const row = page.getByRole('row', { name: /browser <laptop>/ });
  check((await row.textContent()).includes('read_registry, write_registry'), 'scopes in the row');
  await row.getByRole('button', { name: 'Revoke browser <laptop>' }).click();
  await page.getByText('Revoked personal access token browser <laptop>.').waitFor();
  await page.screenshot({ path: join(artifacts, 'token-page-revoked.png'), fullPage: true });
  say({ step: 'revoked' });
  await waitForTest();

  // Without JavaScript: the forms still work, the copy buttons stay hidden.
  const plain = await launch({ javaScriptEnabled: false });
  contexts.push(plain);
  const noJs = await plain.newPage();
  await noJs.goto(`${base}/-/profile/personal_access_tokens`);
  await noJs.getByLabel('Username').fill(maintainer);
  await noJs.getByLabel('Password or personal access token').fill(maintainerToken);
  await noJs.getByRole('button', { name: 'Sign in' }).click();
  await noJs.getByRole('heading', { name: 'Group mygroup', level: 2 }).waitFor();
  await noJs.screenshot({ path: join(artifacts, 'token-page-maintainer-no-js.png'), fullPage: true });
  await noJs.getByLabel('Token name').fill('no-js');
  await noJs.locator('#personal-read_registry').check();
  await noJs.getByRole('button', { name: 'Create personal access token' }).click();
  await noJs.getByRole('heading', { name: /Your new personal access token/ }).waitFor();
  check(!(await noJs.getByRole('button', { name: 'Copy token', includeHidden: true }).isVisible()), 'no copy button without JavaScript');
  check((await noJs.getByLabel('Token', { exact: true }).inputValue()).length > 20, 'the secret in its field');
  await noJs.getByRole('button', { name: 'Sign out' }).click();
  await noJs.getByRole('heading', { name: 'Sign in' }).waitFor();

  check(problems.length === 0, `browser problems: ${problems.join(' | ')}`);
  say({ step: 'done' });
} finally {
  for (const context of contexts) await context.close();
  for (const profile of profiles) rmSync(profile, { recursive: true, force: true });
}
