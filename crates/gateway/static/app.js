// The Gatehouse demo page: the real API through the gateway, as a browser
// client should use it.
//
// - The access token and the CSRF token live in variables of this script
//   only, never in web storage (which any script on the origin can read).
// - The refresh token never reaches this script: the auth service keeps it in
//   an HttpOnly cookie scoped to /api/v1/auth, and a refresh with body {}
//   uses that cookie (the response then carries no refresh_token). The page
//   refreshes that way on load (to survive a reload) and before the access
//   token expires.
// - State-changing calls send X-CSRF-Token; the browser adds the csrf_token
//   cookie, and the gateway checks that the two match and belong to the session.
// - The links the auth service mails, /reset-password#token=… and
//   /verify-email#token=…, open this page too. The token is in the fragment,
//   which the browser never sends to a server; the page reads it once and
//   removes it from the address bar (and so from the history), then posts it.
'use strict';

const API = '/api/v1';

let accessToken = null;
let csrfToken = null;
let accessExpiresAt = 0;
let refreshTimer = null;
let refreshInFlight = null;
let mfaToken = null;
let resetToken = null;

const $ = (id) => document.getElementById(id);

class ApiError extends Error {
  constructor(status, body) {
    super((body && typeof body.error === 'string') ? body.error : `Request failed (HTTP ${status})`);
    this.status = status;
    this.hint = body && typeof body.hint === 'string' ? body.hint : null;
  }
}

// One API call. A 401 on an authenticated call gets one silent refresh and
// one retry (with the same headers, so a payment keeps its Idempotency-Key).
async function api(method, path, { body, auth = true, headers = {}, retry = true } = {}) {
  const sent = { ...headers };
  if (body !== undefined) sent['Content-Type'] = 'application/json';
  if (auth && accessToken) sent.Authorization = `Bearer ${accessToken}`;
  if (auth && csrfToken && method !== 'GET') sent['X-CSRF-Token'] = csrfToken;
  const response = await fetch(API + path, {
    method,
    headers: sent,
    body: body === undefined ? undefined : JSON.stringify(body),
    credentials: 'same-origin',
    cache: 'no-store',
  });
  const text = await response.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch (_) { data = null; }
  if (response.status === 401 && auth && retry && accessToken && await refreshSession()) {
    return api(method, path, { body, auth, headers, retry: false });
  }
  if (!response.ok) throw new ApiError(response.status, data);
  return data;
}

// Takes the tokens of a login or refresh body; the refresh token, when a
// login body has it, is deliberately not kept: the cookie holds it.
function acceptTokens(data) {
  accessToken = data.access_token;
  csrfToken = data.csrf_token;
  const ttl = Number(data.expires_in) || 900;
  accessExpiresAt = Date.now() + ttl * 1000;
  clearTimeout(refreshTimer);
  // Well before expiry: at 80% of the lifetime, and at least 30 s early.
  const lead = Math.max(5, Math.min(ttl - 30, ttl * 0.8));
  refreshTimer = setTimeout(() => refreshOrSignOut(), lead * 1000);
}

function forgetTokens() {
  accessToken = null;
  csrfToken = null;
  accessExpiresAt = 0;
  clearTimeout(refreshTimer);
  refreshTimer = null;
}

// A refresh with the cookie; concurrent callers share one request (the
// second would present a token the first has just rotated).
function refreshSession() {
  if (!refreshInFlight) {
    refreshInFlight = (async () => {
      try {
        acceptTokens(await api('POST', '/auth/refresh', { body: {}, auth: false }));
        return true;
      } catch (_) {
        return false;
      } finally {
        refreshInFlight = null;
      }
    })();
  }
  return refreshInFlight;
}

async function refreshOrSignOut() {
  if (!(await refreshSession())) {
    forgetTokens();
    showSignedOut('Your session has ended. Please sign in again.');
  }
}

// A timer in a background tab may fire late: check when the tab returns.
document.addEventListener('visibilitychange', () => {
  if (document.visibilityState === 'visible' && accessToken && Date.now() > accessExpiresAt - 30000) {
    refreshOrSignOut();
  }
});

