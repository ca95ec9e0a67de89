//! Authentication, tried as an attacker would: absent, expired, not-yet-valid, foreign-signed,
//! malformed and algorithm-confused tokens are 401s that say why and change nothing; public
//! keys (RSA, EC, a JWK set) verify what their private halves signed; the header-trust mode
//! exists only when asked for, and says so; no token reaches the logs.

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use test_support::metis::{forged_token, mint_token, mint_token_with, now_s};
use test_support::workspace_root;

use crate::support::{Stack, run_body};

fn key_file(name: &str) -> String {
    workspace_root()
        .join("fixtures/auth")
        .join(name)
        .display()
        .to_string()
}

fn sign(alg: Algorithm, kid: Option<&str>, key: &EncodingKey, claims: &Value) -> String {
    let mut header = Header::new(alg);
    header.kid = kid.map(str::to_owned);
    jsonwebtoken::encode(&header, claims, key).expect("signing")
}

fn pem(name: &str) -> Vec<u8> {
    std::fs::read(key_file(name)).expect("a fixture key")
}

#[track_caller]
fn unauthorized(what: &str, reply: &test_support::metis::Reply, needle: &str) {
    assert_eq!(reply.status, 401, "{what}: {}", reply.body);
    let msg = reply.body["msg"].as_str().unwrap_or_default();
    assert!(
        msg.contains(needle),
        "{what}: '{msg}' should mention '{needle}'"
    );
    assert_eq!(reply.body["status_code"], 401, "{what}");
    let challenge = reply
        .headers
        .get("www-authenticate")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    assert!(
        challenge.starts_with("Bearer ") && challenge.contains("invalid_token"),
        "{what}: WWW-Authenticate was '{challenge}'"
    );
}

#[tokio::test]
async fn bad_tokens_are_401_with_a_reason_and_change_nothing() -> anyhow::Result<()> {
    let stack = Stack::start("auth-bad-tokens").await?;
    stack.register_config_only().await?;
    let alice = &stack.client;
    let secret = test_support::metis::jwt_secret();
    let foreign = "not-the-api-secret-not-the-api-secret";
    let body = run_body("ok.sh");
    let cases: Vec<(&str, String, &str)> = vec![
        ("no header", String::new(), "missing Authorization"),
        (
            "wrong scheme",
            "Basic YWxpY2U6eA==".to_owned(),
            "must be Bearer",
        ),
        ("empty token", "Bearer ".to_owned(), "empty"),
        ("not a JWT", "Bearer abc.def".to_owned(), "not a JWT"),
        (
            "expired",
            format!(
                "Bearer {}",
                mint_token_with("alice", secret, json!({"exp": now_s() - 600}))
            ),
            "expired",
        ),
        (
            "not valid yet",
            format!(
                "Bearer {}",
                mint_token_with(
                    "alice",
                    secret,
                    json!({"exp": now_s() + 3600, "nbf": now_s() + 600})
                )
            ),
            "not valid yet",
        ),
        (
            "signed by someone else",
            format!(
                "Bearer {}",
                mint_token_with("alice", foreign, json!({"exp": now_s() + 600}))
            ),
            "signature",
        ),
        (
            "no exp",
            format!("Bearer {}", mint_token_with("alice", secret, json!({}))),
            "'exp'",
        ),
        (
            "unsigned (alg none)",
            format!(
                "Bearer {}",
                forged_token(
                    &json!({"alg": "none", "typ": "JWT"}),
                    &json!({"sub": "alice", "exp": now_s() + 600}),
                    ""
                )
            ),
            "",
        ),
    ];
    for (what, header, needle) in &cases {
        let client = if header.is_empty() {
            alice.as_user(None)
        } else {
            alice.with_authorization(header)
        };
        unauthorized(what, &client.post("/runs", &body).await?, needle);
        unauthorized(what, &client.get("/runs").await?, needle);
        unauthorized(
            what,
            &client
                .get("/runs/01890a5d-ac96-774b-bcce-b302099a8057")
                .await?,
            needle,
        );
    }
    // Nothing was stored for anyone.
    let infra = stack.infra().await?;
    for user in ["alice", "anonymous"] {
        assert_eq!(infra.user_runs(user).await?, Vec::new(), "{user}");
    }
    assert_eq!(stack.queued_messages().await?, 0);

    // The public routes need no token.
    let anon = alice.as_user(None);
    for path in ["/healthz", "/readyz", "/service-info", "/openapi.json"] {
        assert_eq!(anon.get(path).await?.status, 200, "{path}");
    }
    // A good token works, and the user is its sub, whatever x-user-id says.
    let r = alice
        .post_with("/runs", &body, &[("x-user-id", "mallory")])
        .await?;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(infra.user_runs("alice").await?.len(), 1);
    assert_eq!(infra.user_runs("mallory").await?, Vec::new());

    // No token, good or bad, is written to the API's log.
    let log = std::fs::read_to_string(stack.logs.join("metis-api.log")).unwrap_or_default();
    assert!(
        !log.is_empty(),
        "the API log is in {}",
        stack.logs.display()
    );
    let good = mint_token("alice");
    let good_sig = good.rsplit('.').next().unwrap_or_default();
    assert!(!log.contains(good_sig));
    for (_, header, _) in &cases {
        if let Some(sig) = header.rsplit('.').next().filter(|s| s.len() > 20) {
            assert!(!log.contains(sig), "a token signature is in the log");
        }
    }
    Ok(())
}

