//! `/healthz`, `/readyz` and unknown routes on the health port (read from the `listening`
//! event, since the engine binds port 0).

use anyhow::Result;
use serde_json::{Value, json};
use test_support::wait_for;

use crate::support::{Bed, TIMEOUT};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_endpoints_answer_json() -> Result<()> {
    let bed = Bed::start("health").await?;
    let mut engine = bed
        .engine("engine", &bed.config("engine.yaml", |_| {})?)
        .await?;
    let base = format!("http://127.0.0.1:{}", engine.port);
    let http = reqwest::Client::new();

    let res = http.get(format!("{base}/healthz")).send().await?;
    assert_eq!(res.status(), 200);
    assert_eq!(res.json::<Value>().await?, json!({"status": "ok"}));

    let ready = wait_for("/readyz to answer 200", TIMEOUT, || {
        let http = http.clone();
        let url = format!("{base}/readyz");
        async move {
            let res = http.get(url).send().await.map_err(|e| e.to_string())?;
            let status = res.status();
            let body = res.json::<Value>().await.map_err(|e| e.to_string())?;
            if status == 200 {
                Ok(body)
            } else {
                Err(format!("{status} {body}"))
            }
        }
    })
    .await?;
    assert_eq!(ready, json!({"status": "ok"}));

    let res = http.get(format!("{base}/nope")).send().await?;
    assert_eq!(res.status(), 404);
    let body = res.json::<Value>().await?;
    assert_eq!(body["status_code"], 404, "{body}");
    assert!(
        body["msg"].as_str().is_some_and(|m| m.contains("/nope")),
        "{body}"
    );

    let listening = engine
        .events()
        .iter()
        .filter(|e| e["message"] == "listening")
        .count();
    assert_eq!(listening, 1, "exactly one listening event");
    engine.stop().await?;
    Ok(())
}
