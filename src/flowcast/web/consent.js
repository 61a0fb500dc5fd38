// Consent for QoE analytics (LGPD Art. 5 XII, 8, 9): shown before anything identifying is
// sent; states the purpose, what is collected and for how long; refusing is as easy as
// accepting; the choice can be withdrawn at any time from the same place.
//
// Decision sources, in order: ?consent=yes|no (tests, kiosks), the stored choice
// (localStorage 'flowcast.consent'), else the banner. Language: ?lang=, else
// navigator.language (pt* -> Brazilian Portuguese, anything else -> English).

export const RETENTION_DAYS = 90;
// Bump when TEXT changes: the server keeps (version, SHA-256 of the text shown) as the proof.
export const BANNER_VERSION = '2026-11-25';
export const PURPOSES = ['qoe_analytics'];
const STORAGE_KEY = 'flowcast.consent';

export const TEXT = {
  en: {
    title: 'Help us improve playback quality',
    body: 'With your permission we record how this video plays for you: start-up time, '
      + 'pauses to buffer, picture quality changes, delay behind live, dropped frames and '
      + 'player errors, linked by a random session id (never your name or e-mail). We use '
      + `it only to measure and fix streaming quality, and delete it after ${RETENTION_DAYS} days. `
      + 'Without your permission we only count events, with no identifier.',
    accept: 'Allow quality analytics',
    decline: 'No, thanks',
    withdraw: 'Withdraw analytics consent',
    withdrawn: 'Consent withdrawn: the data of this session was deleted.',
  },
  'pt-BR': {
    title: 'Ajude-nos a melhorar a qualidade da reprodução',
    body: 'Com a sua permissão registramos como este vídeo é reproduzido para você: tempo de '
      + 'início, pausas para carregar, mudanças de qualidade de imagem, atraso em relação ao '
      + 'ao vivo, quadros perdidos e erros do player, ligados por um identificador de sessão '
      + 'aleatório (nunca o seu nome ou e-mail). Usamos esses dados apenas para medir e corrigir '
      + `a qualidade do streaming e os apagamos após ${RETENTION_DAYS} dias. `
      + 'Sem a sua permissão apenas contamos eventos, sem nenhum identificador.',
    accept: 'Permitir análise de qualidade',
    decline: 'Não, obrigado',
    withdraw: 'Revogar consentimento de análise',
    withdrawn: 'Consentimento revogado: os dados desta sessão foram apagados.',
  },
};

export function pickLang(params, navLang) {
  const wanted = (params.get('lang') || navLang || 'en').toLowerCase();
  return wanted.startsWith('pt') ? 'pt-BR' : 'en';
}

function stored() {
  try {
    const raw = localStorage.getItem(STORAGE_KEY);
    if (!raw) return null;
    const doc = JSON.parse(raw);
    // A choice is asked again once the retention period has passed.
    if (Date.now() - doc.at > RETENTION_DAYS * 86400000) return null;
    return doc.choice === 'yes' || doc.choice === 'no' ? doc.choice : null;
  } catch (e) {
    return null;
  }
}

function remember(choice) {
  try {
    localStorage.setItem(STORAGE_KEY, JSON.stringify({ choice, at: Date.now() }));
  } catch (e) { /* private mode: ask again next time */ }
}

export function initialDecision(params) {
  const q = (params.get('consent') || '').toLowerCase();
  if (q === 'yes' || q === 'no') return q;
  return stored();
}

// Shows the banner; calls onDecide(true|false) once. Returns the banner element.
export function showBanner(lang, onDecide) {
  const t = TEXT[lang] || TEXT.en;
  const box = document.createElement('section');
  box.id = 'consent';
  box.setAttribute('role', 'dialog');
  box.setAttribute('aria-labelledby', 'consent-title');
  box.lang = lang;
  box.style.cssText = 'position:fixed;left:1rem;right:1rem;bottom:1rem;z-index:10;max-width:42rem;margin:auto;'
    + 'padding:1rem;background:#fff;color:#111;border:1px solid #888;border-radius:6px;font:14px/1.4 sans-serif';
  const h = document.createElement('h2');
  h.id = 'consent-title';
  h.textContent = t.title;
  const p = document.createElement('p');
  p.textContent = t.body;
  const yes = document.createElement('button');
  yes.id = 'consent-accept';
  yes.textContent = t.accept;
  const no = document.createElement('button');
  no.id = 'consent-decline';
  no.textContent = t.decline;
  const decide = (choice) => {
    remember(choice ? 'yes' : 'no');
    box.remove();
    onDecide(choice);
  };
  yes.addEventListener('click', () => decide(true));
  no.addEventListener('click', () => decide(false));
  box.append(h, p, yes, no);
  document.body.prepend(box);
  return box;
}

// A persistent "withdraw" control once consent is given (Art. 8 par. 5: free and easy).
export function showWithdraw(lang, onWithdraw) {
  const t = TEXT[lang] || TEXT.en;
  const btn = document.createElement('button');
  btn.id = 'consent-withdraw';
  btn.textContent = t.withdraw;
  btn.addEventListener('click', async () => {
    remember('no');
    await onWithdraw();
    const note = document.createElement('p');
    note.id = 'consent-withdrawn';
    note.textContent = t.withdrawn;
    btn.replaceWith(note);
  });
  document.body.append(btn);
  return btn;
}

// What a consent proof records of the banner the viewer saw (LGPD Art. 8 par. 2: the
// controller must be able to prove consent). SubtleCrypto exists in secure contexts only
// (HTTPS, or localhost): elsewhere there is no hash and no proof is sent.
export async function bannerFacts(lang) {
  const t = TEXT[lang] || TEXT.en;
  if (!(window.crypto && crypto.subtle)) return null;
  const text = [t.title, t.body, t.accept, t.decline].join('\n');
  const digest = await crypto.subtle.digest('SHA-256', new TextEncoder().encode(text));
  const hex = [...new Uint8Array(digest)].map((b) => b.toString(16).padStart(2, '0')).join('');
  return { banner_version: BANNER_VERSION, banner_hash: hex, language: TEXT[lang] ? lang : 'en', purposes: PURPOSES };
}
