//! Who is calling: `Authorization: Bearer <JWT>` verified against a configured key, set up by
//! the variables of [`SETTINGS`] (the book's settings page is generated from that table).
//!
//! Exactly one key source is required in `jwt` mode. A token must carry `exp` and `sub`;
//! `nbf` is checked when present; the algorithm must be one the key is for (an HMAC token is
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
    /// A JWK set.
    Set(JwkSet),
}

/// Verifies bearer tokens.
#[derive(Clone)]
pub struct JwtVerifier {
    keys: Keys,
    issuer: Option<String>,
    audience: Option<String>,
    leeway: u64,
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
        meaning: "clock skew allowed on `exp` / `nbf`, in seconds (at most 3600)",
        default: || common::settings::literal(DEFAULT_LEEWAY_S),
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
                _ => {
                    let path = file(one).unwrap_or_default();
                    let set: JwkSet =
                        serde_json::from_str(&read(&path, one)?).with_context(|| {
                            format!("AUTH_JWKS_FILE {}: not a JWK set", path.display())
                        })?;
                    if set.keys.is_empty() {
                        bail!("AUTH_JWKS_FILE {}: the set has no keys", path.display());
                    }
                    for k in &set.keys {
                        // A shared secret in a key *set* (often copied from a public jwks_uri)
                        // would let anyone who can read the set sign tokens.
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
                    Keys::Set(set)
                }
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
        Ok(Self::Jwt(Box::new(JwtVerifier {
            keys,
            issuer: get("AUTH_JWT_ISSUER"),
            audience: get("AUTH_JWT_AUDIENCE"),
            leeway,
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
    fn describe(&self) -> String {
        match &self.keys {
            Keys::Single(_, _, what) => (*what).to_owned(),
            Keys::Set(set) => format!("JWK set of {} key(s)", set.keys.len()),
        }
    }

    /// The user a token names, or why it is refused.
    pub fn verify(&self, token: &str) -> Result<Claims, Unauthenticated> {
        let bad = |m: String| Unauthenticated(m);
        let header = jsonwebtoken::decode_header(token)
            .map_err(|e| bad(format!("the bearer token is not a JWT ({})", reason(&e))))?;
        let (key, algorithms) = match &self.keys {
            Keys::Single(key, algs, _) => (key.clone(), algs.clone()),
            Keys::Set(set) => {
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
        let claims: Claims = serde_json::from_value(data.claims)
            .map_err(|e| bad(format!("the token's claims are not usable: {e}")))?;
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