#[tokio::test]
async fn public_keys_and_jwk_sets_verify_their_own_tokens_only() -> anyhow::Result<()> {
    let claims =
        |sub: &str| json!({"sub": sub, "exp": now_s() + 600, "iss": "idp", "aud": "metis"});
    let rsa = EncodingKey::from_rsa_pem(&pem("rs256.key.pem"))?;
    let ec = EncodingKey::from_ec_pem(&pem("es256.key.pem"))?;

    // An RSA public key, with issuer and audience required.
    let stack = Stack::start_with(
        "auth-rsa",
        &[
            ("AUTH_JWT_PUBLIC_KEY_FILE", key_file("rs256.pub.pem")),
            ("AUTH_JWT_ISSUER", "idp".to_owned()),
            ("AUTH_JWT_AUDIENCE", "metis".to_owned()),
        ],
    )
    .await?;
    let c = stack.client.as_user(None);
    let ok = sign(Algorithm::RS256, None, &rsa, &claims("alice"));
    assert_eq!(
        c.with_authorization(&format!("Bearer {ok}"))
            .get("/runs")
            .await?
            .status,
        200
    );
    // The public key used as an HMAC secret (algorithm confusion) is refused.
    let confused = sign(
        Algorithm::HS256,
        None,
        &EncodingKey::from_secret(&pem("rs256.pub.pem")),
        &claims("alice"),
    );
    unauthorized(
        "HS256 signed with the public key",
        &c.with_authorization(&format!("Bearer {confused}"))
            .get("/runs")
            .await?,
        "HS256",
    );
    let wrong_aud = sign(
        Algorithm::RS256,
        None,
        &rsa,
        &json!({"sub": "alice", "exp": now_s() + 600, "iss": "idp", "aud": "other"}),
    );
    unauthorized(
        "foreign audience",
        &c.with_authorization(&format!("Bearer {wrong_aud}"))
            .get("/runs")
            .await?,
        "audience",
    );
    let ec_token = sign(Algorithm::ES256, None, &ec, &claims("alice"));
    unauthorized(
        "an EC token against the RSA key",
        &c.with_authorization(&format!("Bearer {ec_token}"))
            .get("/runs")
            .await?,
        "ES256",
    );
    drop(stack);

    // A JWK set: the kid picks the key.
    let stack =
        Stack::start_with("auth-jwks", &[("AUTH_JWKS_FILE", key_file("jwks.json"))]).await?;
    let c = stack.client.as_user(None);
    let plain = |sub: &str| json!({"sub": sub, "exp": now_s() + 600});
    for (alg, kid, key) in [
        (Algorithm::RS256, "test-rsa", &rsa),
        (Algorithm::ES256, "test-ec", &ec),
    ] {
        let t = sign(alg, Some(kid), key, &plain("bob"));
        let r = c
            .with_authorization(&format!("Bearer {t}"))
            .get("/runs")
            .await?;
        assert_eq!(r.status, 200, "{kid}: {}", r.body);
    }
    let unknown = sign(Algorithm::RS256, Some("rotated-away"), &rsa, &plain("bob"));
    unauthorized(
        "unknown kid",
        &c.with_authorization(&format!("Bearer {unknown}"))
            .get("/runs")
            .await?,
        "rotated-away",
    );
    let swapped = sign(Algorithm::ES256, Some("test-rsa"), &ec, &plain("bob"));
    unauthorized(
        "an EC token naming the RSA key",
        &c.with_authorization(&format!("Bearer {swapped}"))
            .get("/runs")
            .await?,
        "ES256",
    );
    let no_kid = sign(Algorithm::RS256, None, &rsa, &plain("bob"));
    unauthorized(
        "no kid with two keys",
        &c.with_authorization(&format!("Bearer {no_kid}"))
            .get("/runs")
            .await?,
        "kid",
    );
    Ok(())
}