// --- rendering ---------------------------------------------------------------

function setStatus(text) { $('status').textContent = text || ''; }

function showError(error) {
  const box = $('error');
  if (!error) { box.hidden = true; box.textContent = ''; return; }
  box.textContent = error.hint ? `${error.message} — ${error.hint}` : error.message;
  box.hidden = false;
}

function when(value) {
  if (value === null || value === undefined) return '';
  const date = typeof value === 'number' ? new Date(value * 1000) : new Date(value);
  return Number.isNaN(date.getTime()) ? String(value) : date.toLocaleString();
}

function element(tag, text, className) {
  const node = document.createElement(tag);
  if (text !== undefined) node.textContent = text;
  if (className) node.className = className;
  return node;
}

function showSignedOut(message) {
  $('signed-in').hidden = true;
  $('link-view').hidden = true;
  $('signed-out').hidden = false;
  $('sign-out').hidden = true;
  $('mfa-form').hidden = true;
  $('forgot-form').hidden = true;
  $('sign-in-form').hidden = false;
  $('whoami').textContent = '';
  setStatus(message || 'Not signed in.');
}

async function showSignedIn() {
  $('signed-out').hidden = true;
  $('link-view').hidden = true;
  $('signed-in').hidden = false;
  $('sign-out').hidden = false;
  setStatus('Signed in.');
  await Promise.all([loadProfile(), loadVerification(), loadSessions(), loadPayments(), loadNotifications()]);
}

// The profile lives in the user service; whether the address is verified,
// in the auth service.
async function loadVerification() {
  const { user } = await api('GET', '/auth/me');
  $('verify-notice').hidden = user.email_verified;
}

// The same 202 answer whatever the account: a new link (which replaces the
// previous one) goes out only to an account that is not verified yet.
async function resendVerification(email) {
  const { message } = await api('POST', '/auth/email/resend', { body: { email }, auth: false });
  setStatus(`${message}.`);
}

function renderProfile(user) {
  $('whoami').textContent = user.email;
  $('profile-email').textContent = user.email;
  $('profile-name').textContent = user.name;
  $('profile-bio').textContent = user.bio;
  $('profile-name-input').value = user.name;
  $('profile-bio-input').value = user.bio;
}

async function loadProfile() {
  const { user } = await api('GET', '/users/profile');
  renderProfile(user);
}

async function loadSessions() {
  const { sessions } = await api('GET', '/auth/sessions');
  const list = $('sessions-list');
  list.replaceChildren(...sessions.map((s) => {
    const item = element('li', undefined, s.current ? 'current' : '');
    item.dataset.sessionId = s.id;
    item.append(element('span', `${s.current ? 'This browser' : 'Other session'}: ${s.user_agent || 'unknown client'}`));
    item.append(element('div', `from ${s.ip || 'unknown address'}, signed in ${when(s.created_at)}, last used ${when(s.last_used_at)}`, 'meta'));
    return item;
  }));
  $('sign-out-others').disabled = !sessions.some((s) => !s.current);
}

async function loadPayments() {
  const { payments } = await api('GET', '/payments?limit=20');
  $('payments-list').replaceChildren(...payments.map((p) => {
    const row = element('tr');
    row.append(
      element('td', when(p.created_at)),
      element('td', `${(p.amount / 100).toFixed(2)} ${p.currency}`),
      element('td', p.description),
      element('td', p.decline_reason ? `${p.status} (${p.decline_reason})` : p.status, p.status === 'declined' ? 'declined' : ''),
    );
    return row;
  }));
}

async function loadNotifications() {
  const { notifications, unread_count: unread } = await api('GET', '/notifications?limit=20');
  $('unread-count').textContent = unread ? String(unread) : '';
  $('notifications-list').replaceChildren(...notifications.map((n) => {
    const item = element('li', undefined, n.read ? '' : 'unread');
    item.append(element('span', n.title));
    const details = [n.body, n.ip && `from ${n.ip}`, when(n.created_at)].filter(Boolean).join(' · ');
    item.append(element('div', details, 'meta'));
    return item;
  }));
}

