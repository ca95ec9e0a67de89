//! Who is calling: `Authorization: Bearer <JWT>` verified against a configured key, set up by
//! the variables of [`SETTINGS`] (the book's settings page is generated from that table).
//!
//! Exactly one key source is required in `jwt` mode. A token must carry `exp` and `sub`;
//! `nbf` is checked when present, `iat` must not be in the future, and a token may live at
//! most `AUTH_JWT_MAX_TTL_S` (from `iat`, or from now); a JWK set file is re-read
//! periodically and on an unknown `kid` ([`JwkSource`]); the algorithm must be one the key is for (an HMAC token is
//! never checked against a public key). The user is the token's `sub`, which must be a valid
//! user id ([`crate::extract::check_user_id`]: it names directories and index subjects).
//!
//! A missing or bad token is a 401 with a reason and a `WWW-Authenticate: Bearer` header,
//! before anything is read or written. The token itself never reaches a span or a log line.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation, errors::ErrorKind};
use serde::Deserialize;

/// How callers are identified.
#[derive(Clone)]
pub enum Auth {
    /// Bearer JWTs.
    Jwt(Box<JwtVerifier>),
    /// `x-user-id` trusted as sent (default `anonymous`).
    TrustHeader,
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the key material.
        match self {
            Self::Jwt(v) => write!(f, "Auth::Jwt({})", v.describe()),
            Self::TrustHeader => f.write_str("Auth::TrustHeader"),
        }
    }
}

/// Where the verification key comes from.
#[derive(Clone)]
enum Keys {
    /// One key and the algorithms it verifies.
    Single(DecodingKey, Vec<Algorithm>, &'static str),
    /// A JWK set, read again from its file (see [`JwkSource`]).
    Set(std::sync::Arc<JwkSource>),
}

/// A JWK set file, re-read every `AUTH_JWKS_REFRESH_S` in the background and when a token
/// names a key id the set does not hold (at most once per [`UNKNOWN_KID_RELOAD_GAP`], so a
/// flood of made-up ids cannot turn into a flood of reads). A file that no longer reads as a
/// valid set leaves the last good one in place, with a warning.
pub struct JwkSource {
    path: PathBuf,
    set: std::sync::RwLock<JwkSet>,
    last_load: std::sync::Mutex<std::time::Instant>,
    min_gap: std::time::Duration,
    loads: std::sync::atomic::AtomicU64,
}

/// The least time between two reloads of the JWK set caused by unknown key ids.
pub const UNKNOWN_KID_RELOAD_GAP: std::time::Duration = std::time::Duration::from_secs(10);

impl JwkSource {
    fn open(path: PathBuf) -> anyhow::Result<Self> {
        let set = load_jwks(&path)?;
        Ok(Self {
            path,
            set: std::sync::RwLock::new(set),
            last_load: std::sync::Mutex::new(std::time::Instant::now()),
            min_gap: UNKNOWN_KID_RELOAD_GAP,
            loads: std::sync::atomic::AtomicU64::new(1),
        })
    }

    /// Reads the file again; keeps the current set when it does not read as a valid one.
    pub fn reload(&self) {
        self.loads
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        *self
            .last_load
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = std::time::Instant::now();
        match load_jwks(&self.path) {
            Ok(set) => {
                *self
                    .set
                    .write()
                    .unwrap_or_else(std::sync::PoisonError::into_inner) = set;
            }
            Err(e) => {
                tracing::warn!(error = %format!("{e:#}"), "AUTH_JWKS_FILE could not be read again; keeping the keys read before");
            }
        }
    }

    /// [`JwkSource::reload`], unless the last load was less than the gap ago.
    fn reload_if_due(&self) -> bool {
        let last = *self
            .last_load
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if last.elapsed() < self.min_gap {
            return false;
        }
        self.reload();
        true
    }