#[tokio::test]
async fn header_trust_is_opt_in_and_warns() -> anyhow::Result<()> {
    let stack = Stack::start_with("auth-header", &[("AUTH_MODE", "header".to_owned())]).await?;
    stack.register_config_only().await?;
    let c = stack.client.as_user(None);
    let r = c
        .post_with("/runs", &run_body("ok.sh"), &[("x-user-id", "dave")])
        .await?;
    assert_eq!(r.status, 200, "{}", r.body);
    let infra = stack.infra().await?;
    assert_eq!(infra.user_runs("dave").await?.len(), 1);
    let r = c
        .post_with("/runs", &run_body("ok.sh"), &[("x-user-id", "../etc")])
        .await?;
    assert_eq!(r.status, 400, "{}", r.body);
    let log = std::fs::read_to_string(stack.logs.join("metis-api.log"))?;
    assert!(
        log.lines()
            .any(|l| l.contains("\"WARN\"") && l.contains("AUTH_MODE=header")),
        "a start-up warning in:\n{log}"
    );
    Ok(())
}

#[tokio::test]
async fn the_api_refuses_to_start_without_a_key() -> anyhow::Result<()> {
    let logs = test_support::log_dir("api-auth-no-key");
    let nats = test_support::NatsServer::start(&logs).await?;
    let mut cmd = test_support::clean_command(test_support::bin("metis-api")?);
    cmd.envs(nats.endpoint().env())
        .env("APP_PORT", "0")
        .kill_on_drop(true);
    let out = tokio::time::timeout(std::time::Duration::from_secs(30), cmd.output()).await??;
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(text.contains("AUTH_JWT_SECRET"), "{text}");

    // `metis-api token` signs with the same secret the API verifies.
    let mut cmd = test_support::clean_command(test_support::bin("metis-api")?);
    cmd.args(["token", "erin"])
        .env("AUTH_JWT_SECRET", test_support::metis::jwt_secret());
    let out = cmd.output().await?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let token = String::from_utf8(out.stdout)?;
    let stack = Stack::start("auth-cli-token").await?;
    let r = stack
        .client
        .with_authorization(&format!("Bearer {}", token.trim()))
        .get("/runs")
        .await?;
    assert_eq!(r.status, 200, "{}", r.body);
    Ok(())
}

/// Every `/runs` route the API's own OpenAPI document lists, called without a token, is a
/// 401 and changes nothing: the run a route names stays as it was (a cancel without a caller
/// cancels nothing), and nothing new is stored.
#[tokio::test]
async fn every_runs_route_needs_a_verified_caller() -> anyhow::Result<()> {
    let stack = Stack::start("auth-every-route").await?;
    stack.register_config_only().await?;
    let alice = &stack.client;
    let created = alice.post("/runs", &run_body("ok.sh")).await?;
    assert_eq!(created.status, 200, "{}", created.body);
    let run = created.body["run_id"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let anon = alice.as_user(None);
    let doc = anon.get("/openapi.json").await?.body;
    let mut called = Vec::new();
    for (path, item) in doc["paths"].as_object().into_iter().flatten() {
        if !path.starts_with("/runs") {
            continue;
        }
        let concrete = path.replace("{run_id}", &run);
        for method in item.as_object().into_iter().flatten().map(|(m, _)| m) {
            let reply = match method.as_str() {
                "get" => anon.get(&concrete).await?,
                "post" => anon.post(&concrete, &run_body("ok.sh")).await?,
                other => panic!("{path}: a {other} route this test does not know how to call"),
            };
            unauthorized(&format!("{method} {path}"), &reply, "missing Authorization");
            called.push(format!("{method} {path}"));
        }
    }
    assert!(
        called.len() >= 5,
        "the document lists every /runs route: {called:?}"
    );
    assert_eq!(alice.state(&run).await?, "QUEUED", "the run is untouched");
    let infra = stack.infra().await?;
    assert_eq!(
        infra.user_runs("alice").await?.len(),
        1,
        "nothing new stored"
    );
    assert_eq!(infra.user_runs("anonymous").await?, Vec::new());
    Ok(())
}
