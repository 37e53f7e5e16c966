// The server's public API, as the dashboard uses it: /auth for a token, then POSTs with
// the token in the m1-auth-token header. The token lives in sessionStorage (this tab only,
// gone when it closes). URLs are relative to /ui/, so a server behind a path prefix works.

const TOKEN_KEY = "m1lite.ui.token";
const USER_KEY = "m1lite.ui.user";

export class ApiError extends Error {
  constructor(status, message, code) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

// Raised (after the token is dropped) when the server says the token is no good: the app
// asks for the password again and then carries on where it was.
export class AuthExpired extends ApiError {}

export function session() {
  const token = sessionStorage.getItem(TOKEN_KEY);
  return token ? { token, user: sessionStorage.getItem(USER_KEY) || "" } : null;
}

export function forget() {
  sessionStorage.removeItem(TOKEN_KEY);
  sessionStorage.removeItem(USER_KEY);
}

export function endpoint(path) {
  return new URL(`../${path}`, location.href).toString();
}

// Form encoding: arrays repeat the parameter (fq), objects become JSON text (json).
export function formBody(params) {
  const body = new URLSearchParams();
  for (const [name, value] of Object.entries(params)) {
    if (value == null) continue;
    if (Array.isArray(value)) value.forEach((item) => body.append(name, String(item)));
    else if (typeof value === "object") body.append(name, JSON.stringify(value));
    else body.append(name, String(value));
  }
  return body;
}

async function errorOf(response) {
  let message = `${response.status} ${response.statusText}`;
  let code = "";
  try {
    const body = await response.json();
    if (body && typeof body.message === "string") message = body.message;
    if (body && typeof body.error === "string") code = body.error;
  } catch {
    // not JSON: keep the status line
  }
  return [message, code];
}

export async function login(username, password) {
  let response;
  try {
    response = await fetch(endpoint("auth"), {
      method: "POST",
      body: formBody({ username, password }),
    });
  } catch {
    throw new ApiError(0, "The server did not answer. Is it running?", "network");
  }
  if (!response.ok) {
    const [message, code] = await errorOf(response);
    throw new ApiError(response.status, message, code);
  }
  const token = (await response.text()).trim();
  sessionStorage.setItem(TOKEN_KEY, token);
  sessionStorage.setItem(USER_KEY, username);
  return token;
}

// One API call; resolves to the parsed JSON answer (with `elapsedMs` measured here).
export async function call(path, params) {
  const current = session();
  if (!current) throw new AuthExpired(401, "Log in to see the data.", "missing_token");
  const started = performance.now();
  let response;
  try {
    response = await fetch(endpoint(path), {
      method: "POST",
      headers: { "m1-auth-token": current.token },
      body: formBody(params),
    });
  } catch {
    throw new ApiError(0, "The server did not answer. Is it running?", "network");
  }
  if (!response.ok) {
    const [message, code] = await errorOf(response);
    if (response.status === 401) {
      forget();
      throw new AuthExpired(401, message, code);
    }
    throw new ApiError(response.status, message, code);
  }
  const text = await response.text();
  const elapsedMs = performance.now() - started;
  return { body: text ? JSON.parse(text) : null, text, elapsedMs };
}