    fn snapshot(&self) -> JwkSet {
        self.set
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// How many times the file was read (for tests).
    pub fn loads(&self) -> u64 {
        self.loads.load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// Reads and checks a JWK set file: public keys only, every one usable.
fn load_jwks(path: &Path) -> anyhow::Result<JwkSet> {
    let set: JwkSet = serde_json::from_str(&read(&path.to_path_buf(), "AUTH_JWKS_FILE")?)
        .with_context(|| format!("AUTH_JWKS_FILE {}: not a JWK set", path.display()))?;
    if set.keys.is_empty() {
        bail!("AUTH_JWKS_FILE {}: the set has no keys", path.display());
    }
    for k in &set.keys {
        // A shared secret in a key *set* (often copied from a public jwks_uri) would let
        // anyone who can read the set sign tokens.
        if matches!(
            k.algorithm,
            jsonwebtoken::jwk::AlgorithmParameters::OctetKey(_)
        ) {
            bail!(
                "AUTH_JWKS_FILE {}: key {} is a symmetric (oct) key; a JWK set holds public keys only (use AUTH_JWT_SECRET for HS256)",
                path.display(),
                k.common.key_id.as_deref().unwrap_or("(no kid)")
            );
        }
        DecodingKey::from_jwk(k).with_context(|| {
            format!(
                "AUTH_JWKS_FILE {}: key {}: unusable",
                path.display(),
                k.common.key_id.as_deref().unwrap_or("(no kid)")
            )
        })?;
    }
    Ok(set)
}

/// Verifies bearer tokens.
#[derive(Clone)]
pub struct JwtVerifier {
    keys: Keys,
    issuer: Option<String>,
    audience: Option<String>,
    leeway: u64,
    max_ttl: u64,
    jwks_refresh: std::time::Duration,
}

/// The claims Metis reads once a token is verified (`exp`, `nbf`, `iss` and `aud` are checked
/// by the verifier; `aud` may be one string or a list).
#[derive(Debug, Clone, Deserialize)]
pub struct Claims {
    /// The user.
    pub sub: String,
}

/// Default `AUTH_JWT_LEEWAY_S`.
pub const DEFAULT_LEEWAY_S: u64 = 30;
/// Default `AUTH_JWT_MAX_TTL_S`: a day.
pub const DEFAULT_MAX_TTL_S: u64 = 24 * 3600;
/// Default `AUTH_JWKS_REFRESH_S`.
pub const DEFAULT_JWKS_REFRESH_S: u64 = 300;

/// The authentication settings (see `common::settings`).
pub const SETTINGS: &[common::settings::Setting] = &[
    common::settings::Setting {
        name: "AUTH_MODE",
        meaning: "`jwt`: every run route needs a valid bearer token; `header`: the `x-user-id` header is trusted as sent (local experiments only; warns at start-up)",
        default: || common::settings::literal("jwt"),
    },
    common::settings::Setting {
        name: "AUTH_JWT_SECRET",
        meaning: "HS256 shared secret (32 bytes or more); exactly one key source is required in `jwt` mode",
        default: || "none".to_owned(),
    },
    common::settings::Setting {
        name: "AUTH_JWT_SECRET_FILE",
        meaning: "a file holding the HS256 secret",
        default: || "none".to_owned(),
    },
    common::settings::Setting {
        name: "AUTH_JWT_PUBLIC_KEY_FILE",
        meaning: "PEM public key: RSA (RS256/384/512, PS*) or EC (ES256/384)",
        default: || "none".to_owned(),
    },
    common::settings::Setting {
        name: "AUTH_JWKS_FILE",
        meaning: "a JWK set (JSON); the token's `kid` picks the key (a set of one needs none)",
        default: || "none".to_owned(),
    },
    common::settings::Setting {
        name: "AUTH_JWT_ISSUER",
        meaning: "when set, a token's `iss` must match",
        default: || "unset: any issuer".to_owned(),
    },
    common::settings::Setting {
        name: "AUTH_JWT_AUDIENCE",
        meaning: "when set, a token's `aud` must match; unset, a token naming an audience is refused",
        default: || "unset".to_owned(),
    },
    common::settings::Setting {
        name: "AUTH_JWT_LEEWAY_S",
        meaning: "clock skew allowed on `exp` / `nbf` / `iat`, in seconds (at most 3600)",
        default: || common::settings::literal(DEFAULT_LEEWAY_S),
    },
    common::settings::Setting {
        name: "AUTH_JWT_MAX_TTL_S",
        meaning: "the longest a token may live: `exp` at most this many seconds after its `iat` (or after now, without `iat`); a longer-lived token is refused, so a leaked one cannot be used for years",
        default: || common::settings::literal(DEFAULT_MAX_TTL_S),
    },
    common::settings::Setting {
        name: "AUTH_JWKS_REFRESH_S",
        meaning: "how often `AUTH_JWKS_FILE` is read again (key rotation without a restart); a token naming an unknown `kid` also re-reads it, at most once per 10 s",
        default: || common::settings::literal(DEFAULT_JWKS_REFRESH_S),
    },
];

/// The most clock skew `AUTH_JWT_LEEWAY_S` may allow.
pub const MAX_LEEWAY_S: u64 = 3600;

/// Why a request was not authenticated: the text of the 401.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Unauthenticated(pub String);

const VARS: &str =
    "AUTH_JWT_SECRET, AUTH_JWT_SECRET_FILE, AUTH_JWT_PUBLIC_KEY_FILE or AUTH_JWKS_FILE";

impl Auth {
    /// Reads the variables in the module docs through `get` (empty counts as unset);
    /// `base` resolves relative file paths.
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>, base: &Path) -> anyhow::Result<Self> {
        let get = |k: &str| get(k).filter(|v| !v.trim().is_empty());
        match get("AUTH_MODE").as_deref().map(str::trim) {
            None | Some("jwt") => {}
            Some("header") => return Ok(Self::TrustHeader),
            Some(other) => bail!("AUTH_MODE must be 'jwt' or 'header', got '{other}'"),
        }
        let file = |k: &str| get(k).map(|v| base.join(v.trim()));
        let sources = [
            "AUTH_JWT_SECRET",
            "AUTH_JWT_SECRET_FILE",
            "AUTH_JWT_PUBLIC_KEY_FILE",
            "AUTH_JWKS_FILE",
        ]
        .into_iter()
        .filter(|k| get(k).is_some())
        .collect::<Vec<_>>();
        let keys = match sources.as_slice() {
            [] => bail!(
                "AUTH_MODE=jwt (the default) needs a key: set one of {VARS} (or AUTH_MODE=header for local experiments)"
            ),
            [one] => match *one {
                "AUTH_JWT_SECRET" => secret_key(get(one).unwrap_or_default().as_bytes(), one)?,
                "AUTH_JWT_SECRET_FILE" => {
                    let path = file(one).unwrap_or_default();
                    let text = read(&path, one)?;
                    secret_key(text.trim_end_matches(['\n', '\r']).as_bytes(), one)?
                }
                "AUTH_JWT_PUBLIC_KEY_FILE" => {
                    let path = file(one).unwrap_or_default();
                    public_key(read(&path, one)?.as_bytes())
                        .with_context(|| format!("AUTH_JWT_PUBLIC_KEY_FILE {}", path.display()))?
                }
                _ => Keys::Set(std::sync::Arc::new(JwkSource::open(
                    file(one).unwrap_or_default(),
                )?)),
            },
            many => bail!("set only one of {VARS}; found {}", many.join(", ")),
        };
        let leeway = match get("AUTH_JWT_LEEWAY_S") {
            None => DEFAULT_LEEWAY_S,
            Some(v) => v
                .trim()
                .parse::<u64>()
                .ok()
                .filter(|s| *s <= MAX_LEEWAY_S)
                .with_context(|| {
                    format!(
                        "AUTH_JWT_LEEWAY_S must be whole seconds, at most {MAX_LEEWAY_S}, got '{v}'"
                    )
                })?,
        };
        let seconds = |name: &str, default: u64, max: u64| -> anyhow::Result<u64> {
            match get(name) {
                None => Ok(default),
                Some(v) => v
                    .trim()
                    .parse::<u64>()
                    .ok()
                    .filter(|s| (1..=max).contains(s))
                    .with_context(|| {
                        format!("{name} must be whole seconds, from 1 to {max}, got '{v}'")
                    }),
            }
        };
        let max_ttl = seconds("AUTH_JWT_MAX_TTL_S", DEFAULT_MAX_TTL_S, MAX_TOKEN_TTL_S)?;
        let jwks_refresh = seconds("AUTH_JWKS_REFRESH_S", DEFAULT_JWKS_REFRESH_S, 86_400)?;
        Ok(Self::Jwt(Box::new(JwtVerifier {
            keys,
            issuer: get("AUTH_JWT_ISSUER"),
            audience: get("AUTH_JWT_AUDIENCE"),
            leeway,
            max_ttl,
            jwks_refresh: std::time::Duration::from_secs(jwks_refresh),
        })))
    }
}

fn read(path: &PathBuf, var: &str) -> anyhow::Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("{var}: reading {}", path.display()))
}

fn secret_key(secret: &[u8], var: &str) -> anyhow::Result<Keys> {
    if secret.len() < 32 {
        bail!(
            "{var}: an HS256 secret must be at least 32 bytes, got {}",
            secret.len()
        );
    }
    Ok(Keys::Single(
        DecodingKey::from_secret(secret),
        vec![Algorithm::HS256],
        "HS256 shared secret",
    ))
}

fn public_key(pem: &[u8]) -> anyhow::Result<Keys> {
    if let Ok(key) = DecodingKey::from_rsa_pem(pem) {
        use Algorithm::*;
        return Ok(Keys::Single(
            key,
            vec![RS256, RS384, RS512, PS256, PS384, PS512],
            "RSA public key",
        ));
    }
    if let Ok(key) = DecodingKey::from_ec_pem(pem) {
        return Ok(Keys::Single(
            key,
            vec![Algorithm::ES256, Algorithm::ES384],
            "EC public key",
        ));
    }
    bail!("not a PEM RSA or EC public key")
}

impl JwtVerifier {
    /// The JWK set source, when the keys come from `AUTH_JWKS_FILE` (the API refreshes it
    /// every [`JwtVerifier::jwks_refresh`]).
    #[must_use]
    pub fn jwk_source(&self) -> Option<std::sync::Arc<JwkSource>> {
        match &self.keys {
            Keys::Set(source) => Some(source.clone()),
            Keys::Single(..) => None,
        }
    }