// --- actions -----------------------------------------------------------------

// Runs a form's or button's action with the control disabled and errors shown.
function action(control, run) {
  return async (event) => {
    if (event) event.preventDefault();
    const buttons = control.tagName === 'FORM' ? [...control.querySelectorAll('button')] : [control];
    buttons.forEach((b) => { b.disabled = true; });
    showError(null);
    try {
      await run();
    } catch (error) {
      showError(error instanceof ApiError ? error : new ApiError(0, { error: String(error.message || error) }));
    } finally {
      buttons.forEach((b) => { b.disabled = false; });
    }
  };
}

async function completeSignIn(data) {
  if (data.mfa_required) {
    mfaToken = data.mfa_token;
    $('sign-in-form').hidden = true;
    $('mfa-form').hidden = false;
    $('mfa-code').focus();
    setStatus('Two-factor sign-in: enter your code.');
    return;
  }
  mfaToken = null;
  acceptTokens(data);
  await showSignedIn();
}

async function signIn(email, password) {
  await completeSignIn(await api('POST', '/auth/login', { body: { email, password }, auth: false }));
}

$('sign-in-form').addEventListener('submit', action($('sign-in-form'), async () => {
  $('sign-in-resend').hidden = true;
  try {
    await signIn($('sign-in-email').value, $('sign-in-password').value);
  } catch (error) {
    // With REQUIRE_EMAIL_VERIFICATION, an unverified account cannot sign
    // in: offer the way out (the link may have expired or gone astray).
    $('sign-in-resend').hidden = !(error instanceof ApiError && error.status === 403 && error.message === 'Email address not verified');
    throw error;
  }
  $('sign-in-password').value = '';
}));

$('sign-in-resend').addEventListener('click', action($('sign-in-resend'), async () => {
  await resendVerification($('sign-in-email').value);
  $('sign-in-resend').hidden = true;
}));

$('resend-verification').addEventListener('click', action($('resend-verification'), async () => {
  await resendVerification($('profile-email').textContent);
}));

$('forgot-show').addEventListener('click', () => {
  showError(null);
  $('forgot-email').value = $('sign-in-email').value;
  $('sign-in-form').hidden = true;
  $('forgot-form').hidden = false;
  $('forgot-email').focus();
});

$('forgot-cancel').addEventListener('click', () => {
  showError(null);
  $('forgot-form').hidden = true;
  $('sign-in-form').hidden = false;
});

// The answer is the same whether or not the account exists (202).
$('forgot-form').addEventListener('submit', action($('forgot-form'), async () => {
  const { message } = await api('POST', '/auth/password/forgot', { body: { email: $('forgot-email').value }, auth: false });
  $('sign-in-email').value = $('forgot-email').value;
  $('forgot-form').hidden = true;
  $('sign-in-form').hidden = false;
  setStatus(`${message}. Open the link in that mail to choose a new password.`);
}));

$('mfa-form').addEventListener('submit', action($('mfa-form'), async () => {
  const data = await api('POST', '/auth/mfa/verify', {
    body: { mfa_token: mfaToken, code: $('mfa-code').value.trim() },
    auth: false,
  });
  $('mfa-code').value = '';
  await completeSignIn(data);
}));

$('sign-up-form').addEventListener('submit', action($('sign-up-form'), async () => {
  const email = $('sign-up-email').value;
  const password = $('sign-up-password').value;
  await api('POST', '/auth/register', { body: { email, password, name: $('sign-up-name').value }, auth: false });
  $('sign-up-password').value = '';
  await signIn(email, password);
}));

$('profile-form').addEventListener('submit', action($('profile-form'), async () => {
  const body = { name: $('profile-name-input').value, bio: $('profile-bio-input').value };
  const { updated } = await api('PUT', '/users/profile', { body });
  renderProfile({ email: $('profile-email').textContent, ...updated });
  setStatus('Profile saved.');
}));

