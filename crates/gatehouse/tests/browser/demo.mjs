// Drives the gateway's demo page in headless Chromium (Debian's, through
// playwright-core), as crates/gatehouse/tests/browser.rs runs it:
//
//   GATEWAY_URL=http://127.0.0.1:PORT ARTIFACTS_DIR=… MAIL_DIR=…/data/mail \
//   CHROMIUM=/usr/bin/chromium NODE_PATH=…/node_modules node demo.mjs
//
// sign up → profile edit → payment → reload (still signed in, through the
// HttpOnly refresh cookie alone) → sign out other sessions → a page on
// another origin tries state-changing requests with the victim's cookies
// and fails → sign out → the verification link of the sign-up mail →
// "Forgot password?" and the reset link of that mail (both read from the
// development mailer's .eml files in MAIL_DIR) → sign in with the new
// password (the old one fails) → sign in again with the two-factor step. A
// screenshot of each step goes to ARTIFACTS_DIR. Any failed check throws:
// the process exits non-zero with the reason.
import { createRequire } from 'node:module';
import { createHmac } from 'node:crypto';
import { createServer } from 'node:http';
import { mkdtempSync, mkdirSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import assert from 'node:assert/strict';

// NODE_PATH is honoured by require, not by import.
const require = createRequire(import.meta.url);
const { chromium } = require('playwright-core');

const GW = process.env.GATEWAY_URL;
const ARTIFACTS = process.env.ARTIFACTS_DIR;
const MAIL_DIR = process.env.MAIL_DIR;
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
assert.ok(GW && ARTIFACTS && MAIL_DIR, 'GATEWAY_URL, ARTIFACTS_DIR and MAIL_DIR must be set');
mkdirSync(ARTIFACTS, { recursive: true });

const email = `browser-${Date.now()}-${Math.random().toString(16).slice(2)}@example.com`;
const password = 'correct horse battery staple';
const newPassword = 'a brand new passphrase';
const TIMEOUT = 15000;

// --- the API from Node, for what a second device would do -------------------

async function apiCall(method, path, { body, token } = {}) {
  const headers = {};
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  if (token) headers.Authorization = `Bearer ${token}`;
  const r = await fetch(GW + '/api/v1' + path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  const text = await r.text();
  return { status: r.status, body: text ? JSON.parse(text) : null };
}

// RFC 6238 (SHA-1, 6 digits, 30 s) from a base32 secret.
function totp(secretBase32, at = Date.now()) {
  const alphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZ234567';
  let bits = '';
  for (const c of secretBase32.replace(/=+$/, '').toUpperCase()) {
    bits += alphabet.indexOf(c).toString(2).padStart(5, '0');
  }
  const key = Buffer.from(bits.match(/.{8}/g).map((b) => parseInt(b, 2)));
  const counter = Buffer.alloc(8);
  counter.writeBigUInt64BE(BigInt(Math.floor(at / 30000)));
  const mac = createHmac('sha1', key).update(counter).digest();
  const offset = mac[mac.length - 1] & 0x0f;
  const value = (mac.readUInt32BE(offset) & 0x7fffffff) % 1_000_000;
  return String(value).padStart(6, '0');
}

// The links (`<PUBLIC_URL>/<path>#token=…`) of the `count` mails to `email`
// carrying one, oldest first: the development mailer writes each mail as
// MAIL_DIR/<time>-<id>.eml, and the auth service's background queue sends it
// shortly after the request, so this polls. Mails are ordered by Message-ID
// (`<mail id@…>`, a UUIDv7, so in the order they were queued): neither the
// file names nor the order of sending need follow it.
async function mailedLinks(path, count) {
  const link = new RegExp(`^(\\S+/${path}#token=[A-Za-z0-9_-]+)\\r?$`, 'm');
  const messageId = /^Message-ID: (\S+)\r?$/m;
  const deadline = Date.now() + TIMEOUT;
  for (;;) {
    let names = [];
    try {
      names = readdirSync(MAIL_DIR).filter((name) => name.endsWith('.eml'));
    } catch (e) {
      if (e.code !== 'ENOENT') throw e;
    }
    const found = names
      .map((name) => readFileSync(join(MAIL_DIR, name), 'utf8'))
      .filter((mail) => mail.includes(`To: ${email}`) && link.test(mail))
      .map((mail) => [mail.match(messageId)[1], mail.match(link)[1]])
      .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
    if (found.length >= count) {
      assert.equal(found.length, count, `${count} ${path} mail(s)`);
      return found.map(([, url]) => url);
    }
    assert.ok(Date.now() < deadline, `no ${count} ${path} mail(s) to ${email} in ${MAIL_DIR}`);
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

async function mailedLink(path) {
  return (await mailedLinks(path, 1))[0];
}

// --- the attacker: another origin on the same host (so same-site, and the
// SameSite=Strict cookies do travel with its requests) ------------------------

const attackerPage = `<!doctype html><meta charset="utf-8"><title>Win a prize</title>
<h1>Totally harmless page</h1><ol id="log"></ol>
<iframe name="sink" style="display:none"></iframe>
<form id="f1" method="POST" action="${GW}/api/v1/auth/logout" enctype="text/plain" target="sink"><input name='{"x":"' value='"}'></form>
<form id="f2" method="POST" action="${GW}/api/v1/auth/logout-all" target="sink"></form>
<script>
const log = (t) => { const li = document.createElement('li'); li.textContent = t; document.getElementById('log').append(li); };
async function attempt(name, url, init) {
  try {
    const r = await fetch(url, init);
    log(name + ': response ' + (r.type === 'opaque' ? 'opaque' : r.status));
    return r.type === 'opaque' ? 'opaque' : 'read:' + r.status;
  } catch (e) {
    log(name + ': blocked (' + e.name + ')');
    return 'blocked';
  }
}
function submit(id) {
  return new Promise((resolve) => {
    const frame = document.querySelector('iframe[name=sink]');
    frame.addEventListener('load', () => resolve('submitted'), { once: true });
    document.getElementById(id).submit();
  });
}
(async () => {
  const gw = ${JSON.stringify(GW)} + '/api/v1/auth';
  const json = { method: 'POST', credentials: 'include', headers: { 'Content-Type': 'application/json' }, body: '{}' };
  const results = {
    corsRefresh: await attempt('refresh (cors, json)', gw + '/refresh', json),
    corsLogout: await attempt('logout (cors, json)', gw + '/logout', json),
    corsLogoutAll: await attempt('logout-all (cors, json)', gw + '/logout-all', json),
    noCorsLogout: await attempt('logout (no-cors)', gw + '/logout', { method: 'POST', mode: 'no-cors', credentials: 'include', body: '{}' }),
    formLogout: await submit('f1'),
    formLogoutAll: await submit('f2'),
  };
  log('done');
  window.attackResults = results;
})();
</script>`;

const attacker = createServer((req, res) => {
  res.writeHead(200, { 'Content-Type': 'text/html; charset=utf-8' });
  res.end(attackerPage);
});
await new Promise((resolve) => attacker.listen(0, '127.0.0.1', resolve));
const attackerUrl = `http://127.0.0.1:${attacker.address().port}/`;

// --- the browser --------------------------------------------------------------

const profileDir = mkdtempSync(join(tmpdir(), 'gatehouse-chromium-'));
const context = await chromium.launchPersistentContext(profileDir, {
  executablePath: CHROMIUM,
  headless: true,
  args: [
    '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync',
  ],
  viewport: { width: 1200, height: 1000 },
});
const problems = [];
let step = 0;

async function shot(page, name) {
  step += 1;
  const file = join(ARTIFACTS, `${String(step).padStart(2, '0')}-${name}.png`);
  await page.screenshot({ path: file, fullPage: true });
  console.log(`step ${step}: ${name} (${file})`);
}

async function signedIn(page) {
  await page.locator('#signed-in').waitFor({ state: 'visible', timeout: TIMEOUT });
  await page.locator('#profile-email').filter({ hasText: email }).waitFor({ timeout: TIMEOUT });
}

async function sessionCount(page) {
  await page.locator('#sessions-list li').first().waitFor({ timeout: TIMEOUT });
  return page.locator('#sessions-list li').count();
}

try {
  const page = context.pages()[0] || await context.newPage();
  page.setDefaultTimeout(TIMEOUT);
  page.on('pageerror', (e) => problems.push(`page error: ${e.message}`));
  page.on('console', (m) => {
    if (m.type() === 'error' && !m.text().startsWith('Failed to load resource')) problems.push(`console: ${m.text()}`);
  });

  // 1. A first visit: no cookie, so the silent refresh fails and the forms show.
  await page.goto(GW + '/');
  await page.locator('#signed-out').waitFor({ state: 'visible' });
  await shot(page, 'signed-out');

  // 2. Sign up (then signed in at once).
  await page.fill('#sign-up-name', 'Ada');
  await page.fill('#sign-up-email', email);
  await page.fill('#sign-up-password', password);
  await page.click('#sign-up-form button[type=submit]');
  await signedIn(page);
  await shot(page, 'signed-up');

  // The sign-up mailed a verification link; the page says the address is
  // not verified yet and can mail another (which replaces the first).
  await page.locator('#verify-notice').waitFor({ state: 'visible' });
  await mailedLink('verify-email');
  await page.click('#resend-verification');
  await page.locator('#status').filter({ hasText: 'a new verification link has been sent' }).waitFor();
  await shot(page, 'verification-mailed-again');

  // Nothing a script could steal: no web storage, and both cookies HttpOnly.
  const exposed = await page.evaluate(() => ({
    storage: localStorage.length + sessionStorage.length,
    cookies: document.cookie,
  }));
  assert.deepEqual(exposed, { storage: 0, cookies: '' }, 'tokens visible to scripts');

  // 3. Edit the profile (PUT with the CSRF header and cookie).
  await page.fill('#profile-name-input', 'Ada Lovelace');
  await page.fill('#profile-bio-input', 'Analytical engines.');
  await page.click('#profile-form button[type=submit]');
  await page.locator('#profile-name').filter({ hasText: 'Ada Lovelace' }).waitFor();
  await shot(page, 'profile-edited');

  // 4. A test payment (with an Idempotency-Key) appears in the list.
  await page.fill('#payment-amount', '1999');
  await page.click('#payment-form button[type=submit]');
  await page.locator('#payments-list tr').filter({ hasText: '19.99 EUR' }).waitFor();
  await shot(page, 'payment');

  // 5. A second device signs in; then the page reloads: the access token was
  // in memory only, so only the refresh cookie can sign it back in.
  const other = await apiCall('POST', '/auth/login', { body: { email, password } });
  assert.equal(other.status, 200, JSON.stringify(other.body));
  await page.reload();
  await signedIn(page);
  await page.locator('#profile-name').filter({ hasText: 'Ada Lovelace' }).waitFor();
  await page.locator('#profile-bio').filter({ hasText: 'Analytical engines.' }).waitFor();
  await page.locator('#notifications-list li').filter({ hasText: 'New sign-in' }).first().waitFor();
  assert.equal(await sessionCount(page), 2, 'this browser and the second device');
  await shot(page, 'reloaded-still-signed-in');

  // 6. Sign out the other session: the second device's refresh token dies.
  await page.click('#sign-out-others');
  await page.locator('#status').filter({ hasText: 'Signed out 1 other session' }).waitFor();
  assert.equal(await sessionCount(page), 1);
  const dead = await apiCall('POST', '/auth/refresh', { body: { refresh_token: other.body.refresh_token } });
  assert.equal(dead.status, 401, 'the other session was revoked');
  await page.click('#read-all');
  await page.waitForFunction(() => document.getElementById('unread-count').textContent === '');
  await shot(page, 'other-sessions-signed-out');

  // 7. The attacker's page, in the same browser (the victim's cookies).
  const evil = await context.newPage();
  evil.setDefaultTimeout(TIMEOUT);
  await evil.goto(attackerUrl);
  await evil.waitForFunction(() => window.attackResults !== undefined);
  const results = await evil.evaluate(() => window.attackResults);
  console.log('attack results:', JSON.stringify(results));
  for (const name of ['corsRefresh', 'corsLogout', 'corsLogoutAll']) {
    assert.equal(results[name], 'blocked', `${name}: the attacker must not get a readable response`);
  }
  await shot(evil, 'attacker-page');
  await evil.close();

  // …and the victim's session survived it all: a reload still signs in.
  await page.reload();
  await signedIn(page);
  assert.equal(await sessionCount(page), 1, 'the session is still there');
  await shot(page, 'after-attack-still-signed-in');

  // 8. Sign out: the cookies are cleared, so a reload stays signed out.
  await page.click('#sign-out');
  await page.locator('#signed-out').waitFor({ state: 'visible' });
  await page.reload();
  await page.locator('#signed-out').waitFor({ state: 'visible' });
  await page.locator('#status').filter({ hasText: 'Not signed in' }).waitFor();
  await shot(page, 'signed-out-after-reload');

  // 9. The verification link of the sign-up mail: the page posts the token
  // from the fragment itself, and the token leaves the address bar.
  const device = await apiCall('POST', '/auth/login', { body: { email, password } });
  assert.equal(device.status, 200, JSON.stringify(device.body));
  const verified = async () =>
    (await apiCall('GET', '/auth/me', { token: device.body.access_token })).body.user.email_verified;
  assert.equal(await verified(), false, 'not verified before the link is opened');
  const [replacedLink, verifyLink] = await mailedLinks('verify-email', 2);
  assert.ok(verifyLink.startsWith(`${GW}/verify-email#token=`), verifyLink);
  // The sign-up's own link was replaced by the one mailed again.
  await page.goto(replacedLink);
  await page.locator('#verify-result').filter({ hasText: 'was not verified' }).waitFor();
  assert.equal(await verified(), false, 'a replaced link verifies nothing');
  await page.goto(verifyLink);
  await page.locator('#verify-result').filter({ hasText: 'Your email address is verified.' }).waitFor();
  await page.locator('#status').filter({ hasText: 'Email verified.' }).waitFor();
  assert.equal(page.url(), `${GW}/`, 'the token left the address bar');
  assert.equal(await verified(), true, 'the account is verified');
  await shot(page, 'email-verified');

  // …and the link works once: opened again, the API's error shows.
  await page.goto(verifyLink);
  await page.locator('#error').filter({ hasText: 'Invalid or expired token' }).waitFor();
  await page.locator('#verify-result').filter({ hasText: 'was not verified' }).waitFor();
  await shot(page, 'verify-link-spent');

  // 10. "Forgot password?" on the sign-in view: the same 202 answer for any email.
  await page.goto(GW + '/');
  await page.locator('#signed-out').waitFor({ state: 'visible' });
  await page.click('#forgot-show');
  await page.fill('#forgot-email', email);
  await page.click('#forgot-form button[type=submit]');
  await page.locator('#status').filter({ hasText: 'If an account exists for this email' }).waitFor();
  await page.locator('#sign-in-form').waitFor({ state: 'visible' });
  await shot(page, 'forgot-password');

  // 11. The reset link of that mail: the "choose a new password" form. A
  // password the API refuses shows its error, and the link still works.
  const resetLink = await mailedLink('reset-password');
  assert.ok(resetLink.startsWith(`${GW}/reset-password#token=`), resetLink);
  await page.goto(resetLink);
  await page.locator('#reset-form').waitFor({ state: 'visible' });
  assert.equal(page.url(), `${GW}/reset-password`, 'the token left the address bar');
  await page.fill('#reset-new-password', 'password');
  await page.click('#reset-form button[type=submit]');
  await page.locator('#error').filter({ hasText: 'password is too common' }).waitFor();
  await shot(page, 'reset-form');
  await page.fill('#reset-new-password', newPassword);
  await page.click('#reset-form button[type=submit]');
  await page.locator('#signed-out').waitFor({ state: 'visible' });
  await page.locator('#status').filter({ hasText: 'Sign in with the new password' }).waitFor();
  assert.equal(page.url(), `${GW}/`);
  await shot(page, 'password-reset');
  // Every session of the account ended, the second device's too.
  const ended = await apiCall('POST', '/auth/refresh', { body: { refresh_token: device.body.refresh_token } });
  assert.equal(ended.status, 401, 'the reset revoked every session');

  // …and the reset link works once.
  await page.goto(resetLink);
  await page.fill('#reset-new-password', 'yet another passphrase');
  await page.click('#reset-form button[type=submit]');
  await page.locator('#error').filter({ hasText: 'Invalid or expired token' }).waitFor();
  await shot(page, 'reset-link-spent');

  // 12. The old password fails, the new one signs in.
  await page.goto(GW + '/');
  await page.locator('#signed-out').waitFor({ state: 'visible' });
  await page.fill('#sign-in-email', email);
  await page.fill('#sign-in-password', password);
  await page.click('#sign-in-form button[type=submit]');
  await page.locator('#error').filter({ hasText: 'Invalid credentials' }).waitFor();
  await page.fill('#sign-in-password', newPassword);
  await page.click('#sign-in-form button[type=submit]');
  await signedIn(page);
  await shot(page, 'signed-in-with-new-password');
  await page.click('#sign-out');
  await page.locator('#signed-out').waitFor({ state: 'visible' });

  // 13. Two-factor sign-in: turned on from the second device, then the page
  // asks for a code after the password (a recovery code here: each TOTP step
  // is accepted once, and confirming used the current one).
  const again = await apiCall('POST', '/auth/login', { body: { email, password: newPassword } });
  const token = again.body.access_token;
  const setup = await apiCall('POST', '/auth/mfa/totp/setup', { token });
  assert.equal(setup.status, 200, JSON.stringify(setup.body));
  const confirm = await apiCall('POST', '/auth/mfa/totp/confirm', { token, body: { code: totp(setup.body.secret) } });
  assert.equal(confirm.status, 200, JSON.stringify(confirm.body));
  await page.fill('#sign-in-email', email);
  await page.fill('#sign-in-password', newPassword);
  await page.click('#sign-in-form button[type=submit]');
  await page.locator('#mfa-form').waitFor({ state: 'visible' });
  await shot(page, 'mfa-step');
  await page.fill('#mfa-code', '000000');
  await page.click('#mfa-form button[type=submit]');
  await page.locator('#error').filter({ hasText: 'Invalid code' }).waitFor();
  await page.fill('#mfa-code', confirm.body.recovery_codes[0]);
  await page.click('#mfa-form button[type=submit]');
  await signedIn(page);
  await shot(page, 'signed-in-with-mfa');
  await page.click('#sign-out');
  await page.locator('#signed-out').waitFor({ state: 'visible' });

  assert.deepEqual(problems, [], 'errors on the page');
  console.log(`browser demo: ${step} steps passed`);
} finally {
  await context.close();
  attacker.close();
  rmSync(profileDir, { recursive: true, force: true });
}
