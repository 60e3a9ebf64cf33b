// Calls to taskflow's API, with the bearer token of this tab when one is needed.
//
// A 401 opens the token form; the token is kept in sessionStorage (this tab only, never
// in a URL or a cookie) and the call is made again with `Authorization: Bearer`.

import { byId } from "./dom.js";

const TOKEN_KEY = "taskflow.token";
let asking = null;

/** The token of this tab, or null. */
export function token() {
  return sessionStorage.getItem(TOKEN_KEY);
}

/** Headers with the token when there is one. */
export function authHeaders(extra = {}) {
  const headers = { ...extra };
  const current = token();
  if (current) headers.Authorization = `Bearer ${current}`;
  return headers;
}

/** Ask for a token (once, however many calls got a 401), resolve when one is given. */
export function askForToken(rejected) {
  if (asking) return asking;
  const dialog = byId("token-dialog");
  const input = byId("token-input");
  byId("token-text").textContent = rejected
    ? "That token was not accepted. Enter another one; it is kept for this tab only."
    : "This taskflow asks for an API token. It is kept for this tab only.";
  input.value = "";
  asking = new Promise((resolve) => {
    dialog.addEventListener(
      "close",
      () => {
        const value = input.value.trim();
        if (value) sessionStorage.setItem(TOKEN_KEY, value);
        input.value = "";
        asking = null;
        resolve();
      },
      { once: true },
    );
  });
  dialog.showModal();
  input.focus();
  return asking;
}

/** An error answered by the API, with the contract's error body. */
export class ApiError extends Error {
  constructor(status, body) {
    super(body?.error?.message || `HTTP ${status}`);
    this.status = status;
    this.code = body?.error?.code || "http_error";
    this.details = body?.error?.details || {};
  }
}

/** Fetch `path` as JSON; a 401 asks for a token and tries again. */
export async function api(path, { method = "GET", body } = {}) {
  for (;;) {
    const sent = token();
    const init = { method, headers: authHeaders({ Accept: "application/json" }) };
    if (body !== undefined) {
      init.headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    const response = await fetch(path, init);
    if (response.status === 401) {
      await askForToken(sent !== null);
      continue;
    }
    const parsed = await parseJson(response);
    if (!response.ok) throw new ApiError(response.status, parsed);
    return parsed;
  }
}

async function parseJson(response) {
  const text = await response.text();
  try {
    return text ? JSON.parse(text) : null;
  } catch {
    return null;
  }
}
