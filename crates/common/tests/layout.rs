//! The streams `Infra::ensure` creates hold what `common::nats::LAYOUT` says, against a real
//! `nats-server -js`: the output stream refuses new lines when full and never evicts anyone's
//! old ones, within the limits the constants give.

use async_nats::jetstream::stream::DiscardPolicy;
use common::infra::{Infra, LOGS_MAX_BYTES, LOGS_MAX_MSG_SIZE};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_logs_stream_refuses_new_lines_when_full_and_evicts_nothing() -> anyhow::Result<()> {
    let logs = tempfile::tempdir()?;
    let nats = test_support::NatsServer::start(logs.path()).await?;
    let client = nats.connect().await?;
    Infra::ensure(client.clone()).await?;
    let js = async_nats::jetstream::new(client);
    let mut stream = js.get_stream(common::nats::LOGS_STREAM).await?;
    let config = stream.info().await?.config.clone();
    assert_eq!(
        config.discard,
        DiscardPolicy::New,
        "full: new lines refused"
    );
    assert_eq!(config.max_bytes, LOGS_MAX_BYTES);
    assert_eq!(config.max_message_size, LOGS_MAX_MSG_SIZE);
    assert_eq!(config.max_age, std::time::Duration::ZERO, "no age limit");
    assert_eq!(config.max_messages, -1, "no count limit that would evict");
    Ok(())
}