$('sign-out-others').addEventListener('click', action($('sign-out-others'), async () => {
  const { sessions } = await api('GET', '/auth/sessions');
  const others = sessions.filter((s) => !s.current);
  for (const s of others) {
    await api('DELETE', `/auth/sessions/${encodeURIComponent(s.id)}`);
  }
  await loadSessions();
  setStatus(`Signed out ${others.length} other session${others.length === 1 ? '' : 's'}.`);
}));

// Random hex; crypto.randomUUID needs a secure context, this does not.
function idempotencyKey() {
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  return Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('');
}

$('payment-form').addEventListener('submit', action($('payment-form'), async () => {
  const body = {
    amount: Number($('payment-amount').value),
    currency: $('payment-currency').value.trim(),
    description: $('payment-description').value,
  };
  const { payment } = await api('POST', '/payments', { body, headers: { 'Idempotency-Key': idempotencyKey() } });
  await loadPayments();
  setStatus(`Payment ${payment.status}.`);
}));

$('read-all').addEventListener('click', action($('read-all'), async () => {
  await api('POST', '/notifications/read-all');
  await loadNotifications();
}));

$('sign-out').addEventListener('click', action($('sign-out'), async () => {
  try {
    await api('POST', '/auth/logout', { body: {}, auth: false });
  } finally {
    forgetTokens();
    showSignedOut('Signed out.');
  }
}));

// --- the links mailed by the auth service ----------------------------------

// The link's token, read once from the fragment, which then leaves the
// address bar and the history entry (the path stays, without a token).
function takeLinkToken() {
  const token = new URLSearchParams(location.hash.slice(1)).get('token');
  if (location.hash) history.replaceState(null, '', location.pathname);
  return token;
}

function showLinkView(card) {
  $('signed-out').hidden = true;
  $('signed-in').hidden = true;
  $('sign-out').hidden = true;
  $('whoami').textContent = '';
  $('reset-form').hidden = card !== 'reset-form';
  $('verify-card').hidden = card !== 'verify-card';
  $('link-view').hidden = false;
}

function incompleteLink() {
  return new ApiError(0, { error: 'This link is incomplete', hint: 'open the whole link from the mail again' });
}

function startPasswordReset(token) {
  if (!token) {
    showSignedOut();
    showError(incompleteLink());
    return;
  }
  resetToken = token;
  showLinkView('reset-form');
  setStatus('Choose a new password.');
  $('reset-new-password').focus();
}

$('reset-form').addEventListener('submit', action($('reset-form'), async () => {
  const body = { token: resetToken, password: $('reset-new-password').value };
  await api('POST', '/auth/password/reset', { body, auth: false });
  resetToken = null;
  $('reset-new-password').value = '';
  forgetTokens();
  history.replaceState(null, '', '/');
  showSignedOut('Your password was changed and every session of the account was signed out. Sign in with the new password.');
}));

async function verifyEmail(token) {
  showLinkView('verify-card');
  if (!token) {
    $('verify-result').textContent = 'This verification link is incomplete.';
    setStatus('');
    showError(incompleteLink());
    return;
  }
  setStatus('Verifying your email address…');
  try {
    await api('POST', '/auth/email/verify', { body: { token }, auth: false });
    $('verify-result').textContent = 'Your email address is verified.';
    setStatus('Email verified.');
  } catch (error) {
    $('verify-result').textContent = 'Your email address was not verified: the link works once, and expires.';
    setStatus('');
    showError(error instanceof ApiError ? error : new ApiError(0, { error: String(error.message || error) }));
  }
  history.replaceState(null, '', '/');
}

// On load: a mailed link's page, or else a silent refresh with the cookie,
// if the browser has one.
(async () => {
  if (location.pathname === '/reset-password') {
    startPasswordReset(takeLinkToken());
    return;
  }
  if (location.pathname === '/verify-email') {
    await verifyEmail(takeLinkToken());
    return;
  }
  if (await refreshSession()) {
    try {
      await showSignedIn();
    } catch (error) {
      showError(error instanceof ApiError ? error : new ApiError(0, { error: String(error) }));
    }
  } else {
    showSignedOut();
  }
})();
