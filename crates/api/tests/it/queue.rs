//! Runs while no engine runs: accepted and QUEUED, cancellable at once, executed when an
//! engine starts. Listing, paging, user isolation, service info, health and OpenAPI.

use std::time::Duration;

use serde_json::json;

use crate::support::{Stack, run_body};

const DEADLINE: Duration = Duration::from_secs(30);

#[tokio::test]
async fn queued_runs_wait_for_an_engine_and_cancel_at_once() -> anyhow::Result<()> {
    let mut stack = Stack::start("queued").await?;
    stack.register_config_only().await?;
    let c = stack.client.clone();

    let kept = c.create_run(&run_body("ok.sh")).await?;
    let cancelled = c.create_run(&run_body("ok.sh")).await?;
    assert_eq!(c.state(&kept).await?, "QUEUED");
    assert_eq!(stack.queued_messages().await?, 2);

    let r = c
        .post(&format!("/runs/{cancelled}/cancel"), &json!({}))
        .await?;
    assert_eq!(
        (r.status, r.body["state"].clone()),
        (200, json!("CANCELED")),
        "{}",
        r.body
    );
    let again = c
        .post(&format!("/runs/{cancelled}/cancel"), &json!({}))
        .await?;
    assert_eq!(
        again.status, 409,
        "cancelling a terminal run: {}",
        again.body
    );
    assert!(
        again.body["msg"].as_str().unwrap().contains("CANCELED"),
        "{}",
        again.body
    );

    stack.start_engine().await?;
    c.wait_for_state(&kept, &["COMPLETE"], DEADLINE).await?;
    // The cancelled run's message is consumed and skipped: it never starts.
    test_support::wait_for("the run stream to drain", DEADLINE, || async {
        match stack.queued_messages().await {
            Ok(0) => Ok(()),
            Ok(n) => Err(format!("{n} messages left")),
            Err(e) => Err(e.to_string()),
        }
    })
    .await?;
    let detail = c.get(&format!("/runs/{cancelled}")).await?;
    assert_eq!(detail.body["state"], "CANCELED", "{}", detail.body);
    assert!(
        detail.body.get("run_log").is_none(),
        "a run cancelled while queued never starts: {}",
        detail.body
    );
    assert!(detail.body.get("engine_id").is_none(), "{}", detail.body);
    Ok(())
}

#[tokio::test]
async fn listing_paging_isolation_and_service_info() -> anyhow::Result<()> {
    let stack = Stack::start("listing").await?;
    stack.register_config_only().await?;
    let alice = stack.client.clone();
    let bob = alice.as_user(Some("bob"));
    let anon = alice.as_user(None);

    let mut ids = Vec::new();
    for _ in 0..3 {
        ids.push(alice.create_run(&run_body("ok.sh")).await?);
    }
    let carol = alice.as_user(Some("carol"));
    let theirs = carol.create_run(&run_body("ok.sh")).await?;
    // Without a token nothing is read or written.
    let r = anon.post("/runs", &run_body("ok.sh")).await?;
    assert_eq!(r.status, 401, "{}", r.body);
    assert_eq!(anon.get("/runs").await?.status, 401);

    let page1 = alice.get("/runs?page_size=2").await?;
    let got: Vec<&str> = page1.body["runs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["run_id"].as_str().unwrap())
        .collect();
    assert_eq!(
        got,
        [ids[2].as_str(), ids[1].as_str()],
        "newest first: {}",
        page1.body
    );
    let token = page1.body["next_page_token"].as_str().expect("a next page");
    let page2 = alice
        .get(&format!("/runs?page_size=2&page_token={token}"))
        .await?;
    let got: Vec<&str> = page2.body["runs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["run_id"].as_str().unwrap())
        .collect();
    assert_eq!(got, [ids[0].as_str()], "{}", page2.body);
    assert!(page2.body.get("next_page_token").is_none());
    assert_eq!(page2.body["runs"][0]["tags"], json!({"suite": "api"}));

    let filtered = alice.get("/runs?state=complete").await?;
    assert_eq!(filtered.body["runs"], json!([]));
    // An unfinished state is read from the user's unfinished runs, newest first, paged.
    let queued = alice.get("/runs?state=QUEUED&page_size=2").await?;
    let got: Vec<&str> = queued.body["runs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["run_id"].as_str().unwrap())
        .collect();
    assert_eq!(got, [ids[2].as_str(), ids[1].as_str()], "{}", queued.body);
    let token = queued.body["next_page_token"]
        .as_str()
        .expect("a next page");
    let rest = alice
        .get(&format!(
            "/runs?state=QUEUED&page_size=2&page_token={token}"
        ))
        .await?;
    assert_eq!(
        rest.body["runs"][0]["run_id"],
        ids[0].as_str(),
        "{}",
        rest.body
    );
    assert_eq!(rest.body["runs"].as_array().map(Vec::len), Some(1));

    for path in [
        format!("/runs/{}", ids[0]),
        format!("/runs/{}/status", ids[0]),
        format!("/runs/{}/logs", ids[0]),
    ] {
        let r = bob.get(&path).await?;
        assert_eq!(
            r.status, 404,
            "bob must not see alice's run at {path}: {}",
            r.body
        );
    }
    let r = bob
        .post(&format!("/runs/{}/cancel", ids[0]), &json!({}))
        .await?;
    assert_eq!(r.status, 404, "bob must not cancel alice's run: {}", r.body);
    assert_eq!(carol.state(&theirs).await?, "QUEUED");
    assert_eq!(bob.get(&format!("/runs/{theirs}")).await?.status, 404);
    assert_eq!(bob.get("/runs").await?.body["runs"], json!([]));

    // Unfinished runs are counted by the reaper's passes (every 200 ms here), not per request.
    let info = test_support::wait_for(
        "/service-info to count the four queued runs",
        std::time::Duration::from_secs(10),
        || async {
            let info = alice
                .get("/service-info")
                .await
                .map_err(|e| e.to_string())?;
            if info.body["system_state_counts"] == json!({"QUEUED": 4}) {
                Ok(info)
            } else {
                Err(info.body["system_state_counts"].to_string())
            }
        },
    )
    .await?;
    assert_eq!(
        info.body["workflow_type_versions"]["SH"]["versions"],
        json!(["1"])
    );
    assert_eq!(info.body["engines"][0]["name"], "generic");
    assert_eq!(
        info.body["engines"][0]["instances"],
        json!([]),
        "no engine runs yet"
    );

    let detail = alice.get(&format!("/runs/{}", ids[0])).await?;
    assert_eq!(detail.body["request"]["workflow_engine"], "generic");
    assert_eq!(detail.body["state"], "QUEUED");
    let logs = alice.get(&format!("/runs/{}/logs", ids[0])).await?;
    assert_eq!(logs.body["lines"], json!([]));

    assert_eq!(alice.get("/healthz").await?.status, 200);
    assert_eq!(alice.get("/readyz").await?.status, 200);
    let doc = alice.get("/openapi.json").await?;
    for path in [
        "/runs",
        "/runs/{run_id}",
        "/runs/{run_id}/cancel",
        "/runs/{run_id}/logs",
        "/service-info",
    ] {
        assert!(
            doc.body["paths"].get(path).is_some(),
            "openapi lacks {path}"
        );
    }
    Ok(())
}