    /// `AUTH_JWKS_REFRESH_S`.
    #[must_use]
    pub const fn jwks_refresh(&self) -> std::time::Duration {
        self.jwks_refresh
    }

    /// `iat`, when present, is a time not in the future (beyond the leeway), and the token
    /// lives at most `AUTH_JWT_MAX_TTL_S` (`exp` was checked to be a number by the decoder).
    fn check_lifetime(&self, claims: &serde_json::Value) -> Result<(), Unauthenticated> {
        let bad = |m: String| Err(Unauthenticated(m));
        let now = jsonwebtoken::get_current_timestamp();
        let exp = claims
            .get("exp")
            .and_then(serde_json::Value::as_u64)
            .unwrap_or(0);
        let issued = match claims.get("iat") {
            None => now,
            Some(v) => match v.as_u64() {
                Some(iat) if iat > now + self.leeway => {
                    return bad(format!(
                        "the token claims to be issued in the future (iat is {} s from now)",
                        iat - now
                    ));
                }
                Some(iat) => iat,
                None => return bad("the token's 'iat' claim is malformed".to_owned()),
            },
        };
        let lifetime = exp.saturating_sub(issued);
        if lifetime > self.max_ttl + self.leeway {
            return bad(format!(
                "the token lives too long: exp is {lifetime} s after {}, and AUTH_JWT_MAX_TTL_S allows {} s",
                if claims.get("iat").is_some() {
                    "iat"
                } else {
                    "now"
                },
                self.max_ttl
            ));
        }
        Ok(())
    }

    fn describe(&self) -> String {
        match &self.keys {
            Keys::Single(_, _, what) => (*what).to_owned(),
            Keys::Set(source) => format!("JWK set of {} key(s)", source.snapshot().keys.len()),
        }
    }

    /// The user a token names, or why it is refused.
    pub fn verify(&self, token: &str) -> Result<Claims, Unauthenticated> {
        let bad = |m: String| Unauthenticated(m);
        let header = jsonwebtoken::decode_header(token)
            .map_err(|e| bad(format!("the bearer token is not a JWT ({})", reason(&e))))?;
        let (key, algorithms) = match &self.keys {
            Keys::Single(key, algs, _) => (key.clone(), algs.clone()),
            Keys::Set(source) => {
                let mut set = source.snapshot();
                if let Some(kid) = &header.kid
                    && set.find(kid).is_none()
                    && source.reload_if_due()
                {
                    // A key rotated in since the last read.
                    set = source.snapshot();
                }
                let jwk = match (&header.kid, set.keys.as_slice()) {
                    (Some(kid), _) => set.find(kid).ok_or_else(|| {
                        let shown: String = kid.chars().take(64).collect();
                        bad(format!("the token's key id '{shown}' is not known"))
                    })?,
                    (None, [only]) => only,
                    (None, _) => {
                        return Err(bad(
                            "the token has no key id (kid) and several keys are configured"
                                .to_owned(),
                        ));
                    }
                };
                let key = DecodingKey::from_jwk(jwk)
                    .map_err(|e| bad(format!("the token's key is unusable: {}", reason(&e))))?;
                let jwk = jwk.clone();
                // The key's own `alg`, when it names one, is the only algorithm it verifies.
                let algs = match jwk
                    .common
                    .key_algorithm
                    .and_then(|a| a.to_string().parse::<Algorithm>().ok())
                {
                    Some(alg) => vec![alg],
                    None => key.family().algorithms().to_vec(),
                };
                (key, algs)
            }
        };
        if !algorithms.contains(&header.alg) {
            return Err(bad(format!(
                "the token is signed with {:?}, which the configured key does not verify",
                header.alg
            )));
        }
        let mut v = Validation::new(header.alg);
        v.leeway = self.leeway;
        v.validate_nbf = true;
        v.set_required_spec_claims(&["exp", "sub"]);
        if let Some(iss) = &self.issuer {
            v.set_issuer(&[iss]);
            v.required_spec_claims.insert("iss".to_owned());
        }
        // Without AUTH_JWT_AUDIENCE a token that names an audience is refused (RFC 7519
        // 4.1.3: it was issued for someone else); with it, `aud` must name it.
        if let Some(aud) = &self.audience {
            v.set_audience(&[aud]);
            v.required_spec_claims.insert("aud".to_owned());
        }
        let data = jsonwebtoken::decode::<serde_json::Value>(token, &key, &v)
            .map_err(|e| bad(reason(&e)))?;
        self.check_lifetime(&data.claims)?;
        let claims: Claims = serde_json::from_value(data.claims).map_err(|_| {
            bad("the token's claims are not usable: 'sub' must be a string".to_owned())
        })?;
        crate::extract::check_user_id(&claims.sub)
            .map_err(|m| bad(format!("the token's sub is not a valid user id: {m}")))?;
        Ok(claims)
    }
}

/// A reason a client can act on.
fn reason(e: &jsonwebtoken::errors::Error) -> String {
    match e.kind() {
        ErrorKind::ExpiredSignature => "the token has expired (exp)".to_owned(),
        ErrorKind::ImmatureSignature => "the token is not valid yet (nbf)".to_owned(),
        ErrorKind::InvalidSignature => "the token's signature does not verify".to_owned(),
        ErrorKind::InvalidIssuer => "the token's issuer (iss) is not accepted".to_owned(),
        ErrorKind::InvalidAudience => "the token's audience (aud) is not accepted".to_owned(),
        ErrorKind::MissingRequiredClaim(c) => format!("the token has no '{c}' claim"),
        ErrorKind::InvalidClaimFormat(c) => format!("the token's '{c}' claim is malformed"),
        ErrorKind::InvalidAlgorithm => {
            "the token's algorithm does not match the configured key".to_owned()
        }
        ErrorKind::InvalidToken | ErrorKind::Base64(_) | ErrorKind::Utf8(_) => {
            "malformed token".to_owned()
        }
        // Not serde's message: it quotes the values it could not read, claims included.
        ErrorKind::Json(e) => format!(
            "malformed token: its claims are not the expected JSON ({:?} error at column {})",
            e.classify(),
            e.column()
        ),
        other => format!("invalid token ({other:?})"),
    }
}

/// The longest lifetime [`mint_hs256`] gives a token.
pub const MAX_TOKEN_TTL_S: u64 = 366 * 24 * 3600;

/// Mints an HS256 token (for `metis-api token`, tests and the harness).
pub fn mint_hs256(
    secret: &[u8],
    sub: &str,
    ttl: std::time::Duration,
    issuer: Option<&str>,
    audience: Option<&str>,
) -> anyhow::Result<String> {
    if ttl.as_secs() > MAX_TOKEN_TTL_S {
        bail!(
            "a token may live at most {MAX_TOKEN_TTL_S} s, not {} s",
            ttl.as_secs()
        );
    }
    let now = jsonwebtoken::get_current_timestamp();
    let mut claims = serde_json::json!({"sub": sub, "exp": now + ttl.as_secs(), "iat": now});
    if let Some(iss) = issuer {
        claims["iss"] = iss.into();
    }
    if let Some(aud) = audience {
        claims["aud"] = aud.into();
    }
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(secret),
    )
    .context("signing the token")
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "0123456789abcdef0123456789abcdef";

    fn verifier(extra: &[(&str, &str)]) -> JwtVerifier {
        let mut vars = vec![("AUTH_JWT_SECRET", SECRET)];
        vars.extend_from_slice(extra);
        let get = |k: &str| {
            vars.iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| (*v).to_owned())
        };
        match Auth::from_lookup(get, Path::new("/")).unwrap() {
            Auth::Jwt(v) => *v,
            Auth::TrustHeader => panic!("jwt expected"),
        }
    }

    fn token(claims: serde_json::Value, secret: &str) -> String {
        jsonwebtoken::encode(
            &jsonwebtoken::Header::new(Algorithm::HS256),
            &claims,
            &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
        )
        .unwrap()
    }

    fn now() -> u64 {
        jsonwebtoken::get_current_timestamp()
    }

    /// A token that lives for years is worth stealing: refused past `AUTH_JWT_MAX_TTL_S`,
    /// whether it says when it was issued or not; an `iat` in the future is refused too.
    #[test]
    fn lifetimes_are_bounded_and_iat_is_checked() {
        let v = verifier(&[]);
        let refused = |claims: serde_json::Value, want: &str| {
            let err = v.verify(&token(claims.clone(), SECRET)).unwrap_err().0;
            assert!(err.contains(want), "{claims}: {err} (wanted {want})");
        };
        let n = now();
        refused(
            serde_json::json!({"sub": "a", "exp": 32_503_680_000_u64, "iat": n}),
            "AUTH_JWT_MAX_TTL_S",
        );
        refused(
            serde_json::json!({"sub": "a", "exp": n + 2 * 86_400}),
            "after now",
        );
        refused(
            serde_json::json!({"sub": "a", "exp": n + 7200, "iat": n + 3600}),
            "issued in the future",
        );
        refused(
            serde_json::json!({"sub": "a", "exp": n + 60, "iat": "yesterday"}),
            "'iat'",
        );
        // Within the bound, and within the clock skew allowed.
        for ok in [
            serde_json::json!({"sub": "a", "exp": n + 86_400, "iat": n}),
            serde_json::json!({"sub": "a", "exp": n + 600, "iat": n + 20}),
            serde_json::json!({"sub": "a", "exp": n + 600}),
        ] {
            assert_eq!(
                v.verify(&token(ok.clone(), SECRET)).unwrap().sub,
                "a",
                "{ok}"
            );
        }
        let longer = verifier(&[("AUTH_JWT_MAX_TTL_S", "259200")]);
        let t = token(
            serde_json::json!({"sub": "a", "exp": n + 2 * 86_400}),
            SECRET,
        );
        assert!(longer.verify(&t).is_ok());
    }

    /// Keys rotate without a restart: a token naming a key id the set does not hold makes the
    /// verifier read the file again, but a flood of made-up ids reads it at most once per gap.
    #[test]
    fn a_rotated_jwk_set_is_picked_up_and_unknown_kids_are_rate_limited() {
        let fixtures = test_support::workspace_root().join("fixtures/auth");
        let full: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(fixtures.join("jwks.json")).unwrap())
                .unwrap();
        let only = |kid: &str| {
            let keys: Vec<serde_json::Value> = full["keys"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|k| k["kid"] == kid)
                .cloned()
                .collect();
            serde_json::json!({ "keys": keys }).to_string()
        };
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("jwks.json");
        std::fs::write(&file, only("test-rsa")).unwrap();
        let path = file.display().to_string();
        let get = |k: &str| (k == "AUTH_JWKS_FILE").then(|| path.clone());
        let Auth::Jwt(v) = Auth::from_lookup(get, Path::new("/")).unwrap() else {
            panic!("jwt expected")
        };
        let source = v.jwk_source().unwrap();
        let ec = jsonwebtoken::EncodingKey::from_ec_pem(
            &std::fs::read(fixtures.join("es256.key.pem")).unwrap(),
        )
        .unwrap();
        let sign = |kid: &str| {
            let mut h = jsonwebtoken::Header::new(Algorithm::ES256);
            h.kid = Some(kid.to_owned());
            jsonwebtoken::encode(
                &h,
                &serde_json::json!({"sub": "bob", "exp": now() + 600}),
                &ec,
            )
            .unwrap()
        };
        // Within the gap of the first read: an unknown kid reads nothing.
        let err = v.verify(&sign("test-ec")).unwrap_err().0;
        assert!(err.contains("not known"), "{err}");
        assert_eq!(source.loads(), 1);
        // The EC key is rotated in; past the gap, the next unknown kid reads the file again.
        std::fs::write(&file, only("test-ec")).unwrap();
        *source.last_load.lock().unwrap() -= UNKNOWN_KID_RELOAD_GAP;
        assert_eq!(v.verify(&sign("test-ec")).unwrap().sub, "bob");
        assert_eq!(source.loads(), 2);
        // Made-up kids right after: refused, no more reads.
        for i in 0..50 {
            assert!(v.verify(&sign(&format!("made-up-{i}"))).is_err());
        }
        assert_eq!(source.loads(), 2);
        // A broken file keeps the keys read before.
        std::fs::write(&file, "{not json").unwrap();
        source.reload();
        assert_eq!(v.verify(&sign("test-ec")).unwrap().sub, "bob");
    }

    #[test]
    fn a_valid_token_names_its_user() {
        let v = verifier(&[]);
        let t = mint_hs256(
            SECRET.as_bytes(),
            "alice",
            std::time::Duration::from_secs(60),
            None,
            None,
        )
        .unwrap();
        assert_eq!(v.verify(&t).unwrap().sub, "alice");
    }

    #[test]
    fn bad_tokens_are_refused_with_a_reason() {
        let v = verifier(&[]);
        let cases = [
            (
                token(
                    serde_json::json!({"sub": "alice", "exp": now() - 3600}),
                    SECRET,
                ),
                "expired",
            ),
            (
                token(
                    serde_json::json!({"sub": "alice", "exp": now() + 60}),
                    "another-secret-another-secret-xx",
                ),
                "signature",
            ),
            (
                token(
                    serde_json::json!({"sub": "alice", "exp": now() + 600, "nbf": now() + 300}),
                    SECRET,
                ),
                "not valid yet",
            ),
            (token(serde_json::json!({"sub": "alice"}), SECRET), "'exp'"),
            (
                token(serde_json::json!({"exp": now() + 60}), SECRET),
                "'sub'",
            ),
            (
                token(
                    serde_json::json!({"sub": "../etc", "exp": now() + 60}),
                    SECRET,
                ),
                "valid user id",
            ),
            ("not.a.jwt".to_owned(), "not a JWT"),
            (String::new(), "not a JWT"),
        ];
        for (t, want) in cases {
            let err = v.verify(&t).unwrap_err().0;
            assert!(err.contains(want), "{t}: {err} (wanted {want})");
        }
        // alg=none and an RSA-signed header against an HMAC key are refused.
        let claims = serde_json::json!({"sub": "alice", "exp": now() + 60});
        let none = test_support::metis::forged_token(
            &serde_json::json!({"alg": "none", "typ": "JWT"}),
            &claims,
            "",
        );
        assert!(v.verify(&none).is_err());
        let rs = test_support::metis::forged_token(
            &serde_json::json!({"alg": "RS256", "typ": "JWT"}),
            &claims,
            "c2ln",
        );
        let err = v.verify(&rs).unwrap_err().0;
        assert!(err.contains("RS256"), "{err}");
    }

    #[test]
    fn an_audience_list_works_and_an_unasked_audience_is_refused() {
        let v = verifier(&[("AUTH_JWT_AUDIENCE", "metis")]);
        let list = token(
            serde_json::json!({"sub": "a", "exp": now() + 60, "aud": ["other", "metis"]}),
            SECRET,
        );
        assert_eq!(v.verify(&list).unwrap().sub, "a");
        // Without AUTH_JWT_AUDIENCE, a token issued for some audience is someone else's.
        let plain = verifier(&[]);
        let err = plain
            .verify(&token(
                serde_json::json!({"sub": "a", "exp": now() + 60, "aud": "billing"}),
                SECRET,
            ))
            .unwrap_err()
            .0;
        assert!(err.contains("audience"), "{err}");
        // A bounded leeway, a bounded lifetime.
        let huge = Auth::from_lookup(
            |k| match k {
                "AUTH_JWT_SECRET" => Some(SECRET.to_owned()),
                "AUTH_JWT_LEEWAY_S" => Some(u64::MAX.to_string()),
                _ => None,
            },
            Path::new("/"),
        );
        assert!(huge.is_err());
        assert!(
            mint_hs256(
                SECRET.as_bytes(),
                "a",
                std::time::Duration::from_secs(u64::MAX),
                None,
                None
            )
            .is_err()
        );
    }

    #[test]
    fn issuer_and_audience_are_checked_when_configured() {
        let v = verifier(&[
            ("AUTH_JWT_ISSUER", "metis-idp"),
            ("AUTH_JWT_AUDIENCE", "metis"),
        ]);
        let ok = token(
            serde_json::json!({"sub": "a", "exp": now() + 60, "iss": "metis-idp", "aud": "metis"}),
            SECRET,
        );
        assert!(v.verify(&ok).is_ok());
        for (claims, want) in [
            (
                serde_json::json!({"sub": "a", "exp": now() + 60, "iss": "other", "aud": "metis"}),
                "issuer",
            ),
            (
                serde_json::json!({"sub": "a", "exp": now() + 60, "iss": "metis-idp", "aud": "x"}),
                "audience",
            ),
            (
                serde_json::json!({"sub": "a", "exp": now() + 60, "aud": "metis"}),
                "'iss'",
            ),
        ] {
            let err = v.verify(&token(claims, SECRET)).unwrap_err().0;
            assert!(err.contains(want), "{err} (wanted {want})");
        }
    }

    #[test]
    fn settings_errors_name_the_variable() {
        let none = Auth::from_lookup(|_| None, Path::new("/")).unwrap_err();
        assert!(format!("{none:#}").contains("AUTH_JWT_SECRET"), "{none:#}");
        let short = Auth::from_lookup(
            |k| (k == "AUTH_JWT_SECRET").then(|| "short".to_owned()),
            Path::new("/"),
        )
        .unwrap_err();
        assert!(format!("{short:#}").contains("32 bytes"), "{short:#}");
        let two = Auth::from_lookup(
            |k| match k {
                "AUTH_JWT_SECRET" => Some(SECRET.to_owned()),
                "AUTH_JWKS_FILE" => Some("/x.json".to_owned()),
                _ => None,
            },
            Path::new("/"),
        )
        .unwrap_err();
        assert!(format!("{two:#}").contains("only one"), "{two:#}");
        let mode = Auth::from_lookup(
            |k| (k == "AUTH_MODE").then(|| "none".to_owned()),
            Path::new("/"),
        )
        .unwrap_err();
        assert!(format!("{mode:#}").contains("AUTH_MODE"), "{mode:#}");
        let missing = Auth::from_lookup(
            |k| (k == "AUTH_JWKS_FILE").then(|| "/nonexistent/jwks.json".to_owned()),
            Path::new("/"),
        )
        .unwrap_err();
        assert!(
            format!("{missing:#}").contains("AUTH_JWKS_FILE"),
            "{missing:#}"
        );
        assert!(matches!(
            Auth::from_lookup(
                |k| (k == "AUTH_MODE").then(|| "header".to_owned()),
                Path::new("/")
            )
            .unwrap(),
            Auth::TrustHeader
        ));
    }
}
